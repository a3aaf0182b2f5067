"""The ``keras-gradcam`` command: explain a saved model's predictions on image files.

::

    keras-gradcam explain MODEL IMAGE... [--method gradcam++] [--layer NAME] [--target N ...]
                          [--size 224] [--preprocess auto] [--out DIR] [--overlay-size original]
    keras-gradcam layers MODEL          # the layers --layer accepts, nested paths included
    keras-gradcam methods               # the method names --method accepts
    keras-gradcam evaluate MODEL IMAGE... [--methods gradcam gradcam++] [--masks DIR]

``MODEL`` is a Keras 3 ``.keras`` file (or a legacy ``.h5``); images are PNG, JPEG, GIF or BMP
files. Errors go to stderr with a distinct exit code (see :data:`EXIT_CODES` and ``--help``);
results go to stdout; the preprocessing used and a progress bar (``keras.utils.Progbar``) go to
stderr.
"""

from __future__ import annotations

import argparse
import inspect
import math
import os
import sys
from typing import Sequence

import numpy as np

__all__ = ["main", "build_parser", "EXIT_CODES", "PREPROCESSING", "CLIError"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_MISSING = 3
EXIT_IMAGE = 4
EXIT_MODEL = 5
EXIT_LAYER = 6
EXIT_TARGET = 7

#: Exit status -> meaning, as listed at the end of ``keras-gradcam --help``.
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_ERROR: "any other error (the message says what happened)",
    EXIT_USAGE: "bad command line: unknown option, method or preprocessing, a malformed value, --out or --masks not a folder",
    EXIT_MISSING: "a file or folder that does not exist (model, image or mask)",
    EXIT_IMAGE: "an image (or mask) that cannot be read or decoded",
    EXIT_MODEL: "a model file that cannot be loaded as a Keras model",
    EXIT_LAYER: "--layer names no spatial layer of the model (see `keras-gradcam layers MODEL`)",
    EXIT_TARGET: "--target is not a class of the model, or not one per image",
}

_EPILOG = "exit codes:\n" + "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES.items())

#: ``--preprocess`` choices: what each does to RGB pixel values in [0, 255].
PREPROCESSING: dict[str, str] = {
    "auto": "none when the model starts with its own Rescaling or Normalization layer, else unit (the default)",
    "none": "pixels as they are, floats in [0, 255] (a model with its own Rescaling layer)",
    "unit": "x / 255, in [0, 1]",
    "tf": "x / 127.5 - 1, in [-1, 1] (Keras Applications MobileNet, Inception, EfficientNetV2 ...)",
    "imagenet-caffe": "RGB -> BGR, minus the ImageNet mean per channel (Keras Applications ResNet50, VGG)",
    "imagenet-torch": "x / 255, minus the ImageNet mean, divided by its std (Keras Applications DenseNet, torchvision)",
}

_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp")


