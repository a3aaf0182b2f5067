"""The other files a command reads or writes: the model, ``--class-names``, ``--out`` and output names."""

from __future__ import annotations

import contextlib
import importlib
import os
import tempfile
import zipfile
from collections.abc import Iterator, Sequence

import keras

from ..io import ModelFileError, load_model_file
from .errors import (
    EXIT_ERROR,
    EXIT_MODEL,
    EXIT_USAGE,
    CLIError,
    check_exists,
    short_message,
)

__all__ = ["check_out_folder", "load_model", "out_folder", "read_class_names", "stems"]


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
        Exit status 3 when the file does not exist, 5 when it cannot be loaded as a Keras model (a
        file that is there but truncated or not a Keras file is told apart, with its size:
        :func:`keras_gradcam.io.load_model_file`).
    """
    check_exists(path, "model file")
    if os.path.isdir(path):
        raise CLIError(
            f"{path!r} is a folder; keras-gradcam needs a model file saved with model.save('model.keras') "
            "(a TensorFlow SavedModel folder cannot be explained: it has no Keras layers).", EXIT_MODEL,
        )
    if os.path.splitext(path)[1].lower() not in (".keras", ".h5", ".hdf5"):
        raise CLIError(
            f"cannot load {path!r}: MODEL must be a Keras file ending in .keras (or a legacy .h5), saved with "
            "model.save('model.keras').", EXIT_MODEL,
        )
    _register_keras_hub(path)
    try:
        model = load_model_file(path, compile=False)
    except ModelFileError as e:  # the file is there but truncated, empty or of another kind: say so, with its size
        raise CLIError(str(e), EXIT_MODEL) from e
    except Exception as e:  # noqa: BLE001 - any failure becomes one message and exit status
        raise CLIError(
            f"cannot load {path!r} as a Keras model: {type(e).__name__}: {short_message(e)} Save it with Keras 3 "
            "(model.save('model.keras')); a model with custom layers must be explained from Python, where they "
            "can be registered (keras.saving.register_keras_serializable).", EXIT_MODEL,
        ) from e
    if not isinstance(model, keras.Model):
        raise CLIError(f"{path!r} holds a {type(model).__name__}, not a keras.Model.", EXIT_MODEL)
    return model


def _register_keras_hub(path: str) -> None:
    """Import KerasHub (which registers its classes) when a ``.keras`` file holds a KerasHub model.

    KerasHub is the optional extra ``keras-gradcam[hub]``: imported only for such a file.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            if b'"keras_hub' not in archive.read("config.json"):
                return
    except (OSError, KeyError, zipfile.BadZipFile):
        return
    try:
        importlib.import_module("keras_hub")
    except ImportError as e:
        raise CLIError(
            f"{path!r} holds a KerasHub model, but keras_hub cannot be imported ({short_message(e)}); install it "
            "with pip install 'keras-gradcam[hub]'.", EXIT_MODEL,
        ) from e


def read_class_names(path: str | None) -> list[str] | None:
    """``--class-names``: one class name per non-empty line of a UTF-8 text file (None: no file)."""
    if path is None:
        return None
    check_exists(path, "class-names file")
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


def check_out_folder(path: str) -> None:
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


@contextlib.contextmanager
def out_folder(path: str, files: Sequence[str] = ()) -> Iterator[str]:
    """``--out`` made and tried before the work: a context for the work that writes there.

    :func:`check_out_folder` tells the common mistakes apart without touching anything; what only
    the file system can tell (a name too long, a dangling symbolic link, a read-only or full file
    system, a folder where a result file goes) is found here by doing it: the folder is created
    with its missing parents, a probe file is written in it and removed, and each of ``files``
    is checked to be writable there (not a folder, a name not too long). Should anything fail,
    here or in the work inside the ``with``, the folders made here are removed again if still
    empty, so a failed command leaves no empty output folder behind.

    Parameters
    ----------
    path : str
        ``--out``.
    files : sequence of str
        The names of the files the command will write in it (``summary.json``, ...).

    Yields
    ------
    str
        ``path``, now an existing, writable folder.

    Raises
    ------
    CLIError
        Exit status 1 (2 for a result name that is a folder there), naming ``--out`` and what the
        file system said.
    """
    check_out_folder(path)
    made = []
    try:
        folder = os.path.abspath(path)
        missing = []
        while folder and not os.path.isdir(folder) and folder != os.path.dirname(folder):
            missing.append(folder)
            folder = os.path.dirname(folder)
        for folder in reversed(missing):
            _attempt(os.mkdir, folder, path, "cannot create")
            made.append(folder)
        _try_writing(path, files)
        yield path
    except BaseException:
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # only when still empty
        raise


def _attempt(action, target: str, path: str, what: str):
    try:
        return action(target)
    except OSError as e:
        link = ""
        if os.path.islink(target) and not os.path.exists(target):
            link = f" ({target!r} is a symbolic link to {os.readlink(target)!r}, which does not exist)"
        raise CLIError(f"--out {path!r}: {what} {target!r}: {e.strerror or e}{link}. Pick another folder.", EXIT_ERROR) from None


def _try_writing(path: str, files: Sequence[str]) -> None:
    """Write and remove a probe file in ``path``; check each of ``files`` can be written there."""
    handle, probe = _attempt(lambda folder: tempfile.mkstemp(prefix=".keras-gradcam-probe-", dir=folder), path, path,
                             "cannot write in")
    os.close(handle)
    os.remove(probe)
    try:
        longest = os.pathconf(path, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # not told on this system
        longest = 255
    for name in files:
        target = os.path.join(path, name)
        if os.path.isdir(target):
            raise CLIError(f"--out {path!r} holds a folder {name!r} where a result file goes; move it or pick another "
                           "folder.", EXIT_USAGE)
        if len(os.fsencode(name)) > longest:
            raise CLIError(f"--out {path!r}: the result file name {name!r} is longer than this file system allows "
                           f"({longest} bytes); rename the input file.", EXIT_ERROR)


def stems(paths: Sequence[str]) -> list[str]:
    """File stems for the outputs, made unique (``cat``, ``cat_2``) when two images share a name."""
    out, seen = [], {}
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0] or "image"
        count = seen.get(stem, 0) + 1
        seen[stem] = count
        out.append(stem if count == 1 else f"{stem}_{count}")
    return out
