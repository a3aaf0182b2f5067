"""The result of an explainer: maps, targets and scores of a batch, as numpy arrays."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

__all__ = ["Explanation"]


@dataclass
class Explanation:
    """Heatmaps of a batch and what they explain.

    Attributes
    ----------
    heatmaps : ndarray of shape (n_samples, *input_spatial_dims), float32
        One map per sample at input resolution, min-max normalised to [0, 1].
    layer_heatmaps : ndarray of shape (n_samples, *layer_spatial_dims), float32
        The map after the method's ReLU, before resizing and normalisation (for several fused
        layers: the fused map at the finest layer's resolution).
    targets : ndarray of shape (n_samples,), int, or None
        The explained class of each sample; None when a callable target was used.
    scores : ndarray of shape (n_samples,), float32
        The explained score of each sample (the pre-softmax logit by default).
    layer : str or tuple of str
        Path of the explained layer(s).
    method : str
        Name of the method, as in :data:`keras_gradcam.METHODS`.
    predictions : ndarray of shape (n_samples,), int, or None
        Top-1 class of each sample (None when the output is not ``(N, classes)``).
    attributions : ndarray shaped like the input, or None
        Input-resolution, per-channel attributions (guided methods only).
    extras : dict
        Method-specific arrays (e.g. channel weights), one leading sample axis each.

    Examples
    --------
    >>> exp = kg.explain(model, images)          # doctest: +SKIP
    >>> len(exp), exp.heatmaps.shape             # doctest: +SKIP
    (8, (8, 64, 64))
    >>> exp[:2].targets                          # doctest: +SKIP
    """

    heatmaps: np.ndarray
    layer_heatmaps: np.ndarray
    targets: np.ndarray | None
    scores: np.ndarray
    layer: str | tuple
    method: str
    predictions: np.ndarray | None = None
    attributions: np.ndarray | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    _PER_SAMPLE = ("heatmaps", "layer_heatmaps", "targets", "scores", "predictions", "attributions")

    def __len__(self) -> int:
        return int(self.heatmaps.shape[0])

    def __getitem__(self, index) -> "Explanation":
        """A sub-batch; an int index keeps the sample axis (``exp[0]`` has length 1)."""
        if isinstance(index, (int, np.integer)):
            n = len(self)
            if not -n <= index < n:
                raise IndexError(f"index {index} out of range for an Explanation of {n} samples.")
            index = slice(index, index + 1 if index != -1 else None)
        take = {f: (getattr(self, f)[index] if getattr(self, f) is not None else None) for f in self._PER_SAMPLE}
        extras = {k: v[index] for k, v in self.extras.items()}
        return replace(self, extras=extras, **take)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        t = None if self.targets is None else self.targets.tolist()[:8]
        return (
            f"Explanation(method={self.method!r}, layer={self.layer!r}, n={len(self)}, "
            f"heatmaps={self.heatmaps.shape}, layer_heatmaps={self.layer_heatmaps.shape}, targets={t})"
        )

    @classmethod
    def concatenate(cls, parts: list["Explanation"]) -> "Explanation":
        """Join explanations of consecutive batches made by the same explainer."""
        first = parts[0]
        joined = {}
        for f in fields(cls):
            values = [getattr(p, f.name) for p in parts]
            if f.name in cls._PER_SAMPLE:
                joined[f.name] = None if values[0] is None else np.concatenate(values, axis=0)
            elif f.name == "extras":
                joined[f.name] = {k: np.concatenate([p.extras[k] for p in parts]) for k in first.extras}
            else:
                joined[f.name] = values[0]
        return cls(**joined)