class CLIError(Exception):
    """An error for the person at the terminal: a message and the exit status to end with.

    Parameters
    ----------
    message : str
        What went wrong and how to fix it, printed to stderr after ``keras-gradcam: error:``.
    code : int, default=1
        The exit status, one of :data:`EXIT_CODES`.
    """

    def __init__(self, message: str, code: int = EXIT_ERROR):
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors raised as :class:`CLIError` (so ``main`` returns, never exits)."""

    def error(self, message):  # noqa: D102 - argparse's hook
        raise CLIError(f"{message}\n{self.format_usage().rstrip()}\nRun `{self.prog} --help` for the options.", EXIT_USAGE)


# -- the parser ---------------------------------------------------------------------------------
def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("×", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive size like 224 or 224x160 (height x width); got {text!r}")
    return values[0], values[1]


def _unit(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1]; got {text!r}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1; got {text!r}")
    return value


def _add_image_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=_size, default=None, metavar="HxW",
                   help="resize images to this size, e.g. 224 or 224x160 (default: the model's input size, else 224)")
    p.add_argument("--preprocess", choices=list(PREPROCESSING), default="auto",
                   help="how pixels in [0, 255] are scaled for the model: "
                   + "; ".join(f"{k}: {v}" for k, v in PREPROCESSING.items()))
    p.add_argument("--layer", default=None, metavar="NAME",
                   help="layer to explain, a name or an outer/inner path (default: the last feature map with located evidence, see docs/layers.md); "
                   "`keras-gradcam layers MODEL` lists them")
    p.add_argument("--batch-size", type=_positive, default=16, metavar="N", help="images per pass (default: 16)")


def build_parser() -> argparse.ArgumentParser:
    """The ``keras-gradcam`` argument parser, with its subcommands.

    Returns
    -------
    argparse.ArgumentParser
        Subcommands ``explain``, ``layers``, ``methods`` and ``evaluate``; usage errors raise
        :class:`CLIError` with exit status 2 instead of exiting.
    """
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="keras-gradcam",
        description="Grad-CAM family explanations of a saved Keras model's predictions on image files.",
        epilog=_EPILOG,
        formatter_class=fmt,
    )
    parser.add_argument("--version", action="store_true", help="print the versions of keras-gradcam, Keras and TensorFlow")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser(
        "explain", help="explain image files, write overlays and maps, print a summary table",
        description=(
            "Explain each image with one method: writes <image>_overlay.png, <image>_heatmap.png, heatmaps.npy "
            "and manifest.json to --out, and prints a table of the explained class and score per image."
        ),
        epilog=_EPILOG + "\n\nexample:\n  keras-gradcam explain model.keras cat.jpg dog.png --method gradcam++ --out cams",
        formatter_class=fmt,
    )
    p.add_argument("model", metavar="MODEL", help="a saved Keras model (.keras, or legacy .h5)")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files (PNG, JPEG, GIF, BMP)")
    p.add_argument("--method", default="gradcam++", help="method name (default: gradcam++); `keras-gradcam methods` lists them")
    p.add_argument("--target", type=int, nargs="+", default=None, metavar="N",
                   help="class index to explain: one for all images, or one per image (default: each image's top-1 class)")
    p.add_argument("--output", default=None, metavar="NAME_OR_INDEX",
                   help="for a multi-output model: the output the class targets refer to")
    p.add_argument("--out", default="gradcam_out", metavar="DIR",
                   help="folder for the results, created if missing (default: gradcam_out)")
    p.add_argument("--overlay-size", choices=("original", "model"), default="original",
                   help="size of the overlay PNGs: original, each image's own size (the map is resized to the "
                   "photo); model, the model's input size, as the heatmaps (default: original)")
    p.add_argument("--class-names", default=None, metavar="FILE", help="text file with one class name per line, for the table")
    p.add_argument("--alpha", type=_unit, default=0.4, help="heatmap opacity in the overlays, in [0, 1] (default: 0.4)")
    p.add_argument("--colormap", default="jet", help="Matplotlib colormap of the heatmaps (default: jet)")
    p.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                   help="progress bar on stderr: auto shows it when stderr is a terminal (default: auto)")
    _add_image_options(p)
    p.set_defaults(handler=_cmd_explain)

    p = sub.add_parser(
        "layers", help="list the layers --layer accepts (nested models included)",
        description="List the layers of MODEL that can be explained: those with a spatial output, in execution "
        "order, as the paths --layer accepts. The default layer (the last one) is marked with *.",
        epilog=_EPILOG, formatter_class=fmt,
    )
    p.add_argument("model", metavar="MODEL", help="a saved Keras model (.keras, or legacy .h5)")
    p.add_argument("--all", action="store_true", help="also list layers without a spatial output")
    p.set_defaults(handler=_cmd_layers)

    p = sub.add_parser(
        "methods", help="list the method names --method accepts",
        description="List the registered methods (keras_gradcam.METHODS) with a one-line description.",
        epilog=_EPILOG, formatter_class=fmt,
    )
    p.set_defaults(handler=_cmd_methods)

    p = sub.add_parser(
        "evaluate", help="compare methods on image files with the library's metrics, print a table",
        description="Explain the images with each method and score the maps with keras_gradcam.evaluate "
        "(faithfulness metrics; localisation metrics too when --masks is given).",
        epilog=_EPILOG, formatter_class=fmt,
    )
    p.add_argument("model", metavar="MODEL", help="a saved Keras model (.keras, or legacy .h5)")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files (PNG, JPEG, GIF, BMP)")
    p.add_argument("--methods", nargs="+", default=["gradcam", "gradcam++"], metavar="METHOD",
                   help="methods to compare (default: gradcam gradcam++)")
    p.add_argument("--masks", default=None, metavar="DIR",
                   help="folder of object masks named like the images (cat.jpg -> DIR/cat.png); nonzero = object; "
                   "adds the localisation metrics")
    p.add_argument("--metrics", nargs="+", default=None, metavar="METRIC",
                   help="metrics to compute (default: all that the inputs allow); see keras_gradcam.evaluate.METRICS")
    p.add_argument("--target", type=int, nargs="+", default=None, metavar="N",
                   help="class to explain and score: one for all images or one per image (default: top-1)")
    p.add_argument("--tolerance", type=float, default=None, metavar="PX",
                   help="pointing-game tolerance in pixels (default: the library's, 15 px for 224-500 px images)")
    p.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                   help="progress messages on stderr: auto shows them when stderr is a terminal (default: auto)")
    _add_image_options(p)
    p.set_defaults(handler=_cmd_evaluate)
    return parser


# -- entry point --------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Run ``keras-gradcam`` with ``argv`` (default ``sys.argv[1:]``) and return the exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name.

    Returns
    -------
    int
        0 on success, else a code from :data:`EXIT_CODES`; the message is on stderr.

    Examples
    --------
    >>> from keras_gradcam.cli import main
    >>> main(["methods"])                                     # doctest: +SKIP
    >>> main(["explain", "model.keras", "cat.png", "--out", "cams"])   # doctest: +SKIP
    0
    """
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
        if args.version:
            return _print_versions()
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return int(args.handler(args) or EXIT_OK)
    except CLIError as e:
        print(f"keras-gradcam: error: {e}", file=sys.stderr)
        return e.code
    except OSError as e:  # the file system refused (permissions, a full disk, ...): no traceback
        where = f" {e.filename!r}" if getattr(e, "filename", None) else ""
        print(f"keras-gradcam: error: cannot access{where}: {e.strerror or e}.", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("keras-gradcam: interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:  # --help and argparse's own exits
        return int(e.code or 0) if isinstance(e.code, int) or e.code is None else EXIT_USAGE


def _print_versions() -> int:
    import keras
    import tensorflow as tf

    import keras_gradcam

    print(f"keras-gradcam {keras_gradcam.__version__}, Keras {keras.__version__}, TensorFlow {tf.__version__}")
    return EXIT_OK


# -- loading ------------------------------------------------------------------------------------
def _short(error: BaseException, limit: int = 240) -> str:
    """The first sentence of an exception's message, without TensorFlow's op decorations."""
    import re

    text = str(getattr(error, "message", None) or error).strip() or type(error).__name__
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)
    text = re.sub(r"\s*\[Op:\w+\].*$", "", text, flags=re.S)
    text = text.splitlines()[0].strip()
    cut = text.find(". ", 0, limit)
    if cut > 0:
        text = text[: cut + 1]
    elif len(text) > limit:
        text = text[:limit].rstrip() + "..."
    return text if text.endswith((".", "...")) else text + "."


def _check_exists(path: str, what: str) -> None:
    if not os.path.exists(path):
        raise CLIError(f"{what} {path!r} does not exist (working directory: {os.getcwd()}).", EXIT_MISSING)


def load_model(path: str):
    """Load a ``.keras`` or ``.h5`` model for explaining (not compiled).

    Parameters
    ----------
    path : str
        The model file.

    Returns
    -------
    keras.Model

    Raises
    ------
    CLIError
        Exit status 3 when the file does not exist, 5 when it cannot be loaded as a Keras model.
    """
    _check_exists(path, "model file")
    if os.path.isdir(path):
        raise CLIError(
            f"{path!r} is a folder; keras-gradcam needs a model file saved with model.save('model.keras') "
            "(a TensorFlow SavedModel folder cannot be explained: it has no Keras layers).", EXIT_MODEL,
        )
    import keras

    if os.path.splitext(path)[1].lower() not in (".keras", ".h5", ".hdf5"):
        raise CLIError(
            f"cannot load {path!r}: MODEL must be a Keras file ending in .keras (or a legacy .h5), saved with "
            "model.save('model.keras').", EXIT_MODEL,
        )
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - any failure becomes one message and exit status
        raise CLIError(
            f"cannot load {path!r} as a Keras model: {type(e).__name__}: {_short(e)} Save it with Keras 3 "
            "(model.save('model.keras')); a model with custom layers must be explained from Python, where they "
            "can be registered (keras.saving.register_keras_serializable).", EXIT_MODEL,
        ) from e
    if not isinstance(model, keras.Model):
        raise CLIError(f"{path!r} holds a {type(model).__name__}, not a keras.Model.", EXIT_MODEL)
    return model


def _image_input(model) -> tuple[tuple[int | None, int | None], int]:
    """(height, width) and channels of a single-input image model."""
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) != 1:
        raise CLIError(
            f"the command line explains single-input image models; this model has {len(inputs)} inputs. "
            "Use the Python API: kg.explain(model, [x1, x2]).", EXIT_ERROR,
        )
    shape = tuple(inputs[0].shape)
    if len(shape) != 4 or shape[-1] not in (1, 3, None):
        raise CLIError(
            f"the model's input has shape {shape}; the command line needs an image input (batch, height, width, 1 or 3) "
            "in channels-last order. Use the Python API for other inputs.", EXIT_ERROR,
        )
    return (shape[1], shape[2]), int(shape[3] or 3)


