"""Steps every method shares, written once: channel sums, resizing and normalisation.

Maps are float32 tensors ``(B, *spatial)`` (1, 2 or 3 spatial axes); activations and gradients
are ``(B, *spatial, K)``, channels last.
"""

from __future__ import annotations

from typing import Any

from keras import ops

Tensor = Any  # what keras.ops returns on the Keras backend in use (tf.Tensor, jax.Array, torch.Tensor)

EPS = 1e-8
RELATIVE_EPS = 1e-6  # a map whose range is below this fraction of its magnitude is float rounding

__all__ = ["Tensor", "spatial_sum", "spatial_mean", "weighted_sum", "resize", "normalize", "nonconstant", "eigen_map", "EPS", "RELATIVE_EPS"]


def _spatial_axes(t) -> tuple[int, ...]:
    return tuple(range(1, len(t.shape) - 1))


def spatial_sum(t, keepdims: bool = False):
    """Sum over the spatial axes of ``(B, *spatial, K)``: ``(B, K)``."""
    return ops.sum(t, axis=_spatial_axes(t), keepdims=keepdims)


def spatial_mean(t, keepdims: bool = False):
    """Mean over the spatial axes of ``(B, *spatial, K)``: ``(B, K)``."""
    return ops.mean(t, axis=_spatial_axes(t), keepdims=keepdims)


def weighted_sum(acts, weights):
    """``sum_k w_k A^k``: weights ``(B, K)`` per channel or ``(B, *spatial, K)`` per position."""
    if len(weights.shape) == 2:
        for _ in range(len(acts.shape) - 2):
            weights = ops.expand_dims(weights, 1)
    return ops.sum(acts * weights, axis=-1)


def _resize_2d(maps, size):
    """``(B, h, w)`` -> ``(B, *size)``: ``keras.ops.image.resize``, bilinear with half-pixel centres."""
    return ops.image.resize(maps[..., None], size, interpolation="bilinear", antialias=False)[..., 0]


def resize(maps, size):
    """Resize ``(B, *spatial)`` maps to ``size`` by separable linear interpolation.

    In 2-D this is bilinear interpolation with half-pixel centres, ``keras.ops.image.resize``
    (``tf.image.resize(method="bilinear")``, PyTorch ``align_corners=False`` and
    ``cv2.INTER_LINEAR``, no antialiasing); in 1-D and 3-D it is the linear and trilinear
    analogue, the same 2-D resize along a line or applied twice (height and width, then depth: an
    axis resized to its own size is unchanged).
    """
    size = tuple(int(s) for s in size)
    if tuple(maps.shape[1:]) == size:
        return maps
    if len(size) == 1:  # a (B, L, 1) image resized along its height
        return _resize_2d(maps[..., None], (size[0], 1))[..., 0]
    if len(size) == 2:
        return _resize_2d(maps, size)
    d, h, w = maps.shape[1:]
    planes = _resize_2d(ops.reshape(maps, (-1, h, w)), size[1:])  # every depth slice: (B * d, H, W)
    columns = ops.reshape(planes, (-1, d, size[1] * size[2]))  # depth down, positions across
    return ops.reshape(_resize_2d(columns, (size[0], size[1] * size[2])), (-1, *size))


def nonconstant(maps, keepdims: bool = False, eps: float = RELATIVE_EPS):
    """Per sample, whether a ``(B, ...)`` map varies: ``max - min > eps * max(|max|, |min|)``.

    The threshold is relative to the map's own magnitude, so the answer does not depend on the
    model's scale (a head scaled by 1e-9 gives maps of 1e-20 that are as informative as before);
    a range of a few float32 rounding steps of the values counts as constant. Non-finite maps are
    constant (they carry no information).
    """
    axes = tuple(range(1, len(maps.shape)))
    lo = ops.min(maps, axis=axes, keepdims=keepdims)
    hi = ops.max(maps, axis=axes, keepdims=keepdims)
    span = hi - lo
    magnitude = ops.maximum(ops.abs(hi), ops.abs(lo))
    return ops.logical_and(ops.logical_and(span > eps * magnitude, span > 0), ops.isfinite(span))


def normalize(maps, eps: float = RELATIVE_EPS):
    """Per-sample min-max to [0, 1]; a constant map (see :func:`nonconstant`) becomes all zeros.

    ``eps`` is relative to the map's magnitude, so that normalised maps do not depend on the
    scale of the model's scores.
    """
    axes = tuple(range(1, len(maps.shape)))
    lo = ops.min(maps, axis=axes, keepdims=True)
    hi = ops.max(maps, axis=axes, keepdims=True)
    out = ops.divide_no_nan(maps - lo, hi - lo)
    return ops.where(nonconstant(maps, keepdims=True, eps=eps), out, ops.zeros_like(maps))


def eigen_map(acts, center: bool = False):
    r"""Projection of the activations on their first principal direction, one map per sample.

    Parameters
    ----------
    acts : tensor of shape (B, *spatial, K)
        Activations, channels last.
    center : bool, default=False
        Subtract each channel's spatial mean before the SVD (and project the centred matrix).

    Returns
    -------
    tensor of shape (B, *spatial)
        :math:`O v_1` with the sign chosen so that the entry of largest absolute value is
        positive (a zero map stays zero).

    Notes
    -----
    With :math:`O \in \mathbb{R}^{Z \times K}` the activations of one sample reshaped to
    (positions, channels) and :math:`O = U \Sigma V^\top` its thin SVD,
    :math:`L = O v_1 = \sigma_1 u_1`. The SVD is batched (``keras.ops.svd``).

    References
    ----------
    M. B. Muhammad and M. Yeasin, "Eigen-CAM: Class Activation Map using Principal Components",
    IJCNN 2020.

    Examples
    --------
    >>> import numpy as np
    >>> acts = np.array([[[[1.0, 0.0]], [[3.0, 0.0]]]], "float32")   # (1, 2, 1, 2): one sample, 2x1 grid
    >>> ops.convert_to_numpy(eigen_map(acts)).round(3).tolist()
    [[[1.0], [3.0]]]
    """
    acts = ops.cast(acts, "float32")
    k = acts.shape[-1]
    o = ops.reshape(acts, (-1, _positions(acts), k))  # (B, Z, K)
    if center:
        o = o - ops.mean(o, axis=1, keepdims=True)
    _, _, vh = ops.svd(o, full_matrices=False)  # O = U diag(s) V^T: v_1 is the first row of V^T
    projected = ops.einsum("bzk,bk->bz", o, vh[:, 0, :])
    peak = ops.take_along_axis(projected, ops.argmax(ops.abs(projected), axis=1)[:, None], axis=1)[:, 0]
    sign = ops.where(peak < 0, -1.0, 1.0)
    return ops.reshape(projected * sign[:, None], (-1, *acts.shape[1:-1]))


def _positions(t) -> int:
    """The number of positions of ``(B, *spatial, K)`` (static spatial axes)."""
    z = 1
    for d in t.shape[1:-1]:
        z *= int(d)
    return z
