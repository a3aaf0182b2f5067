"""One call of an explainer: what its stages share (the inputs, the target with its data, the batches)."""

from __future__ import annotations

import dataclasses
from typing import Any

from .inputs import batch_slice
from .targets import BoundTarget

__all__ = ["Call"]


@dataclasses.dataclass
class Call:
    """One call of an explainer, as its stages see it (made by :meth:`keras_gradcam.core.engine.Explainer.prepare`).

    Attributes
    ----------
    images : array-like
        The images as given (raw, before a KerasHub preprocessor).
    inputs : ndarray, or a list/dict of them
        The prepared model inputs, ``n`` samples.
    target : BoundTarget
        The target with its per-sample rows and shared data; :meth:`data` cuts them per batch.
    n : int
        Number of samples.
    batch_size : int
        The largest number of images in one forward pass.
    size : tuple
        Spatial size of the heatmaps.
    raw_size : tuple or None
        The raw images' size when a KerasHub preprocessor resized them.
    per_batch : int
        Samples per batch, from :meth:`~keras_gradcam.core.engine.Explainer.plan`.
    chunk : int
        Variants of each sample per pass (noise draws, path points).
    state : dict
        Scratch space of the method for this call (a progress bar, options of the call, its
        compiled functions).
    """

    images: Any
    inputs: Any
    target: BoundTarget
    n: int
    batch_size: int
    size: tuple = ()
    raw_size: tuple | None = None
    per_batch: int = 1
    chunk: int = 1
    state: dict = dataclasses.field(default_factory=dict)

    def batch(self, start: int, stop: int):
        """The inputs of samples ``start:stop``."""
        return batch_slice(self.inputs, start, stop)

    def data(self, start: int, stop: int) -> tuple:
        """The target's rows of samples ``start:stop`` and its shared data: the last two arguments of a
        function compiled by :meth:`Explainer.compile`."""
        return self.target.take(start, stop), self.target.shared