def _resolve_size(model_hw, size) -> tuple[int, int]:
    h, w = model_hw
    if size is None:
        return (h or 224, w or 224)
    if (h is not None and size[0] != h) or (w is not None and size[1] != w):
        raise CLIError(
            f"--size {size[0]}x{size[1]} does not fit the model, which takes {h}x{w} images; leave --size out.", EXIT_USAGE
        )
    return size


def read_image(path: str, channels: int = 3) -> np.ndarray:
    """Read an image file at its own size: uint8 ``(height, width, channels)``.

    Parameters
    ----------
    path : str
        A PNG, JPEG, GIF (first frame) or BMP file.
    channels : {1, 3}, default=3
        Grayscale or RGB.

    Returns
    -------
    ndarray of shape (height, width, channels), uint8

    Raises
    ------
    CLIError
        Exit status 3 when the file does not exist, 4 when it cannot be read or decoded.
    """
    import tensorflow as tf

    _check_exists(path, "image")
    if os.path.isdir(path):
        raise CLIError(f"{path!r} is a folder, not an image file; pass the files, e.g. {path.rstrip('/')}/*.png.", EXIT_IMAGE)
    try:
        data = tf.io.read_file(path)
        image = tf.io.decode_image(data, channels=channels, expand_animations=False, dtype=tf.uint8)
    except (tf.errors.OpError, ValueError) as e:
        raise CLIError(
            f"cannot read image {path!r}: {_short(e)} Supported formats: PNG, JPEG, GIF, BMP.", EXIT_IMAGE
        ) from None
    return image.numpy()


