"""The on-disk store of a run: one ``.npy`` file per field and chunk, and a JSON manifest.

Layout of a run folder ``out/``::

    out/manifest.json                    what is complete (written atomically, last)
    out/chunks/000000.heatmaps.npy       chunk 0, one file per field
    out/chunks/000000.scores.npy
    ...

A multi-worker run (``runs/distribute.py``) keeps each worker's share as a store of its own in
``out/workers/<index>/``; the top manifest lists those chunks with their ``folder`` and
``index``, so the joined run is read like any other.

Why per-chunk files rather than one preallocated ``.npy`` per field: the number of samples of a
generator or a ``tf.data`` pipeline is often unknown until its end, and a chunk written as its
own files is complete or absent, never half-overwritten. :class:`ChunkedArray` joins the chunks
of a field lazily, each opened memory-mapped (``np.load(..., mmap_mode="r")``), so reading a
run back holds nothing in memory but the rows asked for.

A chunk is complete only once each of its files was written under a temporary name, flushed,
``fsync``'d and renamed (``os.replace``), and the manifest, itself written to a temporary file,
``fsync``'d and renamed, lists it. A file on disk that the manifest does not list (a chunk being
written when the process was killed, or anything else planted there) is never read, and is
overwritten when the run resumes.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = [
    "FORMAT",
    "VERSION",
    "VERSIONS",
    "MANIFEST",
    "CHUNKS",
    "WORKERS",
    "FIELDS",
    "ChunkedArray",
    "RunStore",
    "describe_difference",
    "field_arrays",
    "fields_of",
    "merge_fields",
    "read_manifest",
    "storable_labels",
]

FORMAT = "keras-gradcam run"
VERSION = 1  # the manifest format this code writes
VERSIONS = (1,)  # the manifest formats this code reads
_REQUIRED = ("fingerprint", "complete", "n_samples", "n_batches", "fields", "chunks")  # keys of a version-1 manifest
MANIFEST = "manifest.json"
CHUNKS = "chunks"
WORKERS = "workers"  # out/workers/<index>/: one worker's share of a multi-worker run (runs/distribute.py)
FIELDS = ("heatmaps", "layer_heatmaps", "targets", "scores", "predictions", "labels", "finite")


def _fsync_dir(folder: str) -> None:
    """Make a rename inside ``folder`` durable (where the platform allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_durably(path: str, write) -> None:
    """``write(file)`` to ``path + ".partial"``, flush, fsync, then rename it to ``path``."""
    temp = path + ".partial"
    with open(temp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)


def read_manifest(folder: str, any_version: bool = False) -> dict[str, Any] | None:
    """The manifest of the run in ``folder``, or None when there is none.

    Parameters
    ----------
    folder : str
    any_version : bool, default=False
        Return the manifest of a run of another format version too (to replace it), instead of
        raising.

    Raises
    ------
    ValueError
        ``folder/manifest.json`` exists but is not a keras-gradcam run manifest (e.g. the folder
        of an ``Explanation.save``), or, unless ``any_version``, it is the manifest of a run of a
        format version other than :data:`VERSIONS` (another keras-gradcam wrote it).
    """
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        try:
            manifest = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path!r} is not valid JSON ({error}); it was not written by explain_dataset.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ValueError(
            f"{path!r} is not the manifest of an explain_dataset run (format {found!r}, expected {FORMAT!r}); "
            "pass the folder given as out= to explain_dataset, or another out= for a new run."
        )
    if not any_version:
        _check_version(folder, manifest)
    return manifest


def _check_version(folder: str, manifest: dict[str, Any]) -> None:
    """Refuse a manifest of a format version this code does not read, naming the versions it does."""
    version = manifest.get("version")
    missing = [k for k in _REQUIRED if k not in manifest]
    if version in VERSIONS and not missing:
        return
    writer = (manifest.get("versions") or {}).get("keras_gradcam") if isinstance(manifest.get("versions"), dict) else None
    by = f", written by keras-gradcam {writer}" if writer else ""
    if version is None:
        found = f"a run of an older layout, with no format version{by}"
    elif version in VERSIONS:
        found = f"a version-{version} run whose manifest lacks {missing}{by}"
    else:
        found = f"a run of format version {version!r}{by}"
    readable = ", ".join(str(v) for v in VERSIONS)
    raise ValueError(
        f"{folder!r} holds {found}; this keras-gradcam reads runs of format version {readable} only. Read it with "
        f"the keras-gradcam that wrote it, or recompute it here: explain_dataset(..., out={folder!r}, "
        "overwrite=True) replaces it."
    )


