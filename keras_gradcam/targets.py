"""What is explained: a class per sample, or any scalar a callable computes from the outputs."""

from __future__ import annotations

from typing import Callable, Sequence, Union

import numpy as np
import tensorflow as tf

Targets = Union[None, int, Sequence[int], np.ndarray, Callable]

__all__ = ["resolve_targets", "class_scores", "check_range"]


def resolve_targets(targets: Targets, n: int) -> np.ndarray | Callable:
    """Turn ``targets=`` into int32 ``(n,)`` (``-1`` = top-1 of that sample) or keep a callable.

    Raises
    ------
    TypeError
        ``targets`` is not None, an int, a sequence of ints or a callable.
    ValueError
        A sequence whose length is not the number of samples.
    IndexError
        A negative class index.
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
        raise IndexError(f"class indices must be >= 0; got {arr[arr < 0][:5].tolist()}.")
    return arr.astype(np.int32)


def check_range(targets: np.ndarray, num_classes: int | None) -> None:
    """Raise ``IndexError`` naming the valid range if a class index is too large."""
    if num_classes is None:
        return
    bad = targets[targets >= num_classes]
    if bad.size:
        raise IndexError(
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
