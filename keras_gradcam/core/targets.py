"""What is explained, as data: one target type for class indices, target objects and callables.

Every ``targets=`` an explainer accepts (None, an int, one int per sample, a :class:`ClassTarget`,
an :class:`OutputTarget`, a dense-prediction target, any callable ``outputs -> (N,)``) becomes a
:class:`Target` (:func:`as_target`), which says

* ``key``: what the compiled function depends on (equal keys trace one function);
* ``rows(n)``: per-sample data, a dict of arrays with leading axis ``n`` (class indices, ``-1``
  for the sample's top-1 class; per-image masks, boxes), cut per batch like the images;
* ``shared()``: data given whole to every batch (one mask for all images; the numbers a
  ``lambda`` captures);
* ``score(outputs, rows, shared, capture)``: graph code, the ``(B,)`` scores of a batch.

So every kind of target goes through batching the same way (``batch_size`` is free for per-image
masks), and a new target whose key is not new (``ClassTarget(k)`` for another ``k``; the same
``lambda out, k=k: out[:, k]`` with another ``k``) reuses the compiled function.

In graph code a target travels with its data as a :class:`TargetBatch`. The type itself is in
:mod:`keras_gradcam.core.target_base`, callables in :mod:`keras_gradcam.core.callable_target`.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Union

import keras
import numpy as np

from .callable_target import CallableTarget, replacement
from .target_base import Negated, Target, TargetBatch, data_key, digest
from .validate import ClassIndexError

Targets = Union[None, int, Sequence[int], np.ndarray, Callable]  # noqa: UP007 - a runtime alias

__all__ = [
    "Target",
    "TargetBatch",
    "ClassIndices",
    "CallableTarget",
    "ClassTarget",
    "OutputTarget",
    "as_target",
    "resolve_targets",
    "class_scores",
    "check_range",
    "pick_output",
    "data_key",
    "digest",
    "batch_of",
    "check_rows",
    "BoundTarget",
    "Negated",
    "replacement",
]


def batch_of(targets) -> TargetBatch:
    """``targets`` as a :class:`TargetBatch`: as is, an int tensor of classes, or a plain callable."""
    if isinstance(targets, TargetBatch):
        return targets
    if callable(targets):
        return TargetBatch(targets if isinstance(targets, Target) else CallableTarget(targets, as_data=False))
    return TargetBatch(ClassIndices(), {"classes": targets})


class ClassIndices(Target):
    """One class per sample (``-1``: the sample's top-1 class) of the explained output.

    What ``targets=None``, an int or a sequence of ints become. The output is the one
    :meth:`Capture.select` picks (a one-unit sigmoid as two classes).
    """

    names_classes = True

    def __init__(self, classes: np.ndarray | None = None):
        self._classes = classes

    def rows(self, n: int) -> dict[str, np.ndarray]:
        return {"classes": np.full((n,), -1, np.int32) if self._classes is None else self._classes}

    def check(self, n: int, capture) -> None:
        if self._classes is not None:
            check_range(self._classes, capture.num_classes())

    def score(self, outputs, rows, shared, capture):
        return class_scores(capture.select(outputs), rows["classes"])[0]

    def classes(self, outputs, rows, shared, capture):
        return class_scores(capture.select(outputs), rows["classes"])[1]

    def with_classes(self, rows, classes) -> dict:
        return {**rows, "classes": classes}

    def __repr__(self) -> str:
        return "ClassIndices(top-1)" if self._classes is None else f"ClassIndices({self._classes.tolist()})"


@dataclass(frozen=True)
class ClassTarget(Target):
    """The score of class ``index`` of one output, as a reusable target object.

    All class targets of one output share one compiled function: the index is passed to it as
    data. For one class of a single-output classifier an int target (``targets=3``) does the
    same; a target object is for multi-output models, or to keep one object for a loop.

    Parameters
    ----------
    index : int
        The class.
    output : int or str, optional
        Which output of a multi-output model (position in flatten order, or name of a dict
        output); None for a single-output model.

    Examples
    --------
    >>> t = ClassTarget(2, output=1)
    >>> t == ClassTarget(2, output=1), hash(t) == hash(ClassTarget(2, output=1))
    (True, True)
    """

    index: int
    output: int | str | None = None

    @property
    def key(self):
        return (ClassTarget, self.output)

    def rows(self, n: int) -> dict[str, np.ndarray]:
        return {"index": np.full((n,), int(self.index), np.int32)}

    def check(self, n: int, capture) -> None:
        if isinstance(self.index, bool) or not isinstance(self.index, numbers.Integral):
            raise TypeError(f"ClassTarget's index must be an int class index; got {self.index!r}.")
        if self.index < 0:
            raise ClassIndexError(f"ClassTarget's index must be >= 0; got {self.index}.")
        try:
            out = pick_output(list(capture.model.outputs), self.output)
        except (AttributeError, TypeError, ValueError):
            return  # no symbolic outputs (a subclassed model): nothing to check against
        shape = tuple(out.shape)
        if len(shape) >= 2 and shape[1] is not None:
            check_range(np.asarray([self.index]), int(shape[1]))

    def score(self, outputs, rows, shared, capture):
        out = pick_output(outputs, self.output)
        return keras.ops.take_along_axis(out, keras.ops.reshape(rows["index"], [-1] + [1] * (len(out.shape) - 1)), axis=1)[:, 0]

    def __call__(self, outputs):
        return pick_output(outputs, self.output)[:, self.index]


@dataclass(frozen=True)
class OutputTarget(Target):
    """Reduce one output to a score per sample: its sum (``reduce="sum"``) or mean over all but the batch axis.

    For regression heads, segmentation logits summed over the image, or one output of a
    multi-output model. Equal targets share one compiled function, like :class:`ClassTarget`.

    Parameters
    ----------
    output : int or str, optional
        Which output (None for a single-output model).
    reduce : {"sum", "mean"}, default="sum"
    """

    output: int | str | None = None
    reduce: str = "sum"

    def __post_init__(self):
        if self.reduce not in ("sum", "mean"):
            raise ValueError(f"reduce must be 'sum' or 'mean'; got {self.reduce!r}.")

    @property
    def key(self):
        return (OutputTarget, self.output, self.reduce)

    def score(self, outputs, rows, shared, capture):
        return self(outputs)

    def __call__(self, outputs):
        out = keras.ops.cast(pick_output(outputs, self.output), "float32")
        axes = list(range(1, len(out.shape)))
        if not axes:
            return out
        return keras.ops.sum(out, axis=axes) if self.reduce == "sum" else keras.ops.mean(out, axis=axes)


# -- any callable ----------------------------------------------------------------------------------
def as_target(targets: Targets, n: int) -> Target:
    """``targets=`` of an explainer call as a :class:`Target` for ``n`` samples.

    Raises
    ------
    TypeError
        ``targets`` is not None, an int, a sequence of ints or a callable.
    ValueError
        A sequence whose length is not the number of samples, or a target holding per-sample
        rows (per-image masks, boxes) for another number of samples.
    ClassIndexError
        A negative class index (an ``IndexError`` and a ``ValueError``).
    """
    if isinstance(targets, Target):
        return targets
    if callable(targets):
        return CallableTarget(targets)
    return ClassIndices(None if targets is None else resolve_targets(targets, n))


def check_rows(target: Target, rows: Mapping, n: int) -> None:
    """Raise ``ValueError`` if a target's per-sample data does not have one row per sample."""
    for name, r in rows.items():
        if r.shape[0] != n:
            raise ValueError(
                f"{target.describe()} holds {r.shape[0]} per-image entries ({name}) but {n} images are explained: "
                "give one per image, or a single one for all."
            )


def resolve_targets(targets: Targets, n: int) -> np.ndarray | Callable:
    """Turn ``targets=`` into int32 ``(n,)`` (``-1`` = top-1 of that sample) or keep a callable.

    Raises
    ------
    TypeError
        ``targets`` is not None, an int, a sequence of ints or a callable.
    ValueError
        A sequence whose length is not the number of samples.
    ClassIndexError
        A negative class index (an ``IndexError`` and a ``ValueError``).
    """
    if callable(targets):
        return targets
    if targets is None:
        return np.full((n,), -1, np.int32)
    arr = np.asarray(targets)
    if arr.dtype.kind not in "iu" or arr.ndim > 1:
        raise TypeError(
            "targets must be None (top-1 class), an int class index, one int per sample, or a callable "
            f"outputs -> (N,) scores; got {type(targets).__name__} {arr.dtype} of shape {arr.shape}."
        )
    if arr.ndim == 0:
        arr = np.full((n,), int(arr))
    if arr.shape[0] != n:
        raise ValueError(f"targets has {arr.shape[0]} entries but there are {n} samples; give one class per sample or a single int.")
    if (arr < 0).any():
        raise ClassIndexError(f"class indices must be >= 0; got {arr[arr < 0][:5].tolist()}.")
    return arr.astype(np.int32)


def check_range(targets: np.ndarray, num_classes: int | None) -> None:
    """Raise :class:`~keras_gradcam.core.validate.ClassIndexError` (an ``IndexError`` and a
    ``ValueError``) naming the valid range if a class index is too large."""
    if num_classes is None:
        return
    bad = targets[targets >= num_classes]
    if bad.size:
        raise ClassIndexError(
            f"class index {int(bad[0])} is out of range: the explained output has {num_classes} classes, "
            f"so valid targets are 0 .. {num_classes - 1}."
        )


def pick_output(outputs, output):
    if isinstance(outputs, dict) and isinstance(output, str):
        if output not in outputs:
            raise ValueError(f"output={output!r} is not an output of the model; its outputs are {list(outputs)}.")
        return outputs[output]
    flat = keras.tree.flatten(outputs)
    if output is None:
        if len(flat) != 1:
            raise ValueError(f"the model has {len(flat)} outputs; say which one with output=<index or name>.")
        return flat[0]
    if not isinstance(output, int) or not 0 <= output < len(flat):
        raise ValueError(f"output={output!r} is out of range: the model has {len(flat)} output(s).")
    return flat[output]


def class_scores(output, targets):
    """Scores of the target classes, in graph code.

    Parameters
    ----------
    output : tensor of shape (B, num_classes)
    targets : tensor of shape (B,) int32, or None
        ``-1`` (or None) selects the top-1 class of each sample.

    Returns
    -------
    scores : (B,) float32, resolved targets : (B,) int32, predictions : (B,) int32
    """
    if len(output.shape) != 2:
        raise ValueError(
            f"class targets need an output of shape (N, num_classes), but the explained output has shape "
            f"{tuple(output.shape)}. Pass a callable target that reduces it to one score per sample, e.g. "
            "targets=lambda out: tf.reduce_mean(out[..., 1], axis=[1, 2])."
        )
    output = keras.ops.cast(output, "float32")
    predictions = keras.ops.cast(keras.ops.argmax(output, axis=-1), "int32")
    if targets is None:
        targets = predictions
    else:
        targets = keras.ops.cast(targets, "int32")
        targets = keras.ops.where(targets < 0, predictions, targets)
    scores = keras.ops.take_along_axis(output, targets[:, None], axis=1)[:, 0]
    return scores, targets, predictions


class BoundTarget:
    """A target with its data for the ``n`` samples of one call (host side): what the engine batches."""

    def __init__(self, target: Target, rows: Mapping, shared: Mapping):
        self.target, self.rows, self.shared = target, dict(rows), dict(shared)

    @classmethod
    def of(cls, targets: Targets, n: int) -> BoundTarget:
        """``targets=`` for ``n`` samples (see :func:`as_target`), its rows checked."""
        target = as_target(targets, n)
        rows = {k: np.asarray(v) for k, v in target.rows(n).items()}
        check_rows(target, rows, n)
        return cls(target, rows, {k: np.asarray(v) for k, v in target.shared().items()})

    @property
    def key(self) -> tuple:
        """The target's key and the names, dtypes and shapes of its data."""
        return (self.target.key, data_key(self.rows, self.shared))

    @property
    def names_classes(self) -> bool:
        return self.target.names_classes

    def take(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """The rows of samples ``start:stop``."""
        return {k: v[start:stop] for k, v in self.rows.items()}

    def specs(self) -> list:
        """The input signature of the data (``keras.KerasTensor``): rows with a free leading axis,
        shared data as it is."""
        return [
            {k: keras.KerasTensor((None,) + v.shape[1:], v.dtype.name) for k, v in self.rows.items()},
            {k: keras.KerasTensor(v.shape, v.dtype.name) for k, v in self.shared.items()},
        ]

    def constants(self) -> BoundTarget:
        """A callable target with its captured numbers as Python values (see :meth:`CallableTarget.constants`)."""
        return BoundTarget(self.target.constants(), self.rows, {})