def storable_labels(labels) -> np.ndarray:
    """Labels as a run stores them: numbers as they are, text as fixed-width unicode (``<U``).

    ``tf.data`` gives text labels as an object array of ``bytes`` and Python gives them as
    ``str``; neither can be memory-mapped, so they are stored as numpy's fixed-width strings,
    wide enough for the longest label of the batch (the run widens its field as later batches
    need, see :func:`merge_fields`). Bytes are decoded as UTF-8.

    Raises
    ------
    TypeError
        Labels that are neither numbers nor text (e.g. Python objects of another kind).
    """
    a = np.asarray(labels)
    if a.dtype.kind == "S":
        return np.char.decode(a, "utf-8")
    if a.dtype.kind == "O":
        kinds = {type(v) for v in a.ravel()}
        if kinds <= {bytes, np.bytes_}:
            return np.char.decode(a.astype("S"), "utf-8") if a.size else a.astype("U1")
        if kinds <= {str, np.str_, bytes, np.bytes_}:
            flat = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in a.ravel()]
            return np.array(flat, dtype=str).reshape(a.shape) if a.size else a.astype("U1")
        names = sorted(k.__name__ for k in kinds)
        raise TypeError(
            f"labels must be numbers or text (str or bytes), to be stored in the run; got Python objects of type "
            f"{names}. Give the labels as class indices or class names."
        )
    return a


