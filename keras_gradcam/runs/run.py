"""A run read back from disk: :class:`Run` and :func:`load_run`."""

from __future__ import annotations

import os

import numpy as np

from ..core.explanation import Explanation
from .store import FIELDS, ChunkedArray, field_arrays, read_manifest

__all__ = ["Run", "load_run"]


class Run:
    """The results of :func:`keras_gradcam.explain_dataset`, read memory-mapped from its folder.

    Every per-sample field is a :class:`~keras_gradcam.runs.store.ChunkedArray`: indexing it
    (``run.heatmaps[10:20]``, ``run.scores[mask]``) reads only those rows from disk, and
    ``np.asarray(run.scores)`` reads the whole field.

    Attributes
    ----------
    path : str
        The run folder.
    heatmaps : ChunkedArray of shape (n_samples, *input_spatial_dims), float32
        One map per sample at input resolution, in [0, 1], as :func:`keras_gradcam.explain` gives.
    layer_heatmaps : ChunkedArray of shape (n_samples, *layer_spatial_dims), float32
    targets : ChunkedArray of shape (n_samples,), int64, or None
        The explained class of each sample; None for a callable target.
    scores : ChunkedArray of shape (n_samples,), float32
    predictions : ChunkedArray of shape (n_samples,), int64, or None
    labels : ChunkedArray of shape (n_samples, ...) or None
        The labels as the data gave them; None when the data has none.
    finite : ChunkedArray of shape (n_samples,), bool
    method : str
    layer : str or tuple of str
    complete : bool
        False for a run that was interrupted: its fields hold the samples of its complete chunks.
    manifest : dict
        The run's ``manifest.json`` (fingerprint, chunks, versions).
    """

    def __init__(self, path: str, manifest: dict):
        self.path = os.fspath(path)
        self.manifest = manifest
        arrays = field_arrays(self.path, manifest)
        for name in FIELDS:
            setattr(self, name, arrays.get(name))
        layer = manifest.get("layer")
        self.layer = tuple(layer) if isinstance(layer, list) else layer
        self.method = manifest["fingerprint"]["config"]["method"]
        self.complete = bool(manifest["complete"])

    def __len__(self) -> int:
        return int(self.manifest["n_samples"])

    def __repr__(self) -> str:
        shape = None if self.heatmaps is None else self.heatmaps.shape
        state = "complete" if self.complete else "incomplete"
        return f"Run({self.path!r}, method={self.method!r}, layer={self.layer!r}, n={len(self)}, heatmaps={shape}, {state})"

    def explanation(self, index=slice(None)) -> Explanation:
        """Samples ``index`` (a slice, a boolean mask or integer positions) as an in-memory :class:`Explanation`.

        Examples
        --------
        >>> exp = run.explanation(slice(0, 8))        # doctest: +SKIP
        >>> kg.plot(exp, images[:8])                  # doctest: +SKIP
        """
        if isinstance(index, (int, np.integer)):
            index = slice(int(index), int(index) + 1 if index != -1 else None)

        def take(field: ChunkedArray | None):
            return None if field is None else field[index]

        return Explanation(
            heatmaps=take(self.heatmaps),
            layer_heatmaps=take(self.layer_heatmaps),
            targets=take(self.targets),
            scores=take(self.scores),
            layer=self.layer,
            method=self.method,
            predictions=take(self.predictions),
            finite=take(self.finite),
        )


def load_run(path) -> Run:
    """The run that :func:`keras_gradcam.explain_dataset` wrote in ``path``, in this or another process.

    Parameters
    ----------
    path : str or os.PathLike
        The folder given as ``out=``.

    Returns
    -------
    Run
        Only the chunks the manifest lists are read; ``run.complete`` is False for a run that was
        interrupted (rerun ``explain_dataset`` with the same arguments to finish it).

    Raises
    ------
    FileNotFoundError
        ``path`` holds no run manifest.
    ValueError
        ``path/manifest.json`` is not the manifest of a run.
    """
    path = os.fspath(path)
    manifest = read_manifest(path)
    if manifest is None:
        raise FileNotFoundError(
            f"{os.path.join(path, 'manifest.json')!r} does not exist: {path!r} holds no explain_dataset run "
            "(none was started there, or it was killed before its first chunk was complete)."
        )
    return Run(path, manifest)
