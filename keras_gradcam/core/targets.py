"""What is explained: a class per sample, or any scalar a callable computes from the outputs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Union

import keras
import numpy as np
import tensorflow as tf

from .validate import ClassIndexError

Targets = Union[None, int, Sequence[int], np.ndarray, Callable]  # noqa: UP007 - a runtime alias

__all__ = ["ClassTarget", "OutputTarget", "resolve_targets", "class_scores", "check_range", "pick_output"]


@dataclass(frozen=True)
class ClassTarget:
    """The score of class ``index`` of one output, as a reusable target object.

    Equal targets compare and hash equal, so an explainer traces one compiled function for all of
    them (a new ``lambda`` on every call traces a new one each time). For one class of a
    single-output classifier an int target (``targets=3``) does the same; a target object is for
    multi-output models, or to keep one object for a loop.

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

    def __call__(self, outputs) -> tf.Tensor:
        return pick_output(outputs, self.output)[:, self.index]


@dataclass(frozen=True)
class OutputTarget:
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

    def __call__(self, outputs) -> tf.Tensor:
        out = tf.cast(pick_output(outputs, self.output), tf.float32)
        axes = list(range(1, out.shape.rank))
        if not axes:
            return out
        return tf.reduce_sum(out, axis=axes) if self.reduce == "sum" else tf.reduce_mean(out, axis=axes)


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


def class_scores(output, targets):
    """Scores of the target classes, in graph code.

    Parameters
    ----------
    output : tf.Tensor of shape (B, num_classes)
    targets : tf.Tensor of shape (B,) int32, or None
        ``-1`` (or None) selects the top-1 class of each sample.

    Returns
    -------
    scores : (B,) float32, resolved targets : (B,) int32, predictions : (B,) int32
    """
    if output.shape.rank != 2:
        raise ValueError(
            f"class targets need an output of shape (N, num_classes), but the explained output has shape "
            f"{tuple(output.shape)}. Pass a callable target that reduces it to one score per sample, e.g. "
            "targets=lambda out: tf.reduce_mean(out[..., 1], axis=[1, 2])."
        )
    output = tf.cast(output, tf.float32)
    predictions = tf.argmax(output, axis=-1, output_type=tf.int32)
    if targets is None:
        targets = predictions
    else:
        targets = tf.where(targets < 0, predictions, tf.cast(targets, tf.int32))
    scores = tf.gather(output, targets, batch_dims=1)
    return scores, targets, predictions