def fields_of(arrays: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """The per-sample dtype and shape of each field of a batch or chunk, as the manifest lists them."""
    return {k: {"dtype": a.dtype.str, "shape": [int(d) for d in a.shape[1:]]} for k, a in arrays.items()}


def _wider(known: str, new: str) -> str | None:
    """The dtype that holds both: the wider of two fixed-width unicode dtypes; else None unless equal."""
    a, b = np.dtype(known), np.dtype(new)
    if a == b:
        return known
    if a.kind == b.kind == "U":
        return (a if a.itemsize >= b.itemsize else b).str
    return None


def merge_fields(known: dict | None, new: dict) -> dict | None:
    """The fields of a run after one more batch: ``known`` with its text fields widened to hold ``new``'s.

    Returns None when they do not fit together: another set of fields, another per-sample shape,
    or another dtype (other than a longer text label).
    """
    if known is None:
        return new
    if set(known) != set(new):
        return None
    merged = {}
    for key, info in known.items():
        dtype = _wider(info["dtype"], new[key]["dtype"])
        if dtype is None or list(info["shape"]) != list(new[key]["shape"]):
            return None
        merged[key] = {"dtype": dtype, "shape": list(info["shape"])}
    return merged


def describe_difference(known: dict, new: dict) -> str:
    """What differs between the fields of the earlier batches (``known``) and a new batch's, for a message.

    A change of the heatmaps' shape is a change of the input's spatial size, said as such
    ("images of 16x16, where the batches before had 32x32"); it decides the other maps' sizes.
    """
    if "heatmaps" in known and "heatmaps" in new and known["heatmaps"]["shape"] != new["heatmaps"]["shape"]:
        size = {n: "x".join(str(d) for d in f["heatmaps"]["shape"]) for n, f in (("new", new), ("old", known))}
        return f"images of {size['new']}, where the batches before had {size['old']}"

    def what(fields: dict, key: str) -> str:
        if key not in fields:
            return f"no {key}"
        return f"{key} of {np.dtype(fields[key]['dtype'])} and shape {tuple(fields[key]['shape'])} per sample"

    keys = [k for k in dict.fromkeys([*known, *new])
            if k not in known or k not in new or merge_fields({k: known[k]}, {k: new[k]}) is None]
    return "; ".join(f"{what(new, k)}, where the batches before gave {what(known, k)}" for k in keys)


class ChunkedArray:
    """A read-only array stored as consecutive chunk files, read memory-mapped, joined lazily.

    Behaves like a read-only ndarray for the common reads: ``len``, ``shape``, ``dtype``,
    ``ndim``, indexing the first axis with an int, a slice, a boolean mask or integer indices
    (further axes as with numpy), iteration over samples, and ``np.asarray(run.heatmaps)``
    (which reads everything into memory: for a large run, read slices or :meth:`iter_chunks`).

    Parameters
    ----------
    paths : list of str
        One ``.npy`` file per chunk, in order.
    lengths : list of int
        The number of samples of each chunk (from the manifest).
    dtype : str
    sample_shape : tuple of int
        The shape of one sample (``()`` for per-sample scalars).
    """

    def __init__(self, paths: list[str], lengths: list[int], dtype: str, sample_shape: tuple):
        self.paths = list(paths)
        self.lengths = [int(n) for n in lengths]
        self.dtype = np.dtype(dtype)
        self.sample_shape = tuple(int(d) for d in sample_shape)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths, dtype=np.int64)])
        self._open: dict[int, np.ndarray] = {}

    @property
    def shape(self) -> tuple:
        return (int(self.offsets[-1]),) + self.sample_shape

    @property
    def ndim(self) -> int:
        return 1 + len(self.sample_shape)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __repr__(self) -> str:
        return f"ChunkedArray(shape={self.shape}, dtype={self.dtype}, chunks={len(self.paths)})"

    def chunk(self, i: int) -> np.ndarray:
        """Chunk ``i``, memory-mapped (read-only)."""
        if i not in self._open:
            path = self.paths[i]
            try:
                arr = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as error:
                raise ValueError(
                    f"chunk file {path!r}, listed as complete in the manifest, cannot be read ({error}): it was "
                    "changed or truncated after the run wrote it. Rerun with overwrite=True to recompute the run."
                ) from None
            expected = (self.lengths[i],) + self.sample_shape
            # a text field is as wide as the run's longest label; a chunk written before it was widened is narrower
            narrower_text = arr.dtype.kind == self.dtype.kind == "U" and arr.dtype.itemsize <= self.dtype.itemsize
            if arr.shape != expected or (arr.dtype != self.dtype and not narrower_text):
                raise ValueError(
                    f"chunk file {path!r} holds {arr.dtype} of shape {arr.shape}, but the manifest lists "
                    f"{self.dtype} of shape {expected}: it was changed after the run wrote it. Rerun with overwrite=True."
                )
            self._open[i] = arr
        return self._open[i]

    def iter_chunks(self) -> Iterator[np.ndarray]:
        """The chunks in order, each a memory-mapped array: a pass over a large run in bounded memory."""
        for i in range(len(self.paths)):
            yield self.chunk(i)

    def _rows(self, rows: np.ndarray) -> np.ndarray:
        """The samples at integer positions ``rows`` (any order), as one in-memory array."""
        out = np.empty((len(rows),) + self.sample_shape, self.dtype)
        which = np.searchsorted(self.offsets, rows, side="right") - 1
        for i in np.unique(which):
            here = which == i
            out[here] = self.chunk(int(i))[rows[here] - self.offsets[i]]
        return out

    def __getitem__(self, index):
        rest = ()
        if isinstance(index, tuple):
            index, rest = (index[0], index[1:]) if index else (slice(None), ())
        n = len(self)
        if isinstance(index, (int, np.integer)):
            i = int(index) + (n if index < 0 else 0)
            if not 0 <= i < n:
                raise IndexError(f"index {int(index)} is out of range for {n} samples.")
            c = int(np.searchsorted(self.offsets, i, side="right") - 1)
            return np.asarray(self.chunk(c)[(i - int(self.offsets[c]),) + rest]).astype(self.dtype, copy=False)
        if isinstance(index, slice):
            start, stop, step = index.indices(n)
            if step == 1:
                rows = np.arange(start, max(start, stop))
                parts = []
                for c in range(len(self.paths)):
                    lo, hi = max(start, self.offsets[c]), min(stop, self.offsets[c + 1])
                    if lo < hi:
                        parts.append(np.asarray(self.chunk(c)[lo - self.offsets[c] : hi - self.offsets[c]]))
                joined = np.concatenate(parts).astype(self.dtype, copy=False) if parts else \
                    np.empty((0,) + self.sample_shape, self.dtype)
                return joined[(slice(None),) + rest] if rest else joined
            rows = np.arange(start, stop, step)
        else:
            rows = np.asarray(index)
            if rows.dtype == bool:
                if rows.shape != (n,):
                    raise IndexError(f"a boolean index must have shape ({n},); got {rows.shape}.")
                rows = np.flatnonzero(rows)
            elif rows.dtype.kind not in "iu":
                raise IndexError(f"index with an int, a slice, a boolean mask or integer positions; got {rows.dtype}.")
            rows = np.where(rows < 0, rows + n, rows)
            if rows.size and (rows.min() < 0 or rows.max() >= n):
                raise IndexError(f"indices out of range for {n} samples.")
        out = self._rows(rows.reshape(-1)).reshape(rows.shape + self.sample_shape)
        return out[(slice(None),) * rows.ndim + rest] if rest else out

    def __iter__(self):
        for chunk in self.iter_chunks():
            yield from chunk

    def __array__(self, dtype=None, copy=None):
        whole = self[:]
        return whole.astype(dtype) if dtype is not None else whole