def _resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear, antialiased resize of a uint8 image, rounded back to uint8."""
    import tensorflow as tf

    if tuple(image.shape[:2]) == tuple(size):
        return image
    out = tf.image.resize(tf.cast(image, tf.float32), size, method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8).numpy()


def load_image(path: str, size: tuple[int, int], channels: int = 3) -> np.ndarray:
    """Read an image file and resize it: uint8 ``(height, width, channels)``.

    Parameters
    ----------
    path : str
        A PNG, JPEG, GIF (first frame) or BMP file.
    size : (int, int)
        Height and width to resize to (bilinear, antialiased).
    channels : {1, 3}, default=3
        Grayscale or RGB.

    Returns
    -------
    ndarray of shape (height, width, channels), uint8

    Raises
    ------
    CLIError
        Exit status 3 when the file does not exist, 4 when it cannot be decoded.
    """
    return _resize_image(read_image(path, channels), size)


def preprocess(images: np.ndarray, mode: str) -> np.ndarray:
    """Scale uint8 RGB (or grayscale) images for a model, as ``--preprocess`` says.

    Parameters
    ----------
    images : ndarray of shape (n, height, width, channels), uint8
    mode : str
        A key of :data:`PREPROCESSING` other than ``"auto"`` (resolve that first with
        :func:`auto_preprocessing`). ``tf``, ``imagenet-caffe`` and ``imagenet-torch`` are
        ``keras.applications.imagenet_utils.preprocess_input`` with modes ``tf``, ``caffe`` and
        ``torch``.

    Returns
    -------
    ndarray, float32, same shape

    Raises
    ------
    CLIError
        An unknown mode (``auto`` included), or an ImageNet mode with images that do not have 3
        channels.

    Examples
    --------
    >>> import numpy as np
    >>> from keras_gradcam.cli import preprocess
    >>> preprocess(np.full((1, 1, 1, 3), 255, np.uint8), "tf").ravel().tolist()
    [1.0, 1.0, 1.0]
    """
    x = images.astype(np.float32)
    if mode == "none":
        return x
    if mode == "unit":
        return x / 255.0
    keras_modes = {"tf": "tf", "imagenet-caffe": "caffe", "imagenet-torch": "torch"}
    if mode in keras_modes:
        from keras.applications import imagenet_utils

        if mode != "tf" and x.shape[-1] != 3:
            raise CLIError(f"--preprocess {mode} needs RGB images for a 3-channel model; this model takes {x.shape[-1]}.", EXIT_USAGE)
        return np.asarray(imagenet_utils.preprocess_input(x, data_format="channels_last", mode=keras_modes[mode]), np.float32)
    choices = [m for m in PREPROCESSING if m != "auto"]
    raise CLIError(f"unknown preprocessing {mode!r}; choose one of {choices}.", EXIT_USAGE)


_PASS_THROUGH = ("InputLayer", "Resizing", "CenterCrop")  # layers before a Rescaling that keep the pixel range


def _leading_scaling_layer(model):
    """The model's first layer after its input when that is a ``Rescaling`` or ``Normalization`` layer.

    A nested model in first place (a ``keras.applications`` backbone used as a layer, a
    ``Sequential`` preprocessing block) is looked into; ``Resizing``, ``CenterCrop`` and the
    ``Random*`` augmentation layers (identities at inference) are skipped. None otherwise.
    """
    import keras

    for layer in model.layers:
        name = type(layer).__name__
        if name in _PASS_THROUGH or name.startswith("Random"):
            continue
        if isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization)):
            return layer
        if isinstance(layer, keras.Model):
            return _leading_scaling_layer(layer)
        return None
    return None


def auto_preprocessing(model) -> tuple[str, str]:
    """What ``--preprocess auto`` means for ``model``: ``(mode, reason)``.

    Parameters
    ----------
    model : keras.Model

    Returns
    -------
    (str, str)
        ``"none"`` when the model starts with its own ``Rescaling`` layer, or a ``Normalization``
        layer whose mean is above 1.5 somewhere (adapted on [0, 255] pixels); ``"unit"`` for a
        ``Normalization`` layer adapted on [0, 1] pixels and for every other model. The reason
        is a phrase for the message printed to stderr.
    """
    layer = _leading_scaling_layer(model)
    if layer is None:
        return "unit", "x / 255, as the model does not start with its own Rescaling or Normalization layer"
    kind = type(layer).__name__
    if kind == "Normalization":
        mean = getattr(layer, "mean", None)
        try:
            peak = float(np.max(np.abs(np.asarray(mean, np.float64)))) if mean is not None else None
        except (TypeError, ValueError):
            peak = None
        if peak is not None and peak <= 1.5:
            return "unit", f"x / 255, as the model starts with a Normalization layer ({layer.name!r}) adapted on [0, 1] pixels"
    return "none", f"pixels in [0, 255] as they are, as the model starts with its own {kind} layer ({layer.name!r})"


def _resolve_preprocessing(model, mode: str) -> str:
    """``--preprocess`` with ``auto`` resolved; the choice and its reason are printed to stderr."""
    if mode == "auto":
        mode, why = auto_preprocessing(model)
        text = f"{why} (--preprocess auto; pass --preprocess to choose another)"
    else:
        text = PREPROCESSING[mode]
    print(f"keras-gradcam: preprocess {mode!r}: {text}", file=sys.stderr)
    return mode


def _stems(paths: Sequence[str]) -> list[str]:
    """File stems for the outputs, made unique (``cat``, ``cat_2``) when two images share a name."""
    out, seen = [], {}
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0] or "image"
        count = seen.get(stem, 0) + 1
        seen[stem] = count
        out.append(stem if count == 1 else f"{stem}_{count}")
    return out


def _read_class_names(path: str | None) -> list[str] | None:
    if path is None:
        return None
    _check_exists(path, "class-names file")
    if os.path.isdir(path):
        raise CLIError(f"--class-names {path!r} is a folder; pass a text file with one class name per line.", EXIT_USAGE)
    try:
        with open(path, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    except UnicodeDecodeError:
        raise CLIError(
            f"--class-names {path!r} is not UTF-8 text; pass a text file with one class name per line.", EXIT_USAGE
        ) from None
    except OSError as e:
        raise CLIError(f"cannot read --class-names {path!r}: {e.strerror or e}.", EXIT_ERROR) from None


def _check_out_folder(path: str) -> None:
    """Fail early, before any work, when ``--out`` cannot become a folder (the folder is made later)."""
    if not path.strip():
        raise CLIError("--out is empty; pass the folder for the results, e.g. --out cams.", EXIT_USAGE)
    path = os.path.abspath(path)
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise CLIError(
                f"--out {path!r} is a file; --out must name a folder (created if missing), e.g. --out {path}_cams.",
                EXIT_USAGE,
            )
        existing = path
    else:
        existing = os.path.dirname(path)
        while existing and not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if existing and not os.path.isdir(existing):
            raise CLIError(
                f"--out {path!r} cannot be created: {existing!r} is a file, not a folder. Pick a folder path.", EXIT_USAGE
            )
    if existing and not os.access(existing, os.W_OK | os.X_OK):
        raise CLIError(f"--out {path!r}: no permission to write in {existing!r}; pick another folder.", EXIT_ERROR)


def _method(name: str):
    from .methods.registry import get_method

    try:
        return get_method(name)
    except (ValueError, TypeError) as e:
        raise CLIError(f"--method: {e} `keras-gradcam methods` lists them.", EXIT_USAGE) from None


def _resolve_layer(model, layer):
    from .core.layers import resolve_layer

    try:
        return resolve_layer(model, layer)
    except (ValueError, TypeError) as e:
        raise CLIError(f"--layer: {e} Run `keras-gradcam layers MODEL` for the full list.", EXIT_LAYER) from None


def _num_classes(model, output) -> int | None:
    from .core.capture import Capture

    try:
        return Capture(model, [], output=output).num_classes()
    except ValueError:  # a bad --output is reported where it is used
        return None


def _targets(values, n: int, classes: int | None):
    if values is None:
        return None
    if len(values) not in (1, n):
        raise CLIError(f"--target takes one class for all images or one per image ({n}); got {len(values)}.", EXIT_TARGET)
    bad = [v for v in values if v < 0 or (classes is not None and v >= classes)]
    if bad:
        valid = f"0 .. {classes - 1}" if classes is not None else ">= 0"
        raise CLIError(f"--target {bad[0]} is not a class of the model; valid classes are {valid}.", EXIT_TARGET)
    return values[0] if len(values) == 1 else list(values)


def _output_arg(output):
    if output is None:
        return None
    return int(output) if str(output).isdigit() else output


# -- progress -----------------------------------------------------------------------------------
def _progress_enabled(mode: str) -> bool:
    """``--progress``: always, never, or auto (when stderr is a terminal)."""
    return mode == "always" or (mode == "auto" and bool(getattr(sys.stderr, "isatty", lambda: False)()))


# -- commands -----------------------------------------------------------------------------------
def _load_inputs(args, model, paths):
    """Decode the images: (originals, uint8 images at the model's size, preprocessed float32, size, mode)."""
    hw, channels = _image_input(model)
    size = _resolve_size(hw, args.size)
    mode = _resolve_preprocessing(model, args.preprocess)
    originals = [read_image(p, channels) for p in paths]
    raw = np.stack([_resize_image(image, size) for image in originals])
    return originals, raw, preprocess(raw, mode), size, mode


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A Markdown table, by :func:`keras_gradcam.evaluate.format_table` (numbers right-aligned)."""
    from .evaluate import format_table

    return format_table([dict(zip(header, row)) for row in rows], list(header), digits=3)


def _cmd_explain(args) -> int:
    cls = _method(args.method)
    from .viz.overlay import colormap_table

    try:
        colormap_table(args.colormap)
    except (ValueError, TypeError) as e:
        raise CLIError(f"--colormap: {e}", EXIT_USAGE) from None
    _check_out_folder(args.out)
    for path in args.images:
        _check_exists(path, "image")
    class_names = _read_class_names(args.class_names)
    model = load_model(args.model)
    info = _resolve_layer(model, args.layer)
    output = _output_arg(args.output)
    targets = _targets(args.target, len(args.images), _num_classes(model, output))
    originals, raw, x, size, mode = _load_inputs(args, model, args.images)

    from .core.explanation import Explanation
    from .core.progress import Progbar

    options = {"output": output} if output is not None else {}
    if any("verbose" in inspect.signature(c.__init__).parameters for c in cls.__mro__ if "__init__" in vars(c)):
        options["verbose"] = 0  # the per-pass bars of Score-CAM & co.: the command shows its own, per image
    try:
        explainer = cls(model, info.path, batch_size=args.batch_size, **options)
    except (ValueError, TypeError) as e:
        raise CLIError(f"cannot set up {cls.name}: {e}", EXIT_ERROR) from None
    n = len(x)
    show = _progress_enabled(args.progress)
    if show:
        print(f"explaining {n} image(s) with {cls.name}", file=sys.stderr, flush=True)
    progress = Progbar(n, verbose=1 if show else 0, unit_name="image")
    parts = []
    for start in range(0, n, args.batch_size):
        stop = min(n, start + args.batch_size)
        t = targets[start:stop] if isinstance(targets, list) else targets
        try:
            parts.append(explainer(x[start:stop], t))
        except IndexError as e:
            raise CLIError(f"--target: {e}", EXIT_TARGET) from None
        except ValueError as e:
            raise CLIError(f"explaining {args.images[start]!r} failed: {e}", EXIT_ERROR) from None
        progress.update(stop)
    exp = Explanation.concatenate(parts) if len(parts) > 1 else parts[0]
    stems = _stems(args.images)
    try:
        exp.save(args.out, images=raw, names=stems, class_names=class_names, alpha=args.alpha, colormap=args.colormap)
        if args.overlay_size == "original":
            _write_original_size_overlays(exp, originals, stems, args)
    except OSError as e:
        raise CLIError(f"cannot write the results to --out {args.out!r}: {e.strerror or e}.", EXIT_ERROR) from None

    def name(k):
        if k is None:
            return "-"
        return class_names[k] if class_names is not None and 0 <= k < len(class_names) else str(k)

    from .methods.registry import display_name

    print(f"{display_name(exp.method)} at layer {exp.layer!r}; {n} image(s) at {size[0]}x{size[1]}, "
          f"preprocess {mode!r}")
    rows = []
    for i, path in enumerate(args.images):
        target = None if exp.targets is None else int(exp.targets[i])
        pred = None if exp.predictions is None else int(exp.predictions[i])
        overlay_file = os.path.join(args.out, f"{stems[i]}_overlay.png")
        rows.append([path, name(target), float(exp.scores[i]), name(pred), overlay_file])
    print(_table(["image", "explained", "score", "predicted", "overlay"], rows))
    where = "each image's own size" if args.overlay_size == "original" else f"{size[0]}x{size[1]}"
    print(f"wrote {n} overlay(s) (at {where}), heatmaps.npy and manifest.json to {args.out}")
    return EXIT_OK


def _write_original_size_overlays(exp, originals, stems, args) -> None:
    """Replace the model-size overlays :meth:`Explanation.save` wrote with ones at each photo's size.

    The heatmap (at the model's input size) is resized to the photo, bilinearly, by
    :func:`keras_gradcam.viz.overlay`; the photo itself is not resized.
    """
    from .viz.overlay import overlay
    from .io import write_png

    for image, heat, stem in zip(originals, exp.heatmaps, stems):
        write_png(os.path.join(args.out, f"{stem}_overlay.png"),
                  overlay(image, heat, alpha=args.alpha, colormap=args.colormap))


def _cmd_layers(args) -> int:
    from .core.layers import list_layers, resolve_layer

    model = load_model(args.model)
    infos = list_layers(model, spatial_only=not args.all)
    spatial = [i for i in infos if i.spatial]
    try:
        default = resolve_layer(model, None).path
    except ValueError:
        default = None
    rows = [
        [("* " if i.path == default else "  ") + i.path, type(i.layer).__name__,
         "-" if i.shape is None else str(tuple(i.shape)), "yes" if i.spatial else "no"]
        for i in infos
    ]
    print(f"model {model.name!r}: {len(spatial)} layer(s) with a spatial output" + (" (* = default)" if default else ""))
    if rows:
        print(_table(["path", "type", "output shape", "spatial"], rows))
    if default is None:
        raise CLIError(
            "the model has no layer with a spatial output (rank >= 3), so there is nothing Grad-CAM can explain.",
            EXIT_LAYER,
        )
    return EXIT_OK


def _cmd_methods(args) -> int:
    from .methods import METHODS
    from .methods.registry import display_name

    rows = []
    for name, cls in METHODS.items():
        doc = (inspect.getdoc(cls) or "").strip().splitlines()
        rows.append([name, display_name(name), doc[0] if doc else ""])
    print(_table(["name", "method", "summary"], rows))
    return EXIT_OK


def _read_mask(path: str, size: tuple[int, int]) -> np.ndarray:
    import tensorflow as tf

    if path.endswith(".npy"):
        try:
            arr = np.load(path)
        except (OSError, ValueError) as e:
            raise CLIError(f"cannot read mask {path!r}: {e}", EXIT_IMAGE) from None
        arr = np.asarray(arr)
        if arr.ndim == 3:
            arr = arr[..., 0]
        if arr.ndim != 2:
            raise CLIError(f"mask {path!r} must be a 2-D array (height, width); got shape {arr.shape}.", EXIT_IMAGE)
        mask = arr > 0
        if mask.shape != tuple(size):
            mask = tf.image.resize(mask[..., None].astype(np.float32), size, method="nearest").numpy()[..., 0] > 0.5
        return mask
    try:
        image = tf.io.decode_image(tf.io.read_file(path), channels=1, expand_animations=False)
    except (tf.errors.OpError, ValueError) as e:
        raise CLIError(f"cannot read mask {path!r}: {_short(e)}", EXIT_IMAGE) from None
    image = tf.image.resize(image, size, method="nearest").numpy()[..., 0]
    return image > 0


def _find_masks(folder: str, paths: Sequence[str], size) -> np.ndarray:
    _check_exists(folder, "mask folder")
    if not os.path.isdir(folder):
        raise CLIError(f"--masks must be a folder of mask files named like the images; {folder!r} is a file.", EXIT_USAGE)
    masks = []
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        found = [os.path.join(folder, stem + ext) for ext in _IMAGE_EXTENSIONS + (".npy",)
                 if os.path.isfile(os.path.join(folder, stem + ext))]
        if not found:
            raise CLIError(
                f"no mask for image {path!r} in {folder!r}: expected {stem}.png (or .jpg, .bmp, .gif, .npy) there.",
                EXIT_MISSING,
            )
        masks.append(_read_mask(found[0], size))
    return np.stack(masks)


def _cmd_evaluate(args) -> int:
    try:
        from .evaluate import evaluate, format_table
    except ImportError:
        raise CLIError(
            "`keras-gradcam evaluate` needs keras_gradcam.evaluate (evaluate() and format_table()), which this "
            "installation does not have yet. Compare methods from Python with keras_gradcam.metrics meanwhile.",
            EXIT_ERROR,
        ) from None
    methods = [_method(m).name for m in args.methods]
    known = getattr(sys.modules.get(evaluate.__module__), "METRICS", None)
    if args.metrics is not None and known is not None:
        unknown = [m for m in args.metrics if m not in known]
        if unknown:
            raise CLIError(f"--metrics: unknown {unknown}; choose from {list(known)}.", EXIT_USAGE)
    for path in args.images:
        _check_exists(path, "image")
    model = load_model(args.model)
    info = _resolve_layer(model, args.layer)
    targets = _targets(args.target, len(args.images), _num_classes(model, None))
    _, _, x, size, mode = _load_inputs(args, model, args.images)
    masks = _find_masks(args.masks, args.images, size) if args.masks is not None else None
    accepted = inspect.signature(evaluate).parameters
    kwargs = {"methods": methods, "masks": masks}
    optional = {
        "layer": info.path if args.layer is not None else None,
        "batch_size": args.batch_size,
        "targets": targets,
        "metrics": args.metrics,
        "tolerance": args.tolerance,
        "verbose": _progress_enabled(args.progress),
    }
    kwargs.update({k: v for k, v in optional.items() if k in accepted and v is not None})
    try:
        rows = evaluate(model, x, **kwargs)
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
