"""Numerical helpers of the metrics: curve areas, rank correlation, connected components, blur.

Rank correlation, connected components and the Gaussian kernel come from scipy
(``scipy.stats.spearmanr``, ``scipy.ndimage.label``, ``scipy.ndimage.gaussian_filter``), the
references the tests compare with; only the batching around them is written here.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from scipy import ndimage, stats

from ..core.validate import positive_float, positive_int
from .arrays import as_images

__all__ = ["auc", "saliency_ranks", "spearman", "label_components", "rise_kernel", "gaussian_blur"]


def auc(curve, axis: int = -1) -> np.ndarray | float:
    r"""Normalised area under a curve sampled at equal steps on ``[0, 1]`` (trapezoid rule).

    Parameters
    ----------
    curve : array-like of shape (..., n_steps + 1)
        Scores ``s_0 ... s_n`` at fractions ``0, 1/n, ..., 1`` of pixels changed.
    axis : int, default=-1
        The step axis.

    Returns
    -------
    float or ndarray
        ``(sum_i s_i - s_0 / 2 - s_n / 2) / n`` along ``axis``: a float for a 1-D curve.

    Notes
    -----
    The RISE reference ``auc``. A constant curve has that constant as its AUC.

    Raises
    ------
    ValueError
        Fewer than two points.

    Examples
    --------
    >>> from keras_gradcam.metrics import auc
    >>> auc([1.0, 0.5, 0.0])
    0.5
    """
    s = np.moveaxis(np.asarray(curve, dtype=np.float64), axis, -1)
    if s.shape[-1] < 2:
        raise ValueError(f"a curve needs at least 2 points; got {s.shape[-1]} along axis {axis}.")
    n = s.shape[-1] - 1
    area = (s.sum(-1) - s[..., 0] / 2 - s[..., -1] / 2) / n
    return float(area) if area.ndim == 0 else area


def saliency_ranks(h: np.ndarray) -> np.ndarray:
    """Rank of each pixel of ``(N, H, W)`` maps by decreasing saliency (0 = most salient).

    A stable sort: ties keep row-major order, so the order is reproducible (the references'
    ``argsort`` leaves it arbitrary). Deletion, insertion and ROAD order pixels with it.
    """
    n = h.shape[0]
    order = np.argsort(-h.reshape(n, -1), axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(order.shape[1])[None, :], axis=1)
    return rank.reshape(h.shape)


def spearman(a, b) -> np.ndarray:
    """Spearman rank correlation of each pair of rows (maps are flattened per sample).

    Parameters
    ----------
    a, b : array-like of shape (n_samples, ...)
        Same shape; everything after the first axis is flattened.

    Returns
    -------
    ndarray of shape (n_samples,)
        ``scipy.stats.spearmanr`` of each pair of rows: Pearson correlation of the ranks (ties
        get their average rank). NaN where either row is constant (the correlation is
        undefined).

    Raises
    ------
    ValueError
        Shapes differ, or there are NaN values.

    Examples
    --------
    >>> import numpy as np
    >>> from keras_gradcam.metrics import spearman
    >>> spearman(np.array([[1, 2, 3, 4]]), np.array([[10, 20, 30, 25]])).round(2)
    array([0.8])
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim < 1:
        raise ValueError(f"spearman needs two arrays of the same shape (n_samples, ...); got {a.shape} and {b.shape}.")
    a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    if np.isnan(a).any() or np.isnan(b).any():
        raise ValueError("spearman got NaN values.")
    r = np.full(a.shape[0], np.nan)
    for i, (x, y) in enumerate(zip(a, b)):
        if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
            continue  # constant row: undefined (scipy would warn and return NaN)
        r[i] = stats.spearmanr(x, y)[0]
    return np.clip(r, -1.0, 1.0)


def label_components(binary: np.ndarray, connectivity: int) -> np.ndarray:
    """Connected components of each image of a boolean ``(N, H, W)`` batch (``scipy.ndimage.label``).

    Returns int64 ``(N, H, W)``: every foreground pixel gets the row-major flat index (within
    its image) of the first pixel of its component; background is -1. The whole batch is
    labelled at once, with a structure that connects no pixels across images.
    """
    n, h, w = binary.shape
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    labels, count = ndimage.label(binary, structure=structure)
    flat = labels.ravel()
    # first (row-major) pixel of each label over the flattened batch, then its index within its image
    found, first = np.unique(flat, return_index=True)
    start = np.zeros(count + 1, np.int64)
    start[found] = first
    local = start[labels] - (np.arange(n, dtype=np.int64) * h * w)[:, None, None]
    return np.where(binary, local, -1)


def rise_kernel(size: int, sigma: float) -> np.ndarray:
    """The RISE reference kernel: ``scipy.ndimage.gaussian_filter`` of a centred delta (reflect mode)."""
    delta = np.zeros((size, size))
    delta[size // 2, size // 2] = 1.0
    return ndimage.gaussian_filter(delta, sigma)


def gaussian_blur(images, kernel_size: int = 11, sigma: float = 5.0) -> np.ndarray:
    """Blur images per channel as the RISE insertion substrate does.

    Parameters
    ----------
    images : array-like of shape (n_samples, height, width, channels)
    kernel_size : int, default=11
    sigma : float, default=5.0

    Returns
    -------
    ndarray of float32, same shape as ``images``

    Notes
    -----
    The kernel is the RISE reference ``gkern``: a centred delta on a ``kernel_size`` square
    smoothed by ``scipy.ndimage.gaussian_filter(sigma)`` (its default reflect boundary), so its
    weights sum to 1 but are flatter than a truncated Gaussian. The convolution pads with zeros
    (``padding=kernel_size // 2``), so borders darken towards 0 as in the reference.
    """
    k = positive_int("kernel_size", kernel_size)
    sigma = positive_float("sigma", sigma)
    x = as_images(images)
    kern = np.repeat(rise_kernel(k, sigma)[:, :, None, None], x.shape[-1], axis=2).astype(np.float32)
    pad = k // 2
    padded = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    return tf.nn.depthwise_conv2d(padded, kern, strides=[1, 1, 1, 1], padding="VALID").numpy()