class RunStore:
    """Writes the chunks of a run in ``folder`` and keeps its manifest.

    Parameters
    ----------
    folder : str
        The run folder (created if missing).
    manifest : dict
        The manifest to continue (from :func:`read_manifest`), or a fresh one from :meth:`fresh`.
    """

    def __init__(self, folder: str, manifest: dict[str, Any]):
        self.folder = folder
        self.manifest = manifest
        os.makedirs(os.path.join(folder, CHUNKS), exist_ok=True)

    @staticmethod
    def fresh(fingerprint: dict[str, Any], **info) -> dict[str, Any]:
        """A manifest with no chunk yet."""
        return {"format": FORMAT, "version": VERSION, "fingerprint": fingerprint, "complete": False,
                "n_samples": 0, "n_batches": 0, "fields": None, "chunks": [], **info}

    @staticmethod
    def clear(folder: str, workers: bool = True) -> None:
        """Remove a run's own files from ``folder`` (its manifest and chunks), nothing else.

        ``workers``: also the workers' folders of a multi-worker run (``folder/workers/``).
        """
        for name in (MANIFEST, MANIFEST + ".partial"):
            path = os.path.join(folder, name)
            if os.path.exists(path):
                os.remove(path)
        for sub in (CHUNKS, WORKERS) if workers else (CHUNKS,):
            path = os.path.join(folder, sub)
            if os.path.isdir(path):
                shutil.rmtree(path)

    def chunk_path(self, index: int, field: str) -> str:
        return os.path.join(self.folder, CHUNKS, f"{index:06d}.{field}.npy")

    def write_chunk(self, arrays: dict[str, np.ndarray], n_batches: int) -> None:
        """Write one chunk's fields durably, then list it in the manifest (the commit point).

        A text field (labels) is widened in the manifest when this chunk's longest label is
        longer than the earlier chunks' (their files stay as they are; :class:`ChunkedArray`
        reads them at the wider width).

        Raises
        ------
        ValueError
            A field whose dtype or per-sample shape differs from the run's earlier chunks (e.g. a
            data source whose image size changes from batch to batch).
        """
        n = len(next(iter(arrays.values())))
        known = self.manifest["fields"]
        fields = merge_fields(known, fields_of(arrays))
        if fields is None:
            raise ValueError(
                f"batch {self.manifest['n_batches']} onwards gives {describe_difference(known, fields_of(arrays))}: "
                "every batch of the data must have the same image size and the same kind of labels."
            )
        index = len(self.manifest["chunks"])
        for key, arr in arrays.items():
            _write_durably(self.chunk_path(index, key), lambda f, arr=arr: np.save(f, np.ascontiguousarray(arr)))
        _fsync_dir(os.path.join(self.folder, CHUNKS))
        manifest = dict(self.manifest, fields=fields)
        manifest["chunks"] = self.manifest["chunks"] + [
            {"start": self.manifest["n_samples"], "n": int(n), "batches": int(n_batches)}
        ]
        manifest["n_samples"] = self.manifest["n_samples"] + int(n)
        manifest["n_batches"] = self.manifest["n_batches"] + int(n_batches)
        self.commit(manifest)

    def commit(self, manifest: dict[str, Any]) -> None:
        """Replace the manifest atomically (temporary file, fsync, rename, fsync of the folder)."""
        text = json.dumps(manifest, indent=1).encode("utf-8")
        _write_durably(os.path.join(self.folder, MANIFEST), lambda f: f.write(text))
        _fsync_dir(self.folder)
        self.manifest = manifest

    def finish(self) -> None:
        """Mark the run complete."""
        self.commit(dict(self.manifest, complete=True))


def field_arrays(folder: str, manifest: dict[str, Any]) -> dict[str, ChunkedArray]:
    """The run's fields as :class:`ChunkedArray` objects over the chunks the manifest lists."""
    fields = manifest.get("fields") or {}
    chunks = manifest["chunks"]
    lengths = [c["n"] for c in chunks]
    out = {}
    for key, info in fields.items():
        # a multi-worker run lists chunks kept in the workers' folders ("folder", "index": see runs/distribute.py)
        paths = [os.path.join(folder, c.get("folder", CHUNKS), f"{c.get('index', i):06d}.{key}.npy")
                 for i, c in enumerate(chunks)]
        out[key] = ChunkedArray(paths, lengths, info["dtype"], tuple(info["shape"]))
    return out

