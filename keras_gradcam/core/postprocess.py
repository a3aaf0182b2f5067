"""Steps every method shares, written once: channel sums, resizing and normalisation.

Maps are float32 tensors ``(B, *spatial)`` (1, 2 or 3 spatial axes); activations and gradients
are ``(B, *spatial, K)``, channels last.
"""

from __future__ import annotations

import tensorflow as tf

EPS = 1e-8
RELATIVE_EPS = 1e-6  # a map whose range is below this fraction of its magnitude is float rounding

__all__ = ["spatial_sum", "spatial_mean", "weighted_sum", "resize", "normalize", "nonconstant", "eigen_map", "EPS", "RELATIVE_EPS"]


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


def nonconstant(maps: tf.Tensor, keepdims: bool = False, eps: float = RELATIVE_EPS) -> tf.Tensor:
    """Per sample, whether a ``(B, ...)`` map varies: ``max - min > eps * max(|max|, |min|)``.

    The threshold is relative to the map's own magnitude, so the answer does not depend on the
    model's scale (a head scaled by 1e-9 gives maps of 1e-20 that are as informative as before);
    a range of a few float32 rounding steps of the values counts as constant. Non-finite maps are
    constant (they carry no information).
    """
    axes = list(range(1, maps.shape.rank))
    lo = tf.reduce_min(maps, axis=axes, keepdims=keepdims)
    hi = tf.reduce_max(maps, axis=axes, keepdims=keepdims)
    span = hi - lo
    magnitude = tf.maximum(tf.abs(hi), tf.abs(lo))
    return (span > eps * magnitude) & (span > 0) & tf.math.is_finite(span)


def normalize(maps: tf.Tensor, eps: float = RELATIVE_EPS) -> tf.Tensor:
    """Per-sample min-max to [0, 1]; a constant map (see :func:`nonconstant`) becomes all zeros.

    ``eps`` is relative to the map's magnitude, so that normalised maps do not depend on the
    scale of the model's scores.
    """
    axes = list(range(1, maps.shape.rank))
    lo = tf.reduce_min(maps, axis=axes, keepdims=True)
    hi = tf.reduce_max(maps, axis=axes, keepdims=True)
    out = tf.math.divide_no_nan(maps - lo, hi - lo)
    return tf.where(nonconstant(maps, keepdims=True, eps=eps), out, tf.zeros_like(maps))


def eigen_map(acts: tf.Tensor, center: bool = False) -> tf.Tensor:
    r"""Projection of the activations on their first principal direction, one map per sample.

    Parameters
    ----------
    acts : tf.Tensor of shape (B, *spatial, K)
        Activations, channels last.
    center : bool, default=False
        Subtract each channel's spatial mean before the SVD (and project the centred matrix).

    Returns
    -------
    tf.Tensor of shape (B, *spatial)
        :math:`O v_1` with the sign chosen so that the entry of largest absolute value is
        positive (a zero map stays zero).

    Notes
    -----
    With :math:`O \in \mathbb{R}^{Z \times K}` the activations of one sample reshaped to
    (positions, channels) and :math:`O = U \Sigma V^\top` its thin SVD,
    :math:`L = O v_1 = \sigma_1 u_1`. The SVD is batched (``tf.linalg.svd``).

    References
    ----------
    M. B. Muhammad and M. Yeasin, "Eigen-CAM: Class Activation Map using Principal Components",
    IJCNN 2020.

    Examples
    --------
    >>> acts = tf.constant([[[[1.0, 0.0]], [[3.0, 0.0]]]])   # (1, 2, 1, 2): one sample, 2x1 grid
    >>> eigen_map(acts).numpy().round(3).tolist()
    [[[1.0], [3.0]]]
    """
    acts = tf.cast(acts, tf.float32)
    shape = tf.shape(acts)
    k = acts.shape[-1]
    o = tf.reshape(acts, tf.stack([shape[0], -1, k]))  # (B, Z, K)
    if center:
        o = o - tf.reduce_mean(o, axis=1, keepdims=True)
    _, _, v = tf.linalg.svd(o, full_matrices=False)  # TF returns V, not V^H
    projected = tf.einsum("bzk,bk->bz", o, v[..., 0])
    peak = tf.gather(projected, tf.argmax(tf.abs(projected), axis=1, output_type=tf.int32), batch_dims=1)
    sign = tf.where(peak < 0, -1.0, 1.0)
    return tf.reshape(projected * sign[:, None], shape[:-1])
