"""The target type: what every ``targets=`` becomes (see :mod:`keras_gradcam.core.targets`).

A :class:`Target` has a static ``key``, per-sample ``rows``, ``shared`` data and a ``score`` in
graph code; a :class:`TargetBatch` is a target with the tensors of one batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, ClassVar

import keras
import numpy as np

__all__ = ["Target", "TargetBatch", "Negated", "data_key", "digest"]


class Target:
    """Base of every target: a static ``key``, per-sample ``rows``, ``shared`` data and a ``score``.

    Subclasses override :meth:`score` (graph code, keras.ops) and, where they hold data,
    :meth:`rows`, :meth:`shared` and :attr:`key`. See the module docstring.
    """

    #: whether the explained quantity is a class per sample (``Explanation.targets`` reports it)
    names_classes: ClassVar[bool] = False

    @property
    def key(self) -> Any:
        """Hashable: targets with equal keys (and data of equal shapes) share a compiled function."""
        return (type(self),)

    def rows(self, n: int) -> dict[str, np.ndarray]:
        """Per-sample data for ``n`` samples, each array with leading axis ``n``."""
        return {}

    def shared(self) -> dict[str, np.ndarray]:
        """Data passed whole to every batch."""
        return {}

    def check(self, n: int, capture) -> None:
        """Host-side checks before anything is traced (``capture`` is the explainer's capture)."""

    def score(self, outputs, rows: Mapping, shared: Mapping, capture):
        """Graph code: the ``(B,)`` scores of a batch from the model's outputs."""
        raise NotImplementedError

    def classes(self, outputs, rows: Mapping, shared: Mapping, capture):
        """Graph code: the ``(B,)`` int32 class explained per sample, or None (not a class)."""
        return None

    def with_classes(self, rows: Mapping, classes) -> dict:
        """The rows with the classes resolved on the clean inputs (class targets; others: as they are)."""
        return dict(rows)

    def describe(self) -> str:
        return repr(self)


class TargetBatch:
    """A target with the tensors of one batch (graph code): what :class:`Capture` explains."""

    def __init__(self, target: Target, rows: Mapping | None = None, shared: Mapping | None = None):
        self.target, self.rows, self.shared = target, dict(rows or {}), dict(shared or {})

    @property
    def names_classes(self) -> bool:
        return self.target.names_classes

    def score(self, outputs, capture):
        return self.target.score(outputs, self.rows, self.shared, capture)

    def classes(self, outputs, capture):
        return self.target.classes(outputs, self.rows, self.shared, capture)

    def tile(self, k) -> TargetBatch:
        """The rows of ``k`` variants of each sample, variant-major (row ``j * B + b`` is sample ``b``)."""
        rows = {name: keras.ops.tile(r, [k] + [1] * (len(r.shape) - 1)) for name, r in self.rows.items()}
        return TargetBatch(self.target, rows, self.shared)

    def negated(self) -> TargetBatch:
        """The same target scoring ``-score`` (counterfactual explanations), its classes unchanged."""
        return TargetBatch(Negated(self.target), self.rows, self.shared)

    def with_classes(self, classes) -> TargetBatch:
        """Class targets with ``-1`` (top-1) replaced by the classes resolved on the clean inputs."""
        return TargetBatch(self.target, self.target.with_classes(self.rows, classes), self.shared)


class Negated(Target):
    """``-score`` of another target, with its classes (graph code; see :meth:`TargetBatch.negated`)."""

    def __init__(self, target: Target):
        self.target = target
        self.names_classes = target.names_classes

    @property
    def key(self):
        return (Negated, self.target.key)

    def score(self, outputs, rows, shared, capture):
        return -keras.ops.cast(self.target.score(outputs, rows, shared, capture), "float32")

    def classes(self, outputs, rows, shared, capture):
        return self.target.classes(outputs, rows, shared, capture)

    def with_classes(self, rows, classes) -> dict:
        return self.target.with_classes(rows, classes)


def data_key(rows: Mapping, shared: Mapping) -> tuple:
    """What the compiled function's signature depends on in a target's data: names, dtypes, shapes."""
    return (
        tuple((k, v.dtype.str, v.shape[1:]) for k, v in sorted(rows.items())),
        tuple((k, v.dtype.str, v.shape) for k, v in sorted(shared.items())),
    )


# -- class indices -------------------------------------------------------------------------------


def digest(array: np.ndarray | None) -> tuple | None:
    """A hashable stand-in for an array: its dtype, shape and a hash of its bytes."""
    if array is None:
        return None
    array = np.ascontiguousarray(array)
    return (array.dtype.str, array.shape, hashlib.sha1(array.tobytes()).hexdigest())
