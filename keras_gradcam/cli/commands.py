"""The commands: ``explain``, ``layers``, ``methods``, ``evaluate`` and ``audit``.

Each ``run_*`` takes the parsed arguments, prints its results to stdout and returns the exit
status; a mistake raises :class:`~keras_gradcam.cli.errors.CLIError`. The work is the library's:
method names through :func:`keras_gradcam.methods.registry.get_method`, layers through
:func:`keras_gradcam.core.layers.resolve_layer`, ``--target`` through
:func:`keras_gradcam.core.targets.resolve_targets` and :func:`~keras_gradcam.core.targets.check_range`,
files through :meth:`Explanation.save <keras_gradcam.core.explanation.Explanation.save>`, tables
through :func:`keras_gradcam.evaluate.format_table`.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import math
import os
import sys
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from ..audit import audit
from ..core.capture import Capture
from ..core.explanation import Explanation
from ..core.layers import list_layers, resolve_layer
from ..core.progress import Progbar
from ..core.targets import check_range, resolve_targets
from ..evaluate import METRICS, SLOW_METRICS, evaluate, format_table
from ..io import MANIFEST, write_png
from ..methods.registry import METHODS, display_name, get_method
from ..viz.overlay import colormap_table, overlay
from .errors import (
    EXIT_ERROR,
    EXIT_IMAGE,
    EXIT_LAYER,
    EXIT_OK,
    EXIT_TARGET,
    EXIT_USAGE,
    CLIError,
    check_exists,
    short_message,
)
from .files import check_out_folder, load_model, out_folder, read_class_names, stems
from .images import (
    IMAGE_EXTENSIONS,
    find_masks,
    image_input,
    load_images,
    mask_folders,
    preprocess,
    read_image,
    resolve_preprocessing,
    resolve_size,
)

__all__ = ["run_audit", "run_evaluate", "run_explain", "run_layers", "run_methods", "target_classes"]


# -- arguments the library checks -----------------------------------------------------------------
def _method(name: str):
    try:
        return get_method(name)
    except (ValueError, TypeError) as e:
        raise CLIError(f"--method: {e} `keras-gradcam methods` lists them.", EXIT_USAGE) from None


def _resolve_layer(model, layer, **tokens):
    try:
        return resolve_layer(model, layer, **tokens)
    except (ValueError, TypeError) as e:
        flags = " On the command line: --grid ROWSxCOLS and --prefix-tokens N (explain)." if "grid=" in str(e) else ""
        raise CLIError(f"--layer: {e}{flags} Run `keras-gradcam layers MODEL` for the full list.", EXIT_LAYER) from None


def _num_classes(model, output) -> int | None:
    try:
        return Capture(model, [], output=output).num_classes()
    except ValueError:  # a bad --output is reported where it is used
        return None


def target_classes(values: Sequence[int] | None, n: int, num_classes: int | None) -> np.ndarray | None:
    """``--target`` as the core reads ``targets=``: one class for all ``n`` images, or one per image.

    Parameters
    ----------
    values : sequence of int or None
        The classes given after ``--target`` (None: each image's top-1 class).
    n : int
        The number of images.
    num_classes : int or None
        The classes of the explained output (None: unknown, checked later by the explainer).

    Returns
    -------
    ndarray of shape (n,), int32, or None
        From :func:`keras_gradcam.core.targets.resolve_targets`, range-checked by
        :func:`~keras_gradcam.core.targets.check_range`.

    Raises
    ------
    CLIError
        Exit status 7 for a class the model does not have, or a count that is neither 1 nor ``n``.
    """
    if values is None:
        return None
    try:
        classes = resolve_targets(values[0] if len(values) == 1 else list(values), n)
        check_range(classes, num_classes)
    except IndexError:  # the core's out-of-range class (a ClassIndexError is one too): say which, and the range
        bad = next(v for v in values if v < 0 or (num_classes is not None and v >= num_classes))
        valid = f"0 .. {num_classes - 1}" if num_classes is not None else ">= 0"
        raise CLIError(f"--target {bad} is not a class of the model; valid classes are {valid}.", EXIT_TARGET) from None
    except ValueError:  # neither one class nor one per image
        raise CLIError(f"--target takes one class for all images or one per image ({n}); got {len(values)}.", EXIT_TARGET) from None
    return classes


def _output_arg(output):
    if output is None:
        return None
    return int(output) if str(output).isdigit() else output


def _progress_enabled(mode: str) -> bool:
    """``--progress``: always, never, or auto (when stderr is a terminal)."""
    return mode == "always" or (mode == "auto" and bool(getattr(sys.stderr, "isatty", lambda: False)()))


def _takes_verbose(cls) -> bool:
    """Whether the explainer class has a ``verbose=`` option (the per-pass bars of Score-CAM & co.)."""
    return any("verbose" in inspect.signature(c.__init__).parameters for c in cls.__mro__ if "__init__" in vars(c))


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A Markdown table, by :func:`keras_gradcam.evaluate.format_table` (numbers right-aligned)."""
    return format_table([dict(zip(header, row)) for row in rows], list(header), digits=3)


# -- explain --------------------------------------------------------------------------------------
def run_explain(args: argparse.Namespace) -> int:
    """``keras-gradcam explain``: explain the images, write overlays, maps and a manifest, print a table."""
    cls = _method(args.method)
    try:
        colormap_table(args.colormap)
    except (ValueError, TypeError) as e:
        raise CLIError(f"--colormap: {e}", EXIT_USAGE) from None
    check_out_folder(args.out)
    for path in args.images:
        check_exists(path, "image")
    class_names = read_class_names(args.class_names)
    model = load_model(args.model)
    tokens = {k: v for k, v in (("grid", args.grid), ("prefix_tokens", args.prefix_tokens)) if v is not None}
    info = _resolve_layer(model, args.layer, **tokens)
    output = _output_arg(args.output)
    targets = target_classes(args.target, len(args.images), _num_classes(model, output))
    originals, raw, x, size, mode = load_images(model, args.images, args.size, args.preprocess)

    options = {"output": output} if output is not None else {}
    options.update({k: True for k in ("aug_smooth", "eigen_smooth") if getattr(args, k, False)})
    if getattr(args, "no_relu", False):
        options["relu"] = False
    if _takes_verbose(cls):
        options["verbose"] = 0  # the command shows its own bar, per image
    options.update(tokens)  # --grid, --prefix-tokens
    try:
        explainer = cls(model, info.path, batch_size=args.batch_size, **options)
    except (ValueError, TypeError) as e:
        raise CLIError(f"cannot set up {cls.name}: {e}", EXIT_ERROR) from None
    n = len(x)
    names = stems(args.images)
    results = [*(f"{s}_{kind}.png" for s in names for kind in ("overlay", "heatmap")), MANIFEST, MANIFEST + ".partial",
               "heatmaps.npy", "layer_heatmaps.npy"]
    with out_folder(args.out, results):  # made and tried before the first image is explained
        exp = _explain_images(explainer, x, targets, args)
        try:
            exp.save(args.out, images=raw, names=names, class_names=class_names, alpha=args.alpha,
                     colormap=args.colormap)
            if args.overlay_size == "original":
                _write_original_size_overlays(exp, originals, names, args)
        except OSError as e:
            raise CLIError(f"cannot write the results to --out {args.out!r}: {e.strerror or e}.", EXIT_ERROR) from None

    def name(k):
        if k is None:
            return "-"
        return class_names[k] if class_names is not None and 0 <= k < len(class_names) else str(k)

    print(f"{display_name(exp.method)} at layer {exp.layer!r}; {n} image(s) at {size[0]}x{size[1]}, "
          f"preprocess {mode!r}")
    rows = []
    for i, path in enumerate(args.images):
        target = None if exp.targets is None else int(exp.targets[i])
        pred = None if exp.predictions is None else int(exp.predictions[i])
        overlay_file = os.path.join(args.out, f"{names[i]}_overlay.png")
        rows.append([path, name(target), float(exp.scores[i]), name(pred), overlay_file])
    print(_table(["image", "explained", "score", "predicted", "overlay"], rows))
    where = "each image's own size" if args.overlay_size == "original" else f"{size[0]}x{size[1]}"
    print(f"wrote {n} overlay(s) (at {where}), heatmaps.npy and manifest.json to {args.out}")
    return EXIT_OK


def _explain_images(explainer, x, targets, args) -> Explanation:
    """The explanation of all images, ``--batch-size`` at a time, with a bar per image on stderr."""
    n = len(x)
    show = _progress_enabled(args.progress)
    if show:
        print(f"explaining {n} image(s) with {explainer.name}", file=sys.stderr, flush=True)
    progress = Progbar(n, verbose=1 if show else 0, unit_name="image")
    parts = []
    for start in range(0, n, args.batch_size):
        stop = min(n, start + args.batch_size)
        try:
            parts.append(explainer(x[start:stop], None if targets is None else targets[start:stop]))
        except IndexError as e:
            raise CLIError(f"--target: {e}", EXIT_TARGET) from None
        except ValueError as e:
            raise CLIError(f"explaining {args.images[start]!r} failed: {e}", EXIT_ERROR) from None
        progress.update(stop)
    return Explanation.concatenate(parts) if len(parts) > 1 else parts[0]


def _write_original_size_overlays(exp, originals, names, args) -> None:
    """Replace the model-size overlays :meth:`Explanation.save` wrote with ones at each photo's size.

    The heatmap (at the model's input size) is resized to the photo, bilinearly, by
    :func:`keras_gradcam.viz.overlay.overlay`; the photo itself is not resized.
    """
    for image, heat, stem in zip(originals, exp.heatmaps, names):
        write_png(os.path.join(args.out, f"{stem}_overlay.png"),
                  overlay(image, heat, alpha=args.alpha, colormap=args.colormap))


# -- layers, methods ------------------------------------------------------------------------------
def run_layers(args: argparse.Namespace) -> int:
    """``keras-gradcam layers``: the layers ``--layer`` accepts, the default marked with ``*``."""
    model = load_model(args.model)
    infos = list_layers(model, spatial_only=not args.all)
    spatial = [i for i in infos if i.spatial]
    try:
        default = resolve_layer(model, None).path
    except ValueError as e:
        default, why = None, str(e)
    rows = [
        [("* " if i.path == default else "  ") + i.path, type(i.layer).__name__,
         "-" if i.shape is None else str(tuple(i.shape)), "yes" if i.spatial else "no", _grid_text(i)]
        for i in infos
    ]
    print(f"model {model.name!r}: {len(spatial)} layer(s) with a spatial output" + (" (* = default)" if default else ""))
    if rows:
        print(_table(["path", "type", "output shape", "spatial", "token grid"], rows))
    if default is None:
        if spatial:  # layers to name, but no default (a token grid the model does not tell)
            print(f"no default layer: {why} Name one with --layer.")
            return EXIT_OK
        raise CLIError(
            "the model has no layer with a spatial output (rank >= 3), so there is nothing Grad-CAM can explain.",
            EXIT_LAYER,
        )
    return EXIT_OK


def _grid_text(info) -> str:
    """A token layer's patch grid and prefix tokens (``"4x4 +1"``), ``"?"`` where it cannot be told, else ``"-"``."""
    if info.tokens:
        rows, cols = info.grid
        return f"{rows}x{cols}" + (f" +{info.prefix_tokens}" if info.prefix_tokens else "")
    return "?" if info.token_error else "-"


def run_methods(args: argparse.Namespace) -> int:
    """``keras-gradcam methods``: the registered method names, with the first line of their docstrings."""
    rows = []
    for name, cls in METHODS.items():
        doc = (inspect.getdoc(cls) or "").strip().splitlines()
        rows.append([name, display_name(name), doc[0] if doc else ""])
    print(_table(["name", "method", "summary"], rows))
    return EXIT_OK


# -- evaluate -------------------------------------------------------------------------------------
def run_evaluate(args: argparse.Namespace) -> int:
    """``keras-gradcam evaluate``: :func:`keras_gradcam.evaluate.evaluate` on image files, as a table."""
    methods = [_method(m).name for m in args.methods]
    if args.metrics is None:  # the fast ones: seconds on a few small images
        metrics = "fast"
    elif args.metrics == ["all"]:
        metrics = "all"
    else:
        metrics = args.metrics
        unknown = [m for m in args.metrics if m not in METRICS]
        if unknown:
            raise CLIError(f"--metrics: unknown {unknown}; choose from {list(METRICS)}, or 'all'.", EXIT_USAGE)
    for path in args.images:
        check_exists(path, "image")
    model = load_model(args.model)
    info = _resolve_layer(model, args.layer)
    targets = target_classes(args.target, len(args.images), _num_classes(model, None))
    _, _, x, size, mode = load_images(model, args.images, args.size, args.preprocess)
    masks = find_masks(args.masks, args.images, size) if args.masks is not None else None
    optional = {
        "layer": info.path if args.layer is not None else None,
        "targets": targets,
        "metrics": metrics,
        "tolerance": args.tolerance,
    }
    kwargs = {k: v for k, v in optional.items() if v is not None}
    try:
        rows = evaluate(model, x, methods=methods, masks=masks, batch_size=args.batch_size,
                        verbose=_progress_enabled(args.progress), **kwargs)
    except IndexError as e:
        raise CLIError(f"--target: {e}", EXIT_TARGET) from None
    except (ValueError, TypeError) as e:
        raise CLIError(f"evaluation failed: {e}", EXIT_ERROR) from None
    where = f"layer {info.path!r}" if args.layer is not None else "each method's default layer"
    print(f"{len(methods)} method(s) on {len(x)} image(s) at {size[0]}x{size[1]}, {where}, preprocess {mode!r}")
    rows, notes = _annotate_undefined(rows)
    print(format_table(rows))
    for note in notes:
        print(note)
    if metrics == "fast":
        print(f"note: {', '.join(SLOW_METRICS)} are not computed by default (slow: minutes on a large model); "
              "pass --metrics all, or name them with --metrics.")
    return EXIT_OK


#: Why a column of :func:`keras_gradcam.evaluate.evaluate` can be NaN (undefined), for the notes.
_NAN_REASONS: dict[str, str] = {
    "average_drop": "the model's confidence in the explained class is 0 on every image, so the relative drop "
    "(Y - O) / Y is undefined",
    "occlusion_correlation": "Spearman's rank correlation is undefined on every image: the map is constant "
    "(e.g. all zero) or no occlusion window changed the model's score",
    "randomization_similarity": "the model has no layer with weights to randomise",
    "localization_iou": "no box could be formed (the masks are empty or the maps all zero)",
    "localization_accuracy": "no box could be formed (the masks are empty or the maps all zero)",
}
_NONE_REASONS: dict[str, str] = {
    "win_rate": "win_rate compares methods with each other: pass two or more with --methods",
}


def _annotate_undefined(rows):
    """Rows with each NaN cell written ``nan (k)``, and the notes ``(k) ...`` that say why.

    One note per column with a NaN, naming the methods; a column left out (``-``) for every
    method gets a note too when there is a known reason (``win_rate`` with one method).
    """
    rows = [dict(row) for row in rows]
    notes, marks = [], {}
    columns = list(dict.fromkeys(k for row in rows for k in row))
    for column in columns:
        bad = [row for row in rows if isinstance(row.get(column), float) and math.isnan(row[column])]
        if bad:
            k = marks.setdefault(column, len(marks) + 1)
            for row in bad:
                row[column] = f"nan ({k})"
            who = ", ".join(str(row.get("method")) for row in bad)
            why = _NAN_REASONS.get(column, "the metric is undefined on these images (e.g. all-zero maps or empty masks)")
            notes.append(f"({k}) {column} is undefined (nan) for {who}: {why}.")
        elif column in _NONE_REASONS and rows and all(row.get(column) is None for row in rows):
            notes.append(f"note: {column} is not computed (-): {_NONE_REASONS[column]}.")
    return rows, notes


# -- audit ----------------------------------------------------------------------------------------
def _folder_classes(folder: str, folders: list[str], class_names: list[str] | None, num_classes: int | None,
                    names_file: str | None) -> tuple[list[str], list[int]]:
    """The class names of the audit and the class index of each of ``DATA_DIR``'s folders (by name).

    With ``--class-names``, each folder is the class of its name (a folder that names no class is
    refused); without, the folders are the classes in alphabetical order, which only holds when
    there is one folder per class of the model.
    """
    if class_names is None:
        if num_classes is not None and len(folders) != num_classes:
            raise CLIError(
                f"DATA_DIR {folder!r} has {len(folders)} class folder(s) {folders}, but the model has {num_classes} "
                "classes, so the folders cannot be matched to the classes by their alphabetical order. Pass "
                f"--class-names FILE with the model's {num_classes} class names in order (one per line); each folder "
                "is then the class of its name.", EXIT_USAGE,
            )
        return folders, list(range(len(folders)))
    if num_classes is not None and len(class_names) != num_classes:
        raise CLIError(
            f"--class-names {names_file!r} has {len(class_names)} name(s) but the model has {num_classes} classes; "
            "give one name per class, in the order of the model's outputs.", EXIT_USAGE,
        )
    twice = sorted({n for n in class_names if class_names.count(n) > 1})
    if twice:
        raise CLIError(f"--class-names {names_file!r} names {twice} more than once; give each class once.", EXIT_USAGE)
    unknown = [f for f in folders if f not in class_names]
    if unknown:
        raise CLIError(
            f"DATA_DIR {folder!r} has folder(s) {unknown} that name no class of --class-names {class_names}. Each "
            f"subfolder is the class of its name (DATA_DIR's folders: {folders}); rename the folder, or fix the "
            "names file.", EXIT_USAGE,
        )
    return list(class_names), [class_names.index(f) for f in folders]


def class_folders(model, folder: str, size, mode: str, batch_size: int, masks: str | None = None,
                  class_names: list[str] | None = None, names_file: str | None = None) -> tuple:
    """``DATA_DIR`` (one subfolder per class) as a batched ``(images, labels)`` dataset for ``model``.

    Read by ``keras.utils.image_dataset_from_directory`` (not shuffled, resized bilinearly to the
    model's size), then scaled by :func:`~keras_gradcam.cli.images.preprocess` as
    ``--preprocess`` says. Each folder is matched to a class by its name: with ``class_names``
    (``--class-names``), the folder ``cat`` holds class ``class_names.index("cat")``, and
    ``DATA_DIR`` may hold only some of the classes; without, the folders are the model's classes
    in alphabetical order (Keras' convention), one folder per class. With ``masks`` (a folder of
    mask images laid out like ``DATA_DIR``, see :func:`~keras_gradcam.cli.images.mask_folders`)
    each batch is ``(images, labels, masks)``.

    Returns
    -------
    (tf.data.Dataset, list of str, (int, int), str, list of str)
        The dataset, the class names, the image size, the preprocessing used and the image files
        in the dataset's order.

    Raises
    ------
    CLIError
        A folder that names no class of ``class_names``, ``class_names`` of another length than
        the model's classes, or (without ``class_names``) a number of folders other than the
        model's classes: exit status 2.
    """
    check_exists(folder, "data folder")
    if not os.path.isdir(folder):
        raise CLIError(f"DATA_DIR must be a folder with one subfolder of images per class; {folder!r} is a file.", EXIT_USAGE)
    hw, channels = image_input(model)
    size = resolve_size(hw, size)
    mode = resolve_preprocessing(model, mode)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # its "Found N files" line is progress, not a result
            ds = keras.utils.image_dataset_from_directory(
                folder, labels="inferred", label_mode="int", color_mode="rgb" if channels == 3 else "grayscale",
                image_size=size, batch_size=batch_size, shuffle=False)
    except ValueError as e:
        raise CLIError(f"cannot read DATA_DIR {folder!r}: {e} It must hold one subfolder of images per class "
                       "(DATA_DIR/cat/1.png, DATA_DIR/dog/2.png, ...).", EXIT_IMAGE) from None
    names, index = _folder_classes(folder, list(ds.class_names), class_names, _num_classes(model, None), names_file)
    classes = tf.constant(index, tf.int32)

    def scale(x, y):
        out = tf.numpy_function(lambda a: preprocess(a, mode), [x], tf.float32)
        out.set_shape(x.shape)
        return out, tf.gather(classes, y)  # folder index (alphabetical) -> class index (by name)

    scaled = ds.map(scale)
    if masks is not None:
        objects = mask_folders(masks, folder, ds.file_paths, size, batch_size)
        scaled = tf.data.Dataset.zip((scaled, objects)).map(lambda xy, m: (xy[0], xy[1], m))
    return scaled, names, size, mode, list(ds.file_paths)


def _unreadable_file(images: Sequence[str], masks: str | None, channels: int) -> None:
    """Raise the :class:`CLIError` of the first image (or mask) that cannot be decoded, naming it.

    Called once the dataset's reader failed, which does not say which file it was reading.
    """
    for path in images:
        read_image(path, channels)
    if masks is not None:
        for root, _, files in sorted(os.walk(masks)):
            for name in sorted(files):
                if name.lower().endswith(IMAGE_EXTENSIONS):
                    try:
                        read_image(os.path.join(root, name), 1)
                    except CLIError as e:
                        raise CLIError(str(e).replace("cannot read image", "cannot read mask", 1), e.code) from None


def run_audit(args: argparse.Namespace) -> int:
    """``keras-gradcam audit``: :func:`keras_gradcam.audit` on a folder of class folders; table and report."""
    cls = _method(args.method)
    check_out_folder(args.out)
    model = load_model(args.model)
    info = _resolve_layer(model, args.layer)
    given = read_class_names(args.class_names)
    ds, names, size, mode, files = class_folders(model, args.data, args.size, args.preprocess, args.batch_size,
                                                 args.masks, given, args.class_names)
    with out_folder(args.out, ("summary.json", "index.html")):  # made and tried before the first image is audited
        try:
            report = audit(model, ds, class_names=names, method=cls, layer=info.path, batch_size=args.batch_size,
                           fill=args.fill, verbose=1 if _progress_enabled(args.progress) else 0)
        except (ValueError, TypeError) as e:
            raise CLIError(f"the audit failed: {e} (classes: {names})", EXIT_ERROR) from None
        except tf.errors.OpError as e:  # the dataset's reader failed on a file; find which
            _unreadable_file(files, args.masks, image_input(model)[1])
            raise CLIError(f"cannot read an image or mask: {short_message(e)}", EXIT_IMAGE) from None
        print(report)
        try:
            page = report.save(args.out)
        except OSError as e:
            raise CLIError(f"cannot write the report to --out {args.out!r}: {e.strerror or e}.", EXIT_ERROR) from None
    print(f"\n{sum(c.images for c in report.classes)} image(s) at {size[0]}x{size[1]}, preprocess {mode!r}; "
          f"wrote {page} and {os.path.join(args.out, 'summary.json')}")
    return EXIT_OK
