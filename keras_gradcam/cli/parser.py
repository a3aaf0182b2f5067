"""The ``keras-gradcam`` argument parser: subcommands, options, value types and ``--help``.

Usage errors raise :class:`~keras_gradcam.cli.errors.CLIError` with exit status 2 (argparse would
exit the process); every ``--help`` ends with the table of exit codes.
"""

from __future__ import annotations

import argparse

from ..core.validate import positive_int
from ..evaluate import SLOW_METRICS
from .commands import run_audit, run_evaluate, run_explain, run_layers, run_methods
from .errors import EXIT_CODES, EXIT_USAGE, CLIError
from .images import PREPROCESSING

__all__ = ["build_parser"]

_EPILOG = "exit codes:\n" + "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES.items())


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors raised as :class:`CLIError` (so ``main`` returns, never exits)."""

    def error(self, message):  # noqa: D102 - argparse's hook
        raise CLIError(f"{message}\n{self.format_usage().rstrip()}\nRun `{self.prog} --help` for the options.", EXIT_USAGE)


# -- value types (argparse reports an ArgumentTypeError as "argument --x: <message>") --------------
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


def _grid(text: str) -> tuple[int, int]:
    try:
        return _size(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a patch grid like 14 or 14x14 (rows x cols); got {text!r}") from None


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an int >= 0; got {text!r}")
    return value


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
        raise argparse.ArgumentTypeError(f"the value must be an int >= 1; got {text!r}.") from None
    try:
        return positive_int("the value", value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# -- the parser -----------------------------------------------------------------------------------
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
        Subcommands ``explain``, ``layers``, ``methods``, ``evaluate`` and ``audit``, each with its
        ``handler`` (a function of the parsed arguments that returns the exit status); usage
        errors raise :class:`CLIError` with exit status 2 instead of exiting.
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
    p.add_argument("--grid", type=_grid, default=None, metavar="ROWSxCOLS",
                   help="patch grid of a token layer (vision transformer) whose grid the model does not tell, e.g. 14x14")
    p.add_argument("--prefix-tokens", type=_count, default=None, metavar="N",
                   help="class/register tokens before the patches of a token layer (default: worked out from --grid)")
    p.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                   help="progress bar on stderr: auto shows it when stderr is a terminal (default: auto)")
    p.add_argument("--aug-smooth", action="store_true",
                   help="test-time augmentation: average the maps of 6 flipped/brightened copies (6x the cost)")
    p.add_argument("--eigen-smooth", action="store_true",
                   help="first principal component of the weighted activations instead of their sum")
    p.add_argument("--no-relu", action="store_true",
                   help="keep the signed map (no ReLU): heatmaps.npy is then the min-max of the signed map")
    _add_image_options(p)
    p.set_defaults(handler=run_explain)

    p = sub.add_parser(
        "layers", help="list the layers --layer accepts (nested models included)",
        description="List the layers of MODEL that can be explained: those with a spatial output, in execution "
        "order, as the paths --layer accepts. The default layer (the last feature map before pooling, see "
        "docs/layers.md) is marked with *.",
        epilog=_EPILOG, formatter_class=fmt,
    )
    p.add_argument("model", metavar="MODEL", help="a saved Keras model (.keras, or legacy .h5)")
    p.add_argument("--all", action="store_true", help="also list layers without a spatial output")
    p.set_defaults(handler=run_layers)

    p = sub.add_parser(
        "methods", help="list the method names --method accepts",
        description="List the registered methods (keras_gradcam.METHODS) with a one-line description.",
        epilog=_EPILOG, formatter_class=fmt,
    )
    p.set_defaults(handler=run_methods)

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
                   help="metrics to compute, or 'all' (default: the fast ones that the inputs allow, seconds on a "
                   "few small images; the slow ones, " + ", ".join(SLOW_METRICS) + ", take minutes on a large model: "
                   "ask for them by name or with --metrics all); see keras_gradcam.evaluate.METRICS")
    p.add_argument("--target", type=int, nargs="+", default=None, metavar="N",
                   help="class to explain and score: one for all images or one per image (default: top-1)")
    p.add_argument("--tolerance", type=float, default=None, metavar="PX",
                   help="pointing-game tolerance in pixels (default: 15 px at 224 px scaled to the images, "
                        "15/224 of the shorter side)")
    p.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                   help="a progress bar on stderr, then the seconds each step took: auto shows them when stderr is "
                   "a terminal (default: auto)")
    _add_image_options(p)
    p.set_defaults(handler=run_evaluate)

    p = sub.add_parser(
        "audit", help="audit a dataset for shortcuts: where the model looks, class by class; writes an HTML report",
        description="Explain every image of DATA_DIR (one subfolder per class, as keras.utils.image_dataset_from_directory "
        "reads it) and flag the classes whose evidence sits at the same place in most images; paint that region over and "
        "measure the accuracy again (keras_gradcam.audit). Prints the table; writes index.html and summary.json to --out.",
        epilog=_EPILOG + "\n\nexamples:\n  keras-gradcam audit model.keras data/val --out audit\n"
        "  keras-gradcam audit model.keras data/val --out audit --masks data/val_masks   # data/val_masks/CLASS/NAME.png",
        formatter_class=fmt,
    )
    p.add_argument("model", metavar="MODEL", help="a saved Keras model (.keras, or legacy .h5)")
    p.add_argument("data", metavar="DATA_DIR",
                   help="a folder with one subfolder of images per class, named like the class (with --class-names "
                   "only some classes may be there; without it, one folder per class, alphabetical = class index)")
    p.add_argument("--method", default="gradcam++", help="method name (default: gradcam++); `keras-gradcam methods` lists them")
    p.add_argument("--out", default="audit", metavar="DIR", help="folder for index.html and summary.json (default: audit)")
    p.add_argument("--fill", choices=("mean", "blur"), default="mean",
                   help="what covers a flagged region: the mean colour of the images, or the image blurred (default: mean)")
    p.add_argument("--class-names", default=None, metavar="FILE",
                   help="text file with the model's class names, one per line in the order of its outputs; each "
                   "DATA_DIR subfolder is the class of its name (default: the subfolder names, alphabetical)")
    p.add_argument("--masks", default=None, metavar="MASK_DIR",
                   help="object masks laid out like DATA_DIR: MASK_DIR/CLASS/NAME.png for DATA_DIR/CLASS/NAME.jpg; "
                   "grey level >= 128 = object, resized to the image size; adds the energy on the objects and the "
                   "images right for the wrong reason")
    p.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                   help="progress bar on stderr: auto shows it when stderr is a terminal (default: auto)")
    _add_image_options(p)
    p.set_defaults(handler=run_audit)
    return parser
