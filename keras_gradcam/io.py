"""Files: PNG encoding, an :class:`~keras_gradcam.core.explanation.Explanation` saved to a folder
(maps as ``.npy``, PNG pictures, a JSON manifest) and read back, and model files loaded with a
clear word when they cannot be read. The pictures come drawn (:meth:`~keras_gradcam.Explanation.save`
draws them): this module imports nothing of the package.

The manifest is written last, and atomically (to a temporary file, then renamed), so a folder
whose writing was interrupted has no manifest and is never read back as complete.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import sys
import zipfile
from typing import Any

import h5py  # Keras' own dependency, for .h5 model files (Keras imports it anyway)
import keras
import numpy as np
import tensorflow as tf

__all__ = [
    "MANIFEST",
    "FORMAT",
    "ModelFileError",
    "encode_png",
    "write_png",
    "file_stems",
    "save_explanation",
    "read_explanation",
    "library_versions",
    "load_model_file",
    "model_file_problem",
]

MANIFEST = "manifest.json"
FORMAT = "keras-gradcam explanation"


def encode_png(image) -> bytes:
    """Encode a uint8 image as PNG bytes, with ``tf.io.encode_png``.

    Parameters
    ----------
    image : array-like of shape (height, width), (height, width, 3) or (height, width, 4), uint8
        Grayscale, RGB or RGBA.

    Returns
    -------
    bytes
        A complete PNG file (8 bits per channel, no interlacing).

    Raises
    ------
    ValueError
        Any other shape, or an empty image.
    TypeError
        A dtype other than uint8 (convert with ``np.clip(x, 0, 255).astype(np.uint8)``).

    Examples
    --------
    >>> import numpy as np
    >>> from keras_gradcam.io import encode_png
    >>> encode_png(np.zeros((2, 3, 3), np.uint8))[:8]
    b'\\x89PNG\\r\\n\\x1a\\n'
    """
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise TypeError(
            f"encode_png needs a uint8 image; got dtype {arr.dtype}. Convert it, e.g. "
            "np.clip(image * 255, 0, 255).astype(np.uint8) for a [0, 1] float image."
        )
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4) or min(arr.shape[:2]) < 1:
        raise ValueError(
            f"encode_png needs an image of shape (height, width), (height, width, 3) or (height, width, 4); "
            f"got shape {np.asarray(image).shape}."
        )
    return tf.io.encode_png(np.ascontiguousarray(arr)).numpy()


def write_png(path, image) -> None:
    """Write a uint8 image to ``path`` as PNG; see :func:`encode_png` for the accepted shapes.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write (its folder must exist).
    image : array-like, uint8
        ``(height, width)``, ``(height, width, 3)`` or ``(height, width, 4)``.
    """
    data = encode_png(image)
    with open(path, "wb") as f:
        f.write(data)


def file_stems(names, n: int) -> list[str]:
    """The file stem of each of ``n`` samples: ``names`` checked, or ``000``, ``001``, ... by default.

    Raises
    ------
    TypeError
        A single str.
    ValueError
        Not one name per sample, duplicates, or a name with a path separator.
    """
    if names is None:
        width = max(3, len(str(n - 1)))
        return [f"{i:0{width}d}" for i in range(n)]
    if isinstance(names, str):
        raise TypeError("names must be a sequence of str, one file stem per sample; got a single str.")
    names = [str(s) for s in names]
    if len(names) != n:
        raise ValueError(f"names has {len(names)} entries but the explanation has {n} samples; give one per sample.")
    if len(set(names)) != n:
        raise ValueError("names must be unique (they become file names); got duplicates.")
    bad = [s for s in names if not s or os.sep in s or (os.altsep and os.altsep in s)]
    if bad:
        raise ValueError(f"names must be plain file stems without path separators; got {bad[:3]}.")
    return names


def save_explanation(
    exp,
    folder,
    pictures=None,
    *,
    names=None,
    class_names=None,
    drawn_with=None,
) -> dict[str, Any]:
    """Write ``exp``'s maps (``.npy``), the given pictures (PNG) and a JSON manifest to ``folder``.

    The files of :meth:`keras_gradcam.Explanation.save`, which documents them and draws the
    pictures; this module draws nothing. The manifest is written last and atomically.

    Parameters
    ----------
    exp : Explanation
    folder : str or os.PathLike
        Created if missing.
    pictures : dict of str to uint8 ndarray of shape (n_samples, height, width[, channels]), optional
        Rendered pictures, one per sample for each key, written as ``<name>_<key>.png`` in the
        order of the keys (e.g. ``{"heatmap": ..., "overlay": ...}``).
    names, class_names
        As in :meth:`~keras_gradcam.Explanation.save` (``names``: see :func:`file_stems`).
    drawn_with : dict, optional
        How the pictures were drawn, recorded as the manifest's ``overlay`` entry.

    Returns
    -------
    dict
        The manifest.
    """
    n = len(exp)
    names = file_stems(names, n)
    pictures = dict(pictures or {})
    for key, value in pictures.items():
        if len(value) != n:
            raise ValueError(f"pictures[{key!r}] has {len(value)} pictures but the explanation has {n} samples.")
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)

    arrays = {"heatmaps": exp.heatmaps, "layer_heatmaps": exp.layer_heatmaps}
    if exp.attributions is not None:
        arrays["attributions"] = exp.attributions
    for key, value in exp.extras.items():
        if isinstance(value, np.ndarray):
            arrays[f"extra_{key}"] = value
    array_info = {}
    for key, value in arrays.items():
        np.save(os.path.join(folder, f"{key}.npy"), value)
        array_info[key] = {"file": f"{key}.npy", "shape": [int(d) for d in value.shape], "dtype": str(value.dtype)}

    summary = exp.to_dict(class_names=class_names)
    samples = []
    for i, stem in enumerate(names):
        files = {}
        for key, value in pictures.items():
            files[key] = f"{stem}_{key}.png"
            write_png(os.path.join(folder, files[key]), value[i])
        entry = {
            "index": i,
            "name": stem,
            "target": None if summary["targets"] is None else summary["targets"][i],
            "score": summary["scores"][i],
            "prediction": None if summary["predictions"] is None else summary["predictions"][i],
            "files": files,
        }
        if class_names is not None:
            entry["target_name"] = None if summary["targets"] is None else summary["target_names"][i]
            entry["prediction_name"] = None if summary["predictions"] is None else summary["prediction_names"][i]
        samples.append(entry)

    manifest = {"format": FORMAT, "format_version": 1, **summary}
    manifest.update(
        arrays=array_info,
        samples=samples,
        overlay=dict(drawn_with or {}),
        versions=library_versions(),
        python=platform.python_version(),
    )
    path = os.path.join(folder, MANIFEST)
    with open(path + ".partial", "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    os.replace(path + ".partial", path)  # atomic: a folder is complete once it has a manifest
    return manifest


def read_explanation(folder) -> dict[str, Any]:
    """The fields of an :class:`~keras_gradcam.core.explanation.Explanation` saved in ``folder``.

    The implementation of :meth:`keras_gradcam.Explanation.load`, which documents it.
    """
    path = os.path.join(os.fspath(folder), MANIFEST)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} does not exist; pass a folder written by Explanation.save().")
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not a keras-gradcam manifest (format {manifest.get('format')!r}).")
    arrays = {key: np.load(os.path.join(folder, info["file"])) for key, info in manifest["arrays"].items()}
    layer = manifest["layer"]
    return dict(
        heatmaps=arrays["heatmaps"],
        layer_heatmaps=arrays["layer_heatmaps"],
        targets=None if manifest["targets"] is None else np.asarray(manifest["targets"], np.int64),
        scores=np.asarray(manifest["scores"], np.float32),
        layer=tuple(layer) if isinstance(layer, list) else layer,
        method=manifest["method"],
        predictions=None if manifest["predictions"] is None else np.asarray(manifest["predictions"], np.int64),
        attributions=arrays.get("attributions"),
        extras={k[len("extra_"):]: v for k, v in arrays.items() if k.startswith("extra_")},
    )


def library_versions() -> dict[str, str | None]:
    """Versions of the libraries that made an explanation (for the manifest of :meth:`save`)."""
    out = {}
    for module, dist in (("keras_gradcam", "keras-gradcam"), ("keras", "keras"), ("tensorflow", "tensorflow"),
                         ("numpy", "numpy")):
        version = getattr(sys.modules.get(module), "__version__", None)
        if version is None:
            try:
                version = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                version = None
        out[module] = version
    return out


# -- model files ----------------------------------------------------------------------------------
_ZIP_MAGIC = b"PK\x03\x04"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


class ModelFileError(ValueError):
    """A model file that exists but cannot be read as a Keras model file (truncated, or another kind of file)."""


def load_model_file(path, **load_args) -> keras.Model:
    """``keras.saving.load_model(path, **load_args)``, saying why a file that exists cannot be read.

    Keras reports a ``.keras`` file that is not a readable zip archive (a half-finished copy or
    download, a text file renamed ``.keras``) as ``File not found: filepath=...``, although the
    file is there. Here such a file, or a damaged ``.h5``, raises :class:`ModelFileError` saying
    that it exists, its size and what is wrong (:func:`model_file_problem`); any other failure
    (custom layers not registered, ...) is Keras' own error, unchanged.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.keras`` (or legacy ``.h5``) model file. Remote paths (``gs://...``) are passed to
        Keras as they are, without the diagnosis.
    **load_args
        Keyword arguments of ``keras.saving.load_model`` (``compile=``, ``custom_objects=``...).

    Returns
    -------
    keras.Model or whatever ``keras.saving.load_model`` returns.

    Raises
    ------
    ModelFileError
        A ``ValueError``: the file exists but is truncated, empty, damaged or not a Keras model file.
    FileNotFoundError
        A local path that does not exist.
    """
    path = os.fspath(path)
    if "://" not in path and not os.path.exists(path):
        raise FileNotFoundError(f"model file {path!r} does not exist (working directory: {os.getcwd()}).")
    try:
        return keras.saving.load_model(path, **load_args)
    except Exception as e:
        problem = model_file_problem(path)
        if problem is not None:
            raise ModelFileError(problem) from e
        raise


def model_file_problem(path) -> str | None:
    """Why the local file ``path`` cannot be a Keras model file, or None when it looks like one.

    A ``.keras`` file must be a complete zip archive holding ``config.json`` (what
    ``model.save("model.keras")`` writes); an ``.h5``/``.hdf5`` file a complete HDF5 file. Only the
    container is checked, not the model in it. None also for a path that is not a local file.

    Parameters
    ----------
    path : str or os.PathLike
        The model file.

    Returns
    -------
    str or None
        A sentence for a person: the file exists, its size in bytes, what is wrong and what to do.
    """
    path = os.fspath(path)
    if "://" in path or not os.path.isfile(path):
        return None
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
    there = f"model file {path!r} exists ({size} bytes) but"
    if path.lower().endswith((".h5", ".hdf5")):
        return _hdf5_problem(path, there, head, size)
    again = "Copy it again, or save the model again with model.save('model.keras')."
    if size == 0:
        return f"{there} is empty, so it is not a readable Keras archive (an interrupted copy or save?). {again}"
    if not head.startswith(_ZIP_MAGIC):
        kind = (
            " It is an HDF5 file, i.e. a legacy .h5 model: rename it to end in .h5."
            if head.startswith(_HDF5_MAGIC)
            else f" A .keras file is a zip archive written by model.save('model.keras'); this one starts with {head!r}."
        )
        return f"{there} is not a readable Keras archive: it is not a .keras file (or its start is damaged).{kind}"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError):
        return (
            f"{there} is not a readable Keras archive: it starts like one (a zip archive) but cannot be read to its "
            f"end, so it is truncated (a half-finished copy or download) or damaged. {again}"
        )
    if "config.json" not in names:
        return f"{there} is not a readable Keras archive: it is a zip archive without config.json, so not a .keras file. {again}"
    if damaged is not None:
        return f"{there} is not a readable Keras archive: its entry {damaged!r} is damaged (wrong checksum). {again}"
    return None


def _hdf5_problem(path: str, there: str, head: bytes, size: int) -> str | None:
    again = "Copy it again, or save the model in the current format with model.save('model.keras')."
    if not head.startswith(_HDF5_MAGIC):
        kind = " It is a zip archive, i.e. a .keras model: rename it to end in .keras." if head.startswith(_ZIP_MAGIC) else ""
        return f"{there} is not a readable HDF5 model file: it is not an .h5 file (or it is empty or damaged).{kind} {again}"
    try:
        with h5py.File(path, "r"):
            pass
    except OSError as e:
        return f"{there} is not a readable HDF5 model file: it is truncated or damaged ({e}). {again}"
    return None
