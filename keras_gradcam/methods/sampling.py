"""Drivers for methods that run the model on many variants of each sample (noise draws, path points).

Smooth Grad-CAM++ averages over noisy copies of the input and Integrated Grad-CAM integrates along
a path from a baseline; both run the same loop: pass ``chunk`` variants of every sample through
the capture at a time, folding each pass into an accumulator, inside one compiled function
(``keras.ops`` only).
"""

from __future__ import annotations

import keras

from ..core.capture import Capture
from ..core.targets import batch_of

__all__ = ["by_variant", "join_variants", "repeated_passes"]


def by_variant(t, k):
    """``(k * B, ...)`` laid out variant-major -> ``(k, B, ...)``."""
    return keras.ops.reshape(t, (k, -1, *keras.ops.shape(t)[1:]))


def join_variants(t):
    """``(k, B, ...)`` -> ``(k * B, ...)``, variant-major: the inverse of :func:`by_variant`."""
    return keras.ops.reshape(t, (-1, *keras.ops.shape(t)[2:]))


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

    def one_pass(start, size, acc):
        idx = keras.ops.arange(size, dtype="int32") + start
        tk = batch_of(targets).tile(size)
        return fold(acc, idx, capture(variants(idx), tk, gradients=gradients))

    # every pass has a static size (JAX traces fixed shapes): the full passes in a loop, then the rest
    full, rest = divmod(count, chunk)
    acc = init
    if full:
        _, acc = keras.ops.while_loop(
            lambda start, acc: start < full * chunk,
            lambda start, acc: (start + chunk, one_pass(start, chunk, acc)),
            (keras.ops.convert_to_tensor(0, "int32"), acc),
        )
    if rest:
        acc = one_pass(full * chunk, rest, acc)
    return acc
