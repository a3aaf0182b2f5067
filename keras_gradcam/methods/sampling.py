"""Drivers for methods that run the model on many variants of each sample (noise draws, path points).

Smooth Grad-CAM++ averages over noisy copies of the input and Integrated Grad-CAM integrates along
a path from a baseline; both run the same loop: pass ``chunk`` variants of every sample through
the capture at a time, folding each pass into an accumulator, inside one compiled function.
"""

from __future__ import annotations

import tensorflow as tf

from ..core.capture import Capture
from ..core.targets import batch_of

__all__ = ["by_variant", "join_variants", "repeated_passes"]


def by_variant(t: tf.Tensor, k) -> tf.Tensor:
    """``(k * B, ...)`` laid out variant-major -> ``(k, B, ...)``."""
    return tf.reshape(t, tf.concat([[k, -1], tf.shape(t)[1:]], axis=0))


def join_variants(t: tf.Tensor) -> tf.Tensor:
    """``(k, B, ...)`` -> ``(k * B, ...)``, variant-major: the inverse of :func:`by_variant`."""
    return tf.reshape(t, tf.concat([[-1], tf.shape(t)[2:]], axis=0))


def repeated_passes(capture: Capture, count: int, chunk: int, variants, targets, fold, init, gradients: bool = True):
    """Run the capture on ``count`` variants of every sample, ``chunk`` variants per pass.

    Graph code for methods that expand each sample (noise draws, path points). The variants
    of a pass are laid out variant-major: row ``j * B + b`` is variant ``j`` of sample ``b``.

    Parameters
    ----------
    capture : Capture
        The explainer's capture; call inside a function traced under its ``active()``.
    count, chunk : int
        Number of variants, and how many go through the model together.
    variants : callable ``idx (k,) int32 -> inputs of k * B samples``
    targets : TargetBatch (or a (B,) int32 tensor of classes), tiled for the variants of each pass
    fold : callable ``(acc, idx, Captured) -> acc``
    init : nested tensors, the initial accumulator
    gradients : bool, default=True
        Whether each pass computes the gradients at the layer.
    """

    def body(start, acc):
        idx = tf.range(start, tf.minimum(start + chunk, count))
        tk = batch_of(targets).tile(tf.shape(idx)[0])
        return start + chunk, fold(acc, idx, capture(variants(idx), tk, gradients=gradients))

    _, acc = tf.while_loop(lambda start, acc: start < count, body, (tf.constant(0), init))
    return acc
