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

The package, top to bottom: this module (:func:`main`), :mod:`.parser` (argparse, ``--help``),
:mod:`.commands` (the four commands), :mod:`.images` (image files, ``--preprocess``, masks),
:mod:`.files` (the model, ``--class-names``, ``--out``), :mod:`.errors` (exit codes, :class:`CLIError`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ..io import library_versions
from .errors import EXIT_CODES, EXIT_ERROR, EXIT_OK, EXIT_USAGE, CLIError
from .files import load_model
from .images import (
    PREPROCESSING,
    auto_preprocessing,
    load_image,
    preprocess,
    read_image,
)
from .parser import build_parser

__all__ = [
    "EXIT_CODES",
    "PREPROCESSING",
    "CLIError",
    "auto_preprocessing",
    "build_parser",
    "load_image",
    "load_model",
    "main",
    "preprocess",
    "read_image",
]


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
    versions = library_versions()
    print(f"keras-gradcam {versions['keras_gradcam']}, Keras {versions['keras']}, TensorFlow {versions['tensorflow']}")
    return EXIT_OK
