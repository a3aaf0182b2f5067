"""Steps every method shares, written once: channel sums, resizing and normalisation.

Maps are float32 tensors ``(B, *spatial)`` (1, 2 or 3 spatial axes); activations and gradients
are ``(B, *spatial, K)``, channels last.
"""

from __future__ import annotations

import tensorflow as tf

EPS = 1e-8

__all__ = ["spatial_sum", "spatial_mean", "weighted_sum", "resize", "normalize", "EPS"]


def _spatial_axes(t: tf.Tensor) -> list[int]:
    return list(range(1, t.shape.rank - 1))


def spatial_sum(t: tf.Tensor, keepdims: bool = False) -> tf.Tensor:
    """Sum over the spatial axes of ``(B, *spatial, K)``: ``(B, K)``."""
    return tf.reduce_sum(t, axis=_spatial_axes(t), keepdims=keepdims)


def spatial_mean(t: tf.Tensor, keepdims: bool = False) -> tf.Tensor:
    """Mean over the spatial axes of ``(B, *spatial, K)``: ``(B, K)``."""
    return tf.reduce_mean(t, axis=_spatial_axes(t), keepdims=keepdims)


def weighted_sum(acts: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """``sum_k w_k A^k``: weights ``(B, K)`` per channel or ``(B, *spatial, K)`` per position."""
    if weights.shape.rank == 2:
        weights = tf.reshape(weights, [tf.shape(weights)[0]] + [1] * (acts.shape.rank - 2) + [-1])
    return tf.reduce_sum(acts * weights, axis=-1)


def _resize_axis(t: tf.Tensor, axis: int, size: int) -> tf.Tensor:
    """Linear interpolation along one axis with half-pixel centres (``tf.image.resize`` bilinear)."""
    n = t.shape[axis]
    if n == size:
        return t
    pos = (tf.range(size, dtype=tf.float32) + 0.5) * (n / size) - 0.5
    pos = tf.clip_by_value(pos, 0.0, float(n - 1))
    lo = tf.floor(pos)
    frac = pos - lo
    lo = tf.cast(lo, tf.int32)
    hi = tf.minimum(lo + 1, n - 1)
    shape = [1] * t.shape.rank
    shape[axis] = size
    frac = tf.reshape(frac, shape)
    return tf.gather(t, lo, axis=axis) * (1.0 - frac) + tf.gather(t, hi, axis=axis) * frac


def resize(maps: tf.Tensor, size) -> tf.Tensor:
    """Resize ``(B, *spatial)`` maps to ``size`` by separable linear interpolation.

    In 2-D this is bilinear interpolation with half-pixel centres, the same as
    ``tf.image.resize(method="bilinear")``, PyTorch ``align_corners=False`` and
    ``cv2.INTER_LINEAR``; in 1-D and 3-D it is the linear and trilinear
    analogue.
    """
    for axis, s in enumerate(size, start=1):
        maps = _resize_axis(maps, axis, int(s))
    return maps


def normalize(maps: tf.Tensor, eps: float = EPS) -> tf.Tensor:
    """Per-sample min-max to [0, 1]; a constant map (``max - min <= eps``) becomes all zeros."""
    axes = list(range(1, maps.shape.rank))
    lo = tf.reduce_min(maps, axis=axes, keepdims=True)
    hi = tf.reduce_max(maps, axis=axes, keepdims=True)
    span = hi - lo
    out = tf.math.divide_no_nan(maps - lo, span)
    return tf.where(span > eps, out, tf.zeros_like(maps))
