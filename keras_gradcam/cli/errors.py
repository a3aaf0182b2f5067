"""Exit codes and the one error type of the command line: what the person at the terminal is told.

Every mistake in a command ends as a :class:`CLIError`: one line on stderr
(``keras-gradcam: error: ...``) and a distinct exit status from :data:`EXIT_CODES`, never a
Python traceback.
"""

from __future__ import annotations

import os
import re

__all__ = [
    "EXIT_CODES",
    "EXIT_ERROR",
    "EXIT_IMAGE",
    "EXIT_LAYER",
    "EXIT_MISSING",
    "EXIT_MODEL",
    "EXIT_OK",
    "EXIT_TARGET",
    "EXIT_USAGE",
    "CLIError",
    "check_exists",
    "short_message",
]

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


def check_exists(path: str, what: str) -> None:
    """Raise :class:`CLIError` (exit status 3) naming ``what`` when ``path`` does not exist."""
    if not os.path.exists(path):
        raise CLIError(f"{what} {path!r} does not exist (working directory: {os.getcwd()}).", EXIT_MISSING)


def short_message(error: BaseException, limit: int = 240) -> str:
    """The first sentence of an exception's message, without TensorFlow's op decorations.

    Parameters
    ----------
    error : BaseException
        A Keras, TensorFlow or Python error.
    limit : int, default=240
        At most this many characters (cut with ``...``).

    Returns
    -------
    str
        One sentence, ending with ``.`` (or ``...``), to put inside a :class:`CLIError` message.
    """
    text = str(getattr(error, "message", None) or error).strip() or type(error).__name__
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)
    text = re.sub(r"\s*\[Op:\w+\].*$", "", text, flags=re.DOTALL)
    text = text.splitlines()[0].strip()
    cut = text.find(". ", 0, limit)
    if cut > 0:
        text = text[: cut + 1]
    elif len(text) > limit:
        text = text[:limit].rstrip() + "..."
    return text if text.endswith((".", "...")) else text + "."
