"""Evaluation metrics for saliency maps (see docs/metrics.md).

Two kinds of metric live here.

* **Map-only metrics** compare precomputed maps with ground truth and never run a model:
  :func:`energy_pointing_game`, :func:`pointing_game`, :func:`localization`,
  :func:`instance_coverage`, :func:`map_area`, :func:`map_entropy`, plus the helpers
  :func:`spearman`, :func:`auc`, :func:`boxes_to_masks`, :func:`masks_to_boxes`.
* **Model metrics** perturb the input according to a map and read the model's confidence:
  :func:`average_drop`, :func:`increase_in_confidence`, :func:`win_rate`,
  :func:`deletion_curve` / :func:`deletion_auc`, :func:`insertion_curve` /
  :func:`insertion_auc`, :func:`occlusion_map` / :func:`occlusion_correlation`, and the
  :func:`randomization_check`, which re-explains a randomised *copy* of the model.

Conventions shared by every function:

* maps are ``(n_samples, height, width)`` arrays (an :class:`~keras_gradcam.Explanation` is
  accepted too and its ``heatmaps`` are used); images are channels-last
  ``(n_samples, height, width, channels)``, preprocessed as the model expects, with the same
  height and width as the maps; masks are ``(n_samples, height, width)``, boolean or 0/1, or
  float soft weights in ``[0, 1]`` (see :func:`energy_pointing_game`); boxes are
  ``(y_min, x_min, y_max, x_max)`` pixel indices with the max **exclusive** (as in
  :mod:`keras_gradcam.datasets`), clipped to the image; a row with ``y_min == y_max`` or
  ``x_min == x_max`` is empty (padding) and an inverted one is an error;
* ``reduction="mean"`` returns the mean over images as a Python ``float``;
  ``reduction=None`` returns the per-image values as an ndarray of shape ``(n_samples,)``;
* model metrics state their score space with ``score=``: ``"probability"`` (default; the
  model's own output when it ends in a softmax or a sigmoid, else the softmax of its
  ``(batch, classes >= 2)`` output, except for rows that already are probabilities, i.e.
  non-negative and summing to 1 within ``1e-4``, which are used as they are; refused with a
  ``ValueError`` for an output that is no class probability, such as one linear unit),
  ``"logit"`` (the score before that softmax or sigmoid, computed without modifying the model)
  or ``"output"`` (the selected output as the model gives it);
* the explained class is ``targets`` when given, else the model's top-1 class on the
  unperturbed image (Grad-CAM++ and RISE protocols);
* all perturbed images of a batch go through one compiled forward function (traced once per
  input shape), ``batch_size`` images per call; nothing loops over pixels in Python.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf
from scipy import ndimage, stats

from .core.capture import Capture
from .core.explanation import Explanation
from .core.layers import list_layers
from .core.targets import check_range, resolve_targets

__all__ = [
    "SCORES",
    "Localization",
    "RandomizationResult",
    "auc",
    "average_drop",
    "boxes_to_masks",
    "deletion_auc",
    "deletion_curve",
    "energy_pointing_game",
    "gaussian_blur",
    "increase_in_confidence",
    "insertion_auc",
    "insertion_curve",
    "instance_coverage",
    "localization",
    "map_area",
    "map_entropy",
    "masks_to_boxes",
    "occlusion_correlation",
    "occlusion_map",
    "pointing_game",
    "randomization_check",
    "spearman",
    "win_rate",
]

#: Score spaces the model metrics accept (``score=``).
SCORES: tuple[str, ...] = ("probability", "logit", "output")

_REDUCTIONS = ("mean", None)


# ================================================================================================
# Input checks
# ================================================================================================
def _array(x) -> np.ndarray:
    return x.numpy() if tf.is_tensor(x) else np.asarray(x)


def _as_maps(heatmaps, name: str = "heatmaps") -> np.ndarray:
    """Maps as float64 ``(N, H, W)``; an Explanation gives its ``heatmaps``."""
    if isinstance(heatmaps, Explanation):
        heatmaps = heatmaps.heatmaps
    h = _array(heatmaps)
    if h.dtype.kind not in "fiub":
        raise TypeError(f"{name} must be a numeric array; got dtype {h.dtype}.")
    if h.ndim != 3:
        hint = " Add a sample axis, e.g. heatmap[None]." if h.ndim == 2 else ""
        raise ValueError(f"{name} must have shape (n_samples, height, width); got shape {h.shape}.{hint}")
    if h.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {h.shape}); pass at least one map.")
    h = h.astype(np.float64)
    if not np.isfinite(h).all():
        raise ValueError(f"{name} contains NaN or inf values.")
    return h


def _mask_weights(m, name: str = "masks") -> np.ndarray:
    """A mask array as float64 weights in ``[0, 1]``: bool and 0/1 masks exactly, other floats as soft weights.

    Integer masks must hold 0 and 1 only, float masks values in ``[0, 1]``; anything else is refused
    (a 0/255 image mask would otherwise count 255 times).
    """
    m = _array(m)
    if m.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a boolean, 0/1 or [0, 1] float array; got dtype {m.dtype}.")
    if m.dtype.kind == "b":
        return m.astype(np.float64)
    w = m.astype(np.float64)
    if m.size and not np.isfinite(w).all():
        raise ValueError(f"{name} contains NaN or inf values.")
    if m.dtype.kind in "iu" and m.size and not np.isin(m, (0, 1)).all():
        raise ValueError(
            f"{name} of integer dtype must hold 0 and 1 only; got values in [{m.min()}, {m.max()}]. Pass "
            f"{name} > 0 (every non-zero pixel is object) or {name} / {m.max()} (soft weights in [0, 1])."
        )
    if m.size and (w.min() < 0 or w.max() > 1):
        raise ValueError(
            f"{name} must be boolean, 0/1, or soft weights in [0, 1]; got values in [{w.min():.4g}, {w.max():.4g}]. "
            f"Rescale them to [0, 1] (e.g. {name} / {name}.max()) or threshold them ({name} > t)."
        )
    return w


def _object_pixels(w: np.ndarray) -> np.ndarray:
    """Object pixels of mask weights: weight ``>= 0.5`` (exactly the True/1 pixels of a bool/0-1 mask)."""
    return w >= 0.5


def _as_masks(masks, shape: tuple, name: str = "masks", ref: str = "heatmaps") -> np.ndarray:
    """Mask weights ``(N, H, W)`` in ``[0, 1]`` of exactly ``shape`` (see :func:`_mask_weights`)."""
    m = _array(masks)
    if m.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a boolean, 0/1 or [0, 1] float array; got dtype {m.dtype}.")
    if m.shape != tuple(shape):
        raise ValueError(
            f"{name} has shape {m.shape} but {ref} has shape {tuple(shape)}; give one (height, width) "
            f"mask per map, at the maps' resolution (resize the masks with nearest-neighbour, or the maps, first)."
        )
    return _mask_weights(m, name)


def _as_boxes(boxes, n: int, name: str = "boxes", shape: tuple | None = None) -> np.ndarray:
    """Boxes as int64 ``(N, M, 4)``; ``(N, 4)`` becomes ``M = 1``.

    A box with ``y_min == y_max`` or ``x_min == x_max`` is empty (padding); an inverted box
    (``y_min > y_max`` or ``x_min > x_max``) is refused, naming it. With ``shape = (H, W)`` the
    boxes are clipped to the image, ``[0, H] x [0, W]``.
    """
    b = _array(boxes)
    if b.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be an integer array; got dtype {b.dtype}.")
    if b.ndim == 2 and b.shape[1:] == (4,):
        b = b[:, None, :]
    if b.ndim != 3 or b.shape[2] != 4 or b.shape[0] != n:
        raise ValueError(
            f"{name} has shape {b.shape} but there are {n} maps; give (n_samples, 4) boxes "
            "(y_min, x_min, y_max, x_max), max exclusive, or (n_samples, max_boxes, 4) with empty rows for padding."
        )
    if b.dtype.kind == "f" and not np.isfinite(b).all():
        raise ValueError(f"{name} contains NaN or inf values.")
    b = np.round(b).astype(np.int64)
    inverted = (b[..., 0] > b[..., 2]) | (b[..., 1] > b[..., 3])
    if inverted.any():
        i, j = (int(v) for v in np.argwhere(inverted)[0])
        raise ValueError(
            f"{name}[{i}, {j}] = {tuple(int(v) for v in b[i, j])} is inverted ({int(inverted.sum())} such box(es)); "
            "boxes are (y_min, x_min, y_max, x_max) with y_min <= y_max and x_min <= x_max, max exclusive. Swap "
            "the corners, or use a row with y_min == y_max (e.g. all zeros) for padding."
        )
    if shape is not None:
        height, width = (int(v) for v in shape)
        b = np.clip(b, 0, [height, width, height, width])
    return b


def _as_images(images, maps_shape: tuple | None = None, name: str = "images") -> np.ndarray:
    """Channels-last float32 images ``(N, H, W, C)`` matching ``maps_shape`` ``(N, H, W)``."""
    x = _array(images)
    if x.dtype.kind not in "fiub":
        raise TypeError(f"{name} must be a numeric array; got dtype {x.dtype}.")
    if x.ndim != 4:
        raise ValueError(
            f"{name} must be a channels-last batch (n_samples, height, width, channels); got shape {x.shape}. "
            "Metrics that perturb pixels support single-input image models only."
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {x.shape}).")
    if maps_shape is not None and tuple(x.shape[:3]) != tuple(maps_shape):
        raise ValueError(
            f"{name} has shape {x.shape} but heatmaps has shape {tuple(maps_shape)}; the maps must be at the "
            "images' resolution, one per image (Explanation.heatmaps are)."
        )
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf values.")
    return x


def _check_unit(h: np.ndarray, name: str = "heatmaps") -> None:
    lo, hi = float(h.min()), float(h.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(
            f"{name} must lie in [0, 1] to be used as a soft mask; got values in [{lo:.4g}, {hi:.4g}]. "
            "Min-max normalise them first (Explanation.heatmaps already are)."
        )


def _check_nonnegative(h: np.ndarray, name: str = "heatmaps") -> None:
    if h.min() < 0:
        raise ValueError(
            f"{name} has negative values (min {h.min():.4g}); this metric needs non-negative maps. "
            "Apply a ReLU or min-max normalise them first."
        )


def _reduce(values: np.ndarray, reduction, nan_ok: bool = False):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be 'mean' or None (per-image values); got {reduction!r}.")
    if reduction is None:
        return values
    if nan_ok:
        return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    return float(np.mean(values))


def _positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}.")
    return int(value)


# ================================================================================================
# Helpers: AUC, rank correlation, boxes <-> masks, blur (rank correlation, components and blur from scipy)
# ================================================================================================
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


def boxes_to_masks(boxes, shape: tuple[int, int]) -> np.ndarray:
    """Rasterise boxes into boolean masks (the union of an image's boxes).

    Parameters
    ----------
    boxes : array-like of int, shape (n_samples, 4) or (n_samples, max_boxes, 4)
        ``(y_min, x_min, y_max, x_max)``, max exclusive, clipped to the image; rows with
        ``y_max == y_min`` or ``x_max == x_min`` (e.g. all zeros) are empty (padding).
    shape : (int, int)
        ``(height, width)`` of the masks.

    Raises
    ------
    ValueError
        An inverted box (``y_min > y_max`` or ``x_min > x_max``), named by its index.

    Returns
    -------
    ndarray of bool, shape (n_samples, height, width)

    Examples
    --------
    >>> from keras_gradcam.metrics import boxes_to_masks
    >>> boxes_to_masks([[1, 1, 3, 2]], (4, 4))[0].astype(int)
    array([[0, 0, 0, 0],
           [0, 1, 0, 0],
           [0, 1, 0, 0],
           [0, 0, 0, 0]])
    """
    h, w = (int(s) for s in shape)
    arr = _array(boxes)
    b = _as_boxes(arr, arr.shape[0] if arr.ndim else 0, shape=(h, w))
    yy = np.arange(h)[None, None, :, None]
    xx = np.arange(w)[None, None, None, :]
    y0, x0, y1, x1 = (b[..., i][..., None, None] for i in range(4))
    inside = (yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)
    return inside.any(axis=1)


def masks_to_boxes(masks) -> np.ndarray:
    """Tight boxes around the object pixels of masks.

    Parameters
    ----------
    masks : array-like of shape (n_samples, height, width)
        Boolean or 0/1 masks; float masks with soft values in ``[0, 1]`` have their pixels
        ``>= 0.5`` as object.

    Returns
    -------
    ndarray of int64, shape (n_samples, 4)
        ``(y_min, x_min, y_max, x_max)``, max exclusive; ``(0, 0, 0, 0)`` for an empty mask.

    Examples
    --------
    >>> import numpy as np
    >>> from keras_gradcam.metrics import masks_to_boxes
    >>> m = np.zeros((1, 4, 5), bool); m[0, 1:3, 2] = True
    >>> masks_to_boxes(m)
    array([[1, 2, 3, 3]])
    """
    m = _array(masks)
    if m.ndim != 3:
        raise ValueError(f"masks must have shape (n_samples, height, width); got {m.shape}.")
    m = _object_pixels(_mask_weights(m))
    _, h, w = m.shape
    rows, cols = m.any(2), m.any(1)
    boxes = np.stack(
        [rows.argmax(1), cols.argmax(1), h - rows[:, ::-1].argmax(1), w - cols[:, ::-1].argmax(1)], axis=1
    ).astype(np.int64)
    boxes[~rows.any(1)] = 0
    return boxes


def _rise_kernel(size: int, sigma: float) -> np.ndarray:
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
    k = _positive_int("kernel_size", kernel_size)
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0; got {sigma!r}.")
    x = _as_images(images)
    kern = np.repeat(_rise_kernel(k, float(sigma))[:, :, None, None], x.shape[-1], axis=2).astype(np.float32)
    pad = k // 2
    padded = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    return tf.nn.depthwise_conv2d(padded, kern, strides=[1, 1, 1, 1], padding="VALID").numpy()


# ================================================================================================
# Map-only metrics
# ================================================================================================
def energy_pointing_game(heatmaps, masks, *, reduction: str | None = "mean"):
    r"""Share of the map's energy that falls on the object (Score-CAM section 4.3).

    Parameters
    ----------
    heatmaps : array-like of shape (n_samples, height, width), or Explanation
        Non-negative maps at the masks' resolution.
    masks : array-like of shape (n_samples, height, width)
        The object (or its box, see :func:`boxes_to_masks`) per map: boolean or 0/1, or float
        soft weights in ``[0, 1]`` (e.g. an anti-aliased or probabilistic mask), which weight
        each pixel's energy.
    reduction : {"mean", None}, default="mean"
        ``"mean"``: the mean over the images that have an object, as a float; None: per-image
        values.

    Returns
    -------
    float or ndarray of shape (n_samples,)
        In ``[0, 1]``, higher is better. A uniform map scores the mask's area fraction. An image
        whose mask is empty (all zero: no object) has no defined share: it is NaN per image and
        left out of the mean, with a ``UserWarning`` giving how many were left out (NaN if all).

    Raises
    ------
    ValueError
        Masks of another shape than the maps (the message names both), mask values outside
        ``[0, 1]`` (or integers other than 0/1), negative map values.

    Notes
    -----
    .. math:: \mathrm{EPG} = \frac{\sum_{ij} L_{ij}\,m_{ij}}{\sum_{ij} L_{ij}}

    (the official helper's ``sum(L * mask) / sum(L)``, with row-major ``(y, x)`` indexing), with
    ``m`` the mask's weight in ``[0, 1]``: for a boolean mask the share of the energy on the object,
    for a soft mask the energy weighted by the mask. An all-zero map has no energy anywhere and
    scores 0 rather than NaN.

    Examples
    --------
    >>> import numpy as np
    >>> from keras_gradcam.metrics import energy_pointing_game
    >>> mask = np.zeros((1, 4, 4), bool); mask[0, :2, :2] = True
    >>> energy_pointing_game(np.ones((1, 4, 4)), mask)
    0.25
    """
    h = _as_maps(heatmaps)
    m = _as_masks(masks, h.shape)
    _check_nonnegative(h)
    total = h.sum((1, 2))
    inside = (h * m).sum((1, 2))
    values = np.where(total > 0, inside / np.where(total > 0, total, 1.0), 0.0)
    empty = ~(m > 0).any((1, 2))
    if empty.any():
        values[empty] = np.nan
        warnings.warn(
            f"energy_pointing_game: {int(empty.sum())} of {len(values)} images have an empty mask (no object) and "
            f"are left out of the mean (NaN per image): images {np.flatnonzero(empty)[:10].tolist()}.",
            UserWarning,
            stacklevel=2,
        )
    return _reduce(values, reduction, nan_ok=True)


def pointing_game(heatmaps, masks, *, tolerance: float = 15, reduction: str | None = "mean"):
    """Whether each map's maximum points at the object (Zhang et al., ECCV 2016).

    Parameters
    ----------
    heatmaps : array-like of shape (n_samples, height, width), or Explanation
    masks : array-like of shape (n_samples, height, width)
        Object pixels of the explained class, boolean or 0/1; float masks with soft values in
        ``[0, 1]`` have their pixels with weight ``>= 0.5`` as object. No mask may be empty.
    tolerance : float, default=15
        A hit is a mask pixel at squared distance ``d^2 < tolerance^2`` from the maximum
        (TorchRay's strict rule, 15 px at 224-500 px image sizes; scale it with your image
        size). ``0`` (or anything ``<= 1``) means the maximum itself must be inside the mask.
    reduction : {"mean", None}, default="mean"

    Returns
    -------
    float or ndarray of shape (n_samples,)
        The hit rate ``hits / (hits + misses)`` in ``[0, 1]``; per-image values are 1.0 (hit)
        or 0.0 (miss).

    Raises
    ------
    ValueError
        Shape mismatch (both shapes named), an empty mask, a negative tolerance.

    Notes
    -----
    The maximum is the first maximal pixel in row-major order (``argmax`` of the flattened
    map). With a soft mask a hit needs a pixel of weight ``>= 0.5`` within the tolerance (with
    ``tolerance <= 1``: the mask's weight at the maximum is ``>= 0.5``). An all-zero map points
    nowhere and counts as a miss. This is the per-image
    accuracy; TorchRay reports the mean over classes of per-class accuracies, which you get by
    averaging the per-image values class by class.

    Examples
    --------
    >>> import numpy as np
    >>> from keras_gradcam.metrics import pointing_game
    >>> h = np.zeros((1, 5, 5)); h[0, 0, 0] = 1
    >>> m = np.zeros((1, 5, 5), bool); m[0, 2, 2] = True
    >>> pointing_game(h, m, tolerance=0), pointing_game(h, m, tolerance=3)
    (0.0, 1.0)
    """
    h = _as_maps(heatmaps)
    m = _object_pixels(_as_masks(masks, h.shape))
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0 pixels; got {tolerance!r}.")
    empty = ~m.any((1, 2))
    if empty.any():
        raise ValueError(
            f"masks of images {np.flatnonzero(empty)[:10].tolist()} are empty; the pointing game needs the "
            "object in every image. Drop those images."
        )
    n, height, width = h.shape
    flat = h.reshape(n, -1).argmax(1)
    py, px = flat // width, flat % width
    if tolerance <= 1:
        hits = m[np.arange(n), py, px]
    else:
        yy = np.arange(height)[None, :, None]
        xx = np.arange(width)[None, None, :]
        d2 = (yy - py[:, None, None]) ** 2 + (xx - px[:, None, None]) ** 2
        hits = (m & (d2 < float(tolerance) ** 2)).any((1, 2))
    hits &= h.reshape(n, -1).max(1) > 0  # an all-zero map points nowhere
    return _reduce(hits.astype(np.float64), reduction)


def _label_components(binary: np.ndarray, connectivity: int) -> np.ndarray:
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


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes ``a`` (..., 4) and ``b`` (..., 4), max exclusive; 0 when the union is empty."""
    ay0, ax0, ay1, ax1 = np.moveaxis(a, -1, 0)
    by0, bx0, by1, bx1 = np.moveaxis(b, -1, 0)
    area_a = np.clip(ay1 - ay0, 0, None) * np.clip(ax1 - ax0, 0, None)
    area_b = np.clip(by1 - by0, 0, None) * np.clip(bx1 - bx0, 0, None)
    inter = np.clip(np.minimum(ay1, by1) - np.maximum(ay0, by0), 0, None) * np.clip(
        np.minimum(ax1, bx1) - np.maximum(ax0, bx0), 0, None
    )
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


@dataclass(frozen=True)
class Localization:
    """Result of :func:`localization`.

    Attributes
    ----------
    accuracy : float
        Fraction of images whose box has IoU >= the threshold with a ground-truth box.
    ious : ndarray of shape (n_samples,)
        Best IoU of each image's predicted box with its ground-truth boxes.
    boxes : ndarray of int64, shape (n_samples, 4)
        Predicted boxes ``(y_min, x_min, y_max, x_max)``, max exclusive; ``(0, 0, 0, 0)`` where
        the map is all zero.
    hits : ndarray of bool, shape (n_samples,)
        ``ious >= iou_threshold``.
    """

    accuracy: float
    ious: np.ndarray
    boxes: np.ndarray
    hits: np.ndarray


def localization(
    heatmaps,
    boxes,
    *,
    threshold: float = 0.15,
    connectivity: int = 8,
    iou_threshold: float = 0.5,
) -> Localization:
    """Weakly-supervised localisation with a box drawn from the map (Grad-CAM section 4.1).

    Parameters
    ----------
    heatmaps : array-like of shape (n_samples, height, width), or Explanation
    boxes : array-like of int, shape (n_samples, 4) or (n_samples, max_boxes, 4)
        Ground-truth boxes ``(y_min, x_min, y_max, x_max)``, max exclusive, clipped to the map
        (a box reaching beyond the image, or with negative corners, counts for its part inside
        it); with several boxes per image (empty rows, ``y_min == y_max`` or
        ``x_min == x_max``, e.g. all zeros, as padding) the best IoU counts (ILSVRC rule).
    threshold : float, default=0.15
        Pixels with ``map >= threshold * max(map)`` are foreground.
    connectivity : {8, 4}, default=8
        Neighbourhood of the connected components (8 as MATLAB ``bwlabel``, which CAM's
        box script used; ``scipy.ndimage.label``'s default is 4).
    iou_threshold : float, default=0.5
        A box is correct at IoU ``>=`` this value.

    Returns
    -------
    Localization
        ``accuracy``, per-image ``ious``, predicted ``boxes`` and ``hits``.

    Raises
    ------
    ValueError
        Box array of the wrong shape, an inverted box (``y_min > y_max`` or ``x_min > x_max``,
        named by its index), bad ``threshold`` or ``connectivity``.

    Notes
    -----
    The box is the tight box of the **largest** connected foreground component (ties: the
    component whose first pixel comes first in row-major order). An all-zero map has no
    foreground: empty box, IoU 0. The paper also requires the class to be right; pass maps of
    the predicted class and check the class separately if you need the ILSVRC error.

    Examples
    --------
    >>> import numpy as np
    >>> from keras_gradcam.metrics import localization
    >>> h = np.zeros((1, 6, 6)); h[0, 1:3, 1:4] = 1.0; h[0, 5, 5] = 0.5
    >>> res = localization(h, [[1, 1, 3, 4]])
    >>> res.boxes.tolist(), res.ious.tolist(), res.accuracy
    ([[1, 1, 3, 4]], [1.0], 1.0)
    """
    h = _as_maps(heatmaps)
    gt = _as_boxes(boxes, h.shape[0], shape=h.shape[1:])
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be a fraction of the map's maximum in [0, 1]; got {threshold!r}.")
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8; got {connectivity!r}.")
    n, height, width = h.shape
    peak = h.max((1, 2), keepdims=True)
    binary = (h >= threshold * peak) & (peak > 0)
    labels = _label_components(binary, connectivity)
    offsets = (np.arange(n, dtype=np.int64) * height * width)[:, None, None]
    counts = np.bincount((labels + offsets)[binary], minlength=n * height * width).reshape(n, -1)
    best = counts.argmax(1)  # first maximum = the component with the earliest first pixel
    component = binary & (labels == best[:, None, None])
    pred = masks_to_boxes(component)
    ious = _iou(pred[:, None, :], gt).max(1)
    hits = ious >= iou_threshold
    return Localization(float(hits.mean()), ious, pred, hits)


def instance_coverage(heatmaps, object_masks, *, threshold: float = 0.5, reduction: str | None = "mean"):
    """Fraction of an image's object instances that the map lights up.

    An instance is covered when the map's maximum over its pixels reaches ``threshold`` times
    the map's global maximum. Used for the Grad-CAM++ multi-instance claim.

    Parameters
    ----------
    heatmaps : array-like of shape (n_samples, height, width), or Explanation
    object_masks : array-like of bool, shape (n_samples, max_objects, height, width)
        One mask per instance; all-False slots are padding and ignored (the layout of
        :attr:`keras_gradcam.datasets.SyntheticShapes.object_masks`; select the instances of
        the explained class first).
    threshold : float, default=0.5
        Fraction of the map's maximum an instance's peak must reach.
    reduction : {"mean", None}, default="mean"

    Returns
    -------
    float or ndarray of shape (n_samples,)
        Per image, covered instances / instances, in ``[0, 1]``. An all-zero map covers nothing.

    Raises
    ------
    ValueError
        Shape mismatch, or an image without any instance.

    Examples
    --------
    >>> import numpy as np
    >>> from keras_gradcam.metrics import instance_coverage
    >>> h = np.zeros((1, 4, 4)); h[0, 0, 0] = 1.0; h[0, 3, 3] = 0.2
    >>> om = np.zeros((1, 2, 4, 4), bool); om[0, 0, 0, 0] = True; om[0, 1, 3, 3] = True
    >>> instance_coverage(h, om)
    0.5
    """
    h = _as_maps(heatmaps)
    om = _array(object_masks)
    if om.ndim != 4 or om.shape[0] != h.shape[0] or om.shape[2:] != h.shape[1:]:
        raise ValueError(
            f"object_masks has shape {om.shape} but heatmaps has shape {h.shape}; expected "
            f"(n_samples, max_objects, height, width) = ({h.shape[0]}, K, {h.shape[1]}, {h.shape[2]})."
        )
    om = _object_pixels(_mask_weights(om, "object_masks"))
    valid = om.any((2, 3))
    if not valid.any(1).all():
        raise ValueError(f"images {np.flatnonzero(~valid.any(1))[:10].tolist()} have no object instance.")
    peak = h.max((1, 2))
    inst_peak = np.where(om, h[:, None], -np.inf).max((2, 3))
    covered = valid & (inst_peak >= threshold * peak[:, None]) & (peak[:, None] > 0)
    values = covered.sum(1) / valid.sum(1)
    return _reduce(values.astype(np.float64), reduction)


def map_area(heatmaps, *, threshold: float = 0.5, reduction: str | None = "mean"):
    """Fraction of pixels at or above ``threshold`` times the map's maximum (a sharpness proxy).

    Parameters
    ----------
    heatmaps : array-like of shape (n_samples, height, width), or Explanation
    threshold : float, default=0.5
    reduction : {"mean", None}, default="mean"

    Returns
    -------
    float or ndarray of shape (n_samples,)
        In ``[0, 1]``; smaller means a more concentrated map. An all-zero map scores 0.

    Examples
    --------
    >>> import numpy as np
    >>> from keras_gradcam.metrics import map_area
    >>> map_area(np.array([[[1.0, 0.6], [0.2, 0.0]]]))
    0.5
    """
    h = _as_maps(heatmaps)
    peak = h.max((1, 2), keepdims=True)
    values = ((h >= threshold * peak) & (peak > 0)).mean((1, 2))
    return _reduce(values, reduction)


def map_entropy(heatmaps, *, reduction: str | None = "mean"):
    r"""Normalised Shannon entropy of each map seen as a distribution over pixels.

    Parameters
    ----------
    heatmaps : array-like of shape (n_samples, height, width), or Explanation
        Non-negative maps.
    reduction : {"mean", None}, default="mean"

    Returns
    -------
    float or ndarray of shape (n_samples,)
        :math:`-\sum p \log p / \log(HW)` with :math:`p = L / \sum L`, in ``[0, 1]``: 0 for a
        single bright pixel, 1 for a uniform map (an all-zero map counts as uniform). Lower
        means sharper.

    Examples
    --------
    >>> import numpy as np
    >>> from keras_gradcam.metrics import map_entropy
    >>> map_entropy(np.ones((1, 4, 4))), map_entropy(np.eye(4)[None])
    (1.0, 0.5)
    """
    h = _as_maps(heatmaps)
    _check_nonnegative(h)
    n = h.shape[0]
    flat = h.reshape(n, -1)
    total = flat.sum(1, keepdims=True)
    p = np.where(total > 0, flat / np.where(total > 0, total, 1.0), 1.0 / flat.shape[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(p > 0, p * np.log(p), 0.0).sum(1)
    values = ent / math.log(flat.shape[1]) if flat.shape[1] > 1 else np.zeros(n)
    return _reduce(values, reduction)


# ================================================================================================
# Compiled forward passes
# ================================================================================================
class _Scorer:
    """Compiled forward passes of a model returning target-class scores in one score space.

    Every function is traced once (``None`` batch dimensions) under :meth:`Capture.active`,
    which computes logits on the fly for softmax and sigmoid heads without modifying the model.
    """

    def __init__(self, model: keras.Model, score: str = "probability", output=None):
        if not isinstance(model, keras.Model):
            raise TypeError(f"model must be a keras.Model; got {type(model).__module__}.{type(model).__name__}.")
        if score not in SCORES:
            raise ValueError(
                f"score must be one of {SCORES}: 'probability' (default), 'logit' (before the softmax/sigmoid) or "
                f"'output' (the model's output as is); got {score!r}."
            )
        self.model = model
        self.score = score
        self.output = output
        self._capture: Capture | None = None
        self._fns: dict = {}

    # graph code ------------------------------------------------------------------------------
    def _scores(self, x, targets):
        cap = self._capture(x, targets, gradients=False)
        out = tf.cast(cap.output, tf.float32)
        if self.score == "probability":
            if self._capture.link is None and self._capture.logits:
                out = _rows_as_probabilities(out)  # link unknown: maybe probabilities already
            else:
                out = self._capture.probabilities(out)
        return tf.gather(out, cap.targets, batch_dims=1), cap.targets

    def _compile(self, key, body, signature):
        fn = self._fns.get(key)
        if fn is None:
            fn = tf.function(body, input_signature=signature)
            with self._capture.active():
                fn.get_concrete_function()
            self._fns[key] = fn
        return fn

    def _setup(self, x: np.ndarray) -> None:
        if self._capture is None:
            if not (self.model.built and getattr(self.model, "inputs", None)):
                self.model(x[:1], training=False)
            capture = Capture(self.model, [], output=self.output, score="output" if self.score == "output" else "logit")
            if self.score == "probability":
                _check_probability_output(self.model, capture, x)
            self._capture = capture

    # host code -------------------------------------------------------------------------------
    def predict(self, x: np.ndarray, targets, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores ``(N,)`` and classes ``(N,)``; ``targets`` None/-1 = top-1 class."""
        self._setup(x)
        img = tf.TensorSpec((None,) + x.shape[1:], tf.float32)

        def body(xb, tb):
            return self._scores(xb, tb)

        fn = self._compile(("predict", x.shape[1:]), body, [img, tf.TensorSpec([None], tf.int32)])
        if callable(targets):
            raise TypeError("metrics score class indices; pass None, an int or one int per image as targets.")
        t = resolve_targets(targets, x.shape[0])
        check_range(t, self._capture.num_classes())
        scores, classes = [], []
        for i in range(0, x.shape[0], batch_size):
            s, c = fn(x[i : i + batch_size], t[i : i + batch_size])
            scores.append(s.numpy())
            classes.append(c.numpy())
        return np.concatenate(scores), np.concatenate(classes).astype(np.int64)

    def curves(self, start, end, rank, counts, classes, batch_size: int) -> np.ndarray:
        """Scores ``(N, len(counts))``: image ``where(rank < count, end, start)`` per count."""
        n, h, w, c = start.shape
        img = tf.TensorSpec((None, h, w, c), tf.float32)

        def body(s, e, r, k, t):
            b, m = tf.shape(s)[0], tf.shape(k)[0]
            changed = r[:, None, :, :] < k[None, :, None, None]  # (b, m, h, w)
            x = tf.where(changed[..., None], e[:, None], s[:, None])
            scores, _ = self._scores(tf.reshape(x, [b * m, h, w, c]), tf.repeat(t, m))
            return tf.reshape(scores, [b, m])

        sig = [img, img, tf.TensorSpec((None, h, w), tf.int32), tf.TensorSpec([None], tf.int32),
               tf.TensorSpec([None], tf.int32)]
        fn = self._compile(("curves", (h, w, c)), body, sig)
        return self._run(fn, (start, end, rank.astype(np.int32)), np.asarray(counts, np.int32), classes, batch_size)

    def occlusions(self, x, windows, fill, classes, batch_size: int) -> np.ndarray:
        """Scores ``(N, n_windows)`` with each window ``(y0, x0, y1, x1)`` set to ``fill``."""
        n, h, w, c = x.shape
        img = tf.TensorSpec((None, h, w, c), tf.float32)

        def body(xb, fb, win, t):
            b, m = tf.shape(xb)[0], tf.shape(win)[0]
            yy = tf.range(h)[None, :, None]
            xx = tf.range(w)[None, None, :]
            y0, x0, y1, x1 = (win[:, i, None, None] for i in range(4))
            inside = (yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)  # (m, h, w)
            xo = tf.where(inside[None, ..., None], fb[:, None], xb[:, None])
            scores, _ = self._scores(tf.reshape(xo, [b * m, h, w, c]), tf.repeat(t, m))
            return tf.reshape(scores, [b, m])

        sig = [img, img, tf.TensorSpec((None, 4), tf.int32), tf.TensorSpec([None], tf.int32)]
        fn = self._compile(("occlusion", (h, w, c)), body, sig)
        return self._run(fn, (x, fill), np.asarray(windows, np.int32), classes, batch_size)

    @staticmethod
    def _run(fn, samples: tuple, variants: np.ndarray, classes: np.ndarray, batch_size: int) -> np.ndarray:
        """``fn(*samples, variants, classes) -> (b, m)`` over every (sample, variant) pair.

        About ``batch_size`` perturbed images per call: several samples with all their variants
        when the variants fit, else one sample with a chunk of its variants.
        """
        classes = classes.astype(np.int32)
        n, m = classes.shape[0], variants.shape[0]
        out = np.empty((n, m), np.float32)
        if m <= batch_size:
            per = max(1, batch_size // m)
            for i in range(0, n, per):
                sl = slice(i, i + per)
                out[sl] = fn(*(a[sl] for a in samples), variants, classes[sl]).numpy()
            return out
        for i in range(n):
            sl = slice(i, i + 1)
            for j in range(0, m, batch_size):
                out[i, j : j + batch_size] = fn(*(a[sl] for a in samples), variants[j : j + batch_size], classes[sl]).numpy()[0]
        return out


def _rows_as_probabilities(out: tf.Tensor) -> tf.Tensor:
    """``(B, classes)`` rows that are already probabilities kept as they are, the others softmaxed.

    A row is a probability when it is non-negative and sums to 1 within ``1e-4`` (a softmax the
    head detection could not see, e.g. one followed by an identity layer): a second softmax
    would flatten it.
    """
    is_prob = tf.reduce_all(out >= 0.0, axis=-1) & (tf.abs(tf.reduce_sum(out, axis=-1) - 1.0) <= 1e-4)
    return tf.where(is_prob[:, None], out, tf.nn.softmax(out, axis=-1))


def _check_probability_output(model: keras.Model, capture: Capture, x: np.ndarray) -> None:
    """Refuse ``score="probability"`` where the explained output is no class probability.

    A softmax or sigmoid head gives probabilities; without one, only a ``(B, classes >= 2)``
    output can be turned into probabilities by a softmax (a softmax over one unit is always 1).
    """
    if capture.link is not None:
        return
    k = capture.num_classes()
    shape = None
    if k is None:  # not known from the symbolic outputs (subclassed model): one forward pass
        out = capture.select(model(x[:1], training=False))
        shape = tuple(out.shape)
        k = int(shape[-1]) if shape is not None and len(shape) == 2 else None
    else:
        shape = (None, k)
    if k is None or k < 2:
        what = "its shape could not be read" if shape is None else f"it has shape {('B',) + tuple(shape[1:])}"
        raise ValueError(
            f"score='probability': the output of model {getattr(model, 'name', type(model).__name__)!r} is not a "
            f"class probability: it ends in no softmax or sigmoid and {what}, not (batch, classes >= 2), so a "
            "softmax over it would be meaningless (over one unit it is "
            "always 1.0, and every metric would be constant). Pass score='output' to score the output as it is "
            "(e.g. a regression value or a probability the library cannot recognise), or score='logit'."
        )


def _scorer(model, score: str, output) -> _Scorer:
    """A fresh scorer, or the one :func:`keras_gradcam.evaluate` passes in to share compiled functions."""
    if isinstance(model, _Scorer):
        if score != model.score:
            raise ValueError(f"internal: scorer in {model.score!r} space asked for {score!r}.")
        return model
    return _Scorer(model, score, output)


# ================================================================================================
# Confidence metrics (Grad-CAM++ section 4.1)
# ================================================================================================
def _masked_scores(model, images, heatmaps, targets, *, score, mask_space, raw_images, preprocess, output, batch_size):
    """``(Y, O, classes)``: scores on the images and on ``E = L * I`` (Grad-CAM++ section 4.1)."""
    h = _as_maps(heatmaps)
    x = _as_images(images, h.shape)
    _check_unit(h)
    bs = _positive_int("batch_size", batch_size)
    scorer = _scorer(model, score, output)
    y, classes = scorer.predict(x, targets, bs)
    if mask_space == "preprocessed":
        e = x * h[..., None].astype(np.float32)
    elif mask_space == "raw":
        if raw_images is None or preprocess is None:
            raise ValueError(
                "mask_space='raw' multiplies the map with the raw images and then preprocesses: pass raw_images= "
                "(n_samples, height, width, channels) and preprocess= (a function raw -> model input)."
            )
        raw = _as_images(raw_images, h.shape, name="raw_images")
        e = _as_images(preprocess(raw * h[..., None].astype(np.float32)), h.shape, name="preprocess(raw_images)")
    else:
        raise ValueError(f"mask_space must be 'preprocessed' (default) or 'raw'; got {mask_space!r}.")
    o, _ = scorer.predict(e, classes, bs)
    return y.astype(np.float64), o.astype(np.float64), classes


def average_drop(
    model: keras.Model,
    images,
    heatmaps,
    targets=None,
    *,
    score: str = "probability",
    mask_space: str = "preprocessed",
    raw_images=None,
    preprocess: Callable | None = None,
    output=None,
    batch_size: int = 64,
    reduction: str | None = "mean",
):
    r"""Average Drop %: how much confidence is lost when only the explanation is shown (lower is better).

    Parameters
    ----------
    model : keras.Model
        Single-input image classifier; not modified.
    images : array-like of shape (n_samples, height, width, channels)
        Preprocessed as the model expects.
    heatmaps : array-like of shape (n_samples, height, width), or Explanation
        Maps in ``[0, 1]`` at the images' resolution.
    targets : None, int or sequence of int, default=None
        Class per image; None uses the model's top-1 class on the full image.
    score : {"probability", "logit", "output"}, default="probability"
        Confidence space (the paper's "output score (confidence)"; softmax recommended).
    mask_space : {"preprocessed", "raw"}, default="preprocessed"
        Where ``E = L * I`` is formed: on the model input (masked pixels become 0, the mean
        colour after mean/std normalisation), or on ``raw_images`` followed by ``preprocess``.
    raw_images : array-like, optional
        Unpreprocessed images, for ``mask_space="raw"``.
    preprocess : callable, optional
        ``raw -> model input``, for ``mask_space="raw"``.
    output : int or str, optional
        Output of a multi-output model.
    batch_size : int, default=64
    reduction : {"mean", None}, default="mean"

    Returns
    -------
    float or ndarray of shape (n_samples,)
        ``100 / N * sum_i max(0, Y_i - O_i) / Y_i``; per image ``100 * max(0, Y - O) / Y`` (NaN
        where ``Y <= 0``, possible only with logits; the mean skips those).

    Raises
    ------
    ValueError
        Maps outside ``[0, 1]``, shape mismatches (both shapes named), bad ``score``.

    Notes
    -----
    ``Y_i`` is the confidence on image *i* and ``O_i`` the confidence on ``E = L \circ I``
    (Grad-CAM++ Eq. 4 with the text's ``1/N``). Two forward passes per image. Score-CAM's
    variant (keeping only the top 50 % pixels) and pytorch-grad-cam's absolute drop are not
    this quantity (Grad-CAM++, Chattopadhyay et al. 2018, section 4.1).

    Examples
    --------
    >>> exp = kg.explain(model, images, method="gradcam++")          # doctest: +SKIP
    >>> kg.metrics.average_drop(model, images, exp.heatmaps)          # doctest: +SKIP
    """
    y, o, _ = _masked_scores(model, images, heatmaps, targets, score=score, mask_space=mask_space,
                             raw_images=raw_images, preprocess=preprocess, output=output, batch_size=batch_size)
    return _reduce(_drop(y, o), reduction, nan_ok=True)


def _drop(y: np.ndarray, o: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(y > 0, 100.0 * np.maximum(0.0, y - o) / np.where(y > 0, y, 1.0), np.nan)


def increase_in_confidence(
    model: keras.Model,
    images,
    heatmaps,
    targets=None,
    *,
    score: str = "probability",
    mask_space: str = "preprocessed",
    raw_images=None,
    preprocess: Callable | None = None,
    output=None,
    batch_size: int = 64,
    reduction: str | None = "mean",
):
    """% Increase in Confidence: how often showing only the explanation raises confidence (higher is better).

    Parameters
    ----------
    model, images, heatmaps, targets, score, mask_space, raw_images, preprocess, output, batch_size
        As in :func:`average_drop`.
    reduction : {"mean", None}, default="mean"

    Returns
    -------
    float or ndarray of shape (n_samples,)
        ``100 / N * sum_i 1[Y_i < O_i]``; per image 100.0 or 0.0.

    Notes
    -----
    Grad-CAM++ Eq. 5. A strict inequality: an unchanged confidence is no increase.

    Examples
    --------
    >>> kg.metrics.increase_in_confidence(model, images, exp.heatmaps)   # doctest: +SKIP
    """
    y, o, _ = _masked_scores(model, images, heatmaps, targets, score=score, mask_space=mask_space,
                             raw_images=raw_images, preprocess=preprocess, output=output, batch_size=batch_size)
    return _reduce(100.0 * (o > y), reduction)


def win_rate(
    model: keras.Model,
    images,
    heatmaps,
    others,
    targets=None,
    *,
    score: str = "probability",
    mask_space: str = "preprocessed",
    raw_images=None,
    preprocess: Callable | None = None,
    output=None,
    batch_size: int = 64,
    reduction: str | None = "mean",
):
    """Win %: how often a method's explanation keeps more confidence than its competitors'.

    Parameters
    ----------
    model, images, targets, score, mask_space, raw_images, preprocess, output, batch_size
        As in :func:`average_drop`.
    heatmaps : array-like of shape (n_samples, height, width), or Explanation
        The maps of the method being scored.
    others : array-like of shape (n_samples, height, width), or a list of such arrays
        The competing method(s)' maps for the same images.
    reduction : {"mean", None}, default="mean"

    Returns
    -------
    float or ndarray of int8, shape (n_samples,)
        ``"mean"``: the win percentage. ``None``: per image ``1`` (win), ``0`` (tie) or ``-1``
        (loss), so ties are reported separately: ``100 * mean(values == 0)`` is the tie %.

    Notes
    -----
    Grad-CAM++ Eq. 6: a win when the fall in confidence ``Y - O`` with this map is smaller than
    with the other map, i.e. ``O_this > O_other`` (unclipped). With several competitors a win
    means beating every one of them, and a tie means equalling the best of them. With one
    competitor, the two methods' win rates and the tie rate add up to 100.

    Examples
    --------
    >>> kg.metrics.win_rate(model, images, pp.heatmaps, cam.heatmaps)   # doctest: +SKIP
    """
    if isinstance(others, Explanation) or (not isinstance(others, (list, tuple)) and _array(others).ndim == 3):
        others = [others]
    others = list(others)
    if not others:
        raise ValueError("win_rate needs at least one competing set of maps in `others`.")
    h = _as_maps(heatmaps)
    scorer = _scorer(model, score, output)
    kw = dict(score=score, mask_space=mask_space, raw_images=raw_images, preprocess=preprocess, output=output,
              batch_size=batch_size)
    y, o, classes = _masked_scores(scorer, images, h, targets, **kw)
    best = None
    for k, other in enumerate(others):
        oh = _as_maps(other, name=f"others[{k}]")
        if oh.shape != h.shape:
            raise ValueError(f"others[{k}] has shape {oh.shape} but heatmaps has shape {h.shape}.")
        _, ok, _ = _masked_scores(scorer, images, oh, classes, **kw)
        best = ok if best is None else np.maximum(best, ok)
    return _win_outcome(o, best, reduction)


def _win_outcome(o: np.ndarray, best_other: np.ndarray, reduction):
    outcome = np.sign(o - best_other).astype(np.int8)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be 'mean' or None (per-image values); got {reduction!r}.")
    return outcome if reduction is None else float(100.0 * np.mean(outcome == 1))


# ================================================================================================
# Deletion / insertion (RISE)
# ================================================================================================
def _substrate(substrate, x: np.ndarray, blur_kernel: int, blur_sigma: float) -> np.ndarray:
    if isinstance(substrate, str):
        if substrate != "blur":
            raise ValueError(f"substrate must be a number, an array, 'blur' or a callable; got {substrate!r}.")
        return gaussian_blur(x, blur_kernel, blur_sigma)
    if callable(substrate):
        return _as_images(substrate(x), x.shape[:3], name="substrate(images)")
    s = np.asarray(substrate, np.float32)
    try:
        return np.ascontiguousarray(np.broadcast_to(s, x.shape))
    except ValueError:
        raise ValueError(
            f"substrate of shape {s.shape} does not broadcast to images of shape {x.shape}; give a number, a "
            "(channels,) colour, an array shaped like the images, 'blur' or a callable images -> array."
        ) from None


def _order_ranks(h: np.ndarray) -> np.ndarray:
    """Rank of each pixel by decreasing saliency (0 = most salient); ties in row-major order."""
    n = h.shape[0]
    order = np.argsort(-h.reshape(n, -1), axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(order.shape[1])[None, :], axis=1)
    return rank.reshape(h.shape)


def _counts(hw: int, steps: int | None, height: int, width: int) -> np.ndarray:
    n = height if steps is None else _positive_int("steps", steps)
    if n > hw:
        raise ValueError(f"steps={n} is more than the {hw} pixels of the image.")
    return np.arange(n + 1, dtype=np.int64) * hw // n  # floor(i * HW / n) pixels changed after step i


def _curve(mode, model, images, heatmaps, targets, steps, substrate, blur_kernel, blur_sigma, score, output, batch_size):
    h = _as_maps(heatmaps)
    x = _as_images(images, h.shape)
    bs = _positive_int("batch_size", batch_size)
    scorer = _scorer(model, score, output)
    _, classes = scorer.predict(x, targets, bs)
    sub = _substrate(substrate, x, blur_kernel, blur_sigma)
    start, end = (x, sub) if mode == "deletion" else (sub, x)
    counts = _counts(h.shape[1] * h.shape[2], steps, h.shape[1], h.shape[2])
    return scorer.curves(start, end, _order_ranks(h), counts, classes, bs)


def deletion_curve(
    model: keras.Model,
    images,
    heatmaps,
    targets=None,
    *,
    steps: int | None = None,
    substrate=0.0,
    score: str = "probability",
    output=None,
    batch_size: int = 64,
    blur_kernel: int = 11,
    blur_sigma: float = 5.0,
) -> np.ndarray:
    """Confidence as the most salient pixels are deleted first (RISE, Petsiuk et al. 2018).

    Parameters
    ----------
    model : keras.Model
        Single-input image classifier; not modified.
    images : array-like of shape (n_samples, height, width, channels)
        Preprocessed as the model expects.
    heatmaps : array-like of shape (n_samples, height, width), or Explanation
        Saliency at the images' resolution; only the order of the pixels matters.
    targets : None, int or sequence of int, default=None
        Class per image; None: the top-1 class of the unperturbed image.
    steps : int, optional
        Number of steps ``n``: after step ``i``, ``floor(i * H * W / n)`` pixels are changed
        (all channels of a pixel together), so every step changes about ``H * W / n`` pixels.
        None uses ``n = H`` (``W`` pixels per step), RISE's 224 steps of 224 pixels at 224x224.
    substrate : float, array, "blur" or callable, default=0.0
        Value of deleted pixels: a number (0 is the mean colour in normalised space, RISE's
        deletion), a colour or image-shaped array, ``"blur"`` (:func:`gaussian_blur`) or a
        callable ``images -> array``.
    score : {"probability", "logit", "output"}, default="probability"
    output : int or str, optional
    batch_size : int, default=64
        Perturbed images per forward pass.
    blur_kernel, blur_sigma : int, float, default=11, 5.0
        For ``substrate="blur"``.

    Returns
    -------
    ndarray of float32, shape (n_samples, n_steps + 1)
        Scores after ``0, 1, ..., n`` steps: ``[:, 0]`` is the unperturbed image and ``[:, -1]``
        the substrate alone.

    Notes
    -----
    Pixels are ordered by decreasing saliency with a stable sort (ties keep row-major order;
    the reference's ``argsort`` leaves them arbitrary). ``n + 1`` forward passes per image, run
    ``batch_size`` at a time in one compiled function. See :func:`deletion_auc`.
    """
    return _curve("deletion", model, images, heatmaps, targets, steps, substrate, blur_kernel, blur_sigma, score,
                  output, batch_size)


def insertion_curve(
    model: keras.Model,
    images,
    heatmaps,
    targets=None,
    *,
    steps: int | None = None,
    substrate="blur",
    score: str = "probability",
    output=None,
    batch_size: int = 64,
    blur_kernel: int = 11,
    blur_sigma: float = 5.0,
) -> np.ndarray:
    """Confidence as the most salient pixels are inserted first into a blurred copy (RISE).

    Parameters
    ----------
    model, images, heatmaps, targets, steps, score, output, batch_size, blur_kernel, blur_sigma
        As in :func:`deletion_curve`.
    substrate : float, array, "blur" or callable, default="blur"
        Starting image: RISE blurs the image (:func:`gaussian_blur`, kernel 11, sigma 5).

    Returns
    -------
    ndarray of float32, shape (n_samples, n_steps + 1)
        ``[:, 0]`` is the substrate alone and ``[:, -1]`` the full image.
    """
    return _curve("insertion", model, images, heatmaps, targets, steps, substrate, blur_kernel, blur_sigma, score,
                  output, batch_size)


def deletion_auc(
    model: keras.Model,
    images,
    heatmaps,
    targets=None,
    *,
    steps: int | None = None,
    substrate=0.0,
    score: str = "probability",
    output=None,
    batch_size: int = 64,
    blur_kernel: int = 11,
    blur_sigma: float = 5.0,
    reduction: str | None = "mean",
):
    """Area under the deletion curve (lower is better).

    Parameters
    ----------
    model, images, heatmaps, targets, steps, substrate, score, output, batch_size, blur_kernel, blur_sigma
        As in :func:`deletion_curve`.
    reduction : {"mean", None}, default="mean"

    Returns
    -------
    float or ndarray of shape (n_samples,)
        :func:`auc` of each curve, ``(sum_i s_i - s_0 / 2 - s_n / 2) / n``.

    Examples
    --------
    >>> kg.metrics.deletion_auc(model, images, exp.heatmaps, steps=32)   # doctest: +SKIP
    """
    curves = deletion_curve(model, images, heatmaps, targets, steps=steps, substrate=substrate, score=score,
                            output=output, batch_size=batch_size, blur_kernel=blur_kernel, blur_sigma=blur_sigma)
    return _reduce(auc(curves), reduction)


def insertion_auc(
    model: keras.Model,
    images,
    heatmaps,
    targets=None,
    *,
    steps: int | None = None,
    substrate="blur",
    score: str = "probability",
    output=None,
    batch_size: int = 64,
    blur_kernel: int = 11,
    blur_sigma: float = 5.0,
    reduction: str | None = "mean",
):
    """Area under the insertion curve (higher is better).

    Parameters
    ----------
    model, images, heatmaps, targets, steps, substrate, score, output, batch_size, blur_kernel, blur_sigma
        As in :func:`insertion_curve`.
    reduction : {"mean", None}, default="mean"

    Returns
    -------
    float or ndarray of shape (n_samples,)
    """
    curves = insertion_curve(model, images, heatmaps, targets, steps=steps, substrate=substrate, score=score,
                             output=output, batch_size=batch_size, blur_kernel=blur_kernel, blur_sigma=blur_sigma)
    return _reduce(auc(curves), reduction)


# ================================================================================================
# Occlusion (Grad-CAM section 5.3)
# ================================================================================================
def _occlusion_grid(height: int, width: int, patch, stride) -> tuple[int, int, np.ndarray]:
    side = min(height, width)
    p = max(1, round(side / 7)) if patch is None else _positive_int("patch", patch)
    s = max(1, p // 4) if stride is None else _positive_int("stride", stride)
    if p > side:
        raise ValueError(f"patch={p} is larger than the image ({height}x{width}).")

    def starts(size):
        st = list(range(0, size - p + 1, s))
        if st[-1] + p < size:
            st.append(size - p)  # cover the border
        return np.array(st)

    ys, xs = starts(height), starts(width)
    y0, x0 = np.meshgrid(ys, xs, indexing="ij")
    windows = np.stack([y0, x0, y0 + p, x0 + p], -1).reshape(-1, 4)
    return len(ys), len(xs), windows


def _pool_windows(h: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """Mean of each map over each window, with a summed-area table: ``(N, n_windows)``."""
    sat = np.zeros((h.shape[0], h.shape[1] + 1, h.shape[2] + 1))
    sat[:, 1:, 1:] = h.cumsum(1).cumsum(2)
    y0, x0, y1, x1 = windows.T
    total = sat[:, y1, x1] - sat[:, y0, x1] - sat[:, y1, x0] + sat[:, y0, x0]
    return total / ((y1 - y0) * (x1 - x0))


def occlusion_map(
    model: keras.Model,
    images,
    targets=None,
    *,
    patch: int | None = None,
    stride: int | None = None,
    fill=0.0,
    score: str = "probability",
    output=None,
    batch_size: int = 64,
) -> np.ndarray:
    """Drop in confidence when each patch of the image is occluded (Zeiler & Fergus style).

    Parameters
    ----------
    model : keras.Model
        Single-input image classifier; not modified.
    images : array-like of shape (n_samples, height, width, channels)
        Preprocessed as the model expects.
    targets : None, int or sequence of int, default=None
        Class per image; None: the top-1 class of the unoccluded image.
    patch : int, optional
        Side of the square patch; None: ``round(min(H, W) / 7)`` (32 at 224).
    stride : int, optional
        Step between patches; None: ``patch // 4`` (8 at 224). A last row/column of patches is
        added flush with the border when the stride does not reach it.
    fill : float or array, default=0.0
        Value of occluded pixels (0 = mean colour in normalised space); a number, a
        ``(channels,)`` colour or an image-shaped array.
    score : {"probability", "logit", "output"}, default="probability"
    output : int or str, optional
    batch_size : int, default=64

    Returns
    -------
    ndarray of float32, shape (n_samples, grid_height, grid_width)
        ``y(x) - y(x with the patch at that grid position filled)``: larger = more evidence.

    Examples
    --------
    >>> occ = kg.metrics.occlusion_map(model, images, patch=8, stride=4)   # doctest: +SKIP
    """
    x = _as_images(images)
    bs = _positive_int("batch_size", batch_size)
    gh, gw, windows = _occlusion_grid(x.shape[1], x.shape[2], patch, stride)
    scorer = _scorer(model, score, output)
    base, classes = scorer.predict(x, targets, bs)
    fill_img = _substrate(fill, x, 11, 5.0)
    occluded = scorer.occlusions(x, windows, fill_img, classes, bs)
    return (base[:, None] - occluded).reshape(x.shape[0], gh, gw)


def occlusion_correlation(
    model: keras.Model,
    images,
    heatmaps,
    targets=None,
    *,
    patch: int | None = None,
    stride: int | None = None,
    fill=0.0,
    score: str = "probability",
    output=None,
    batch_size: int = 64,
    occlusion=None,
    reduction: str | None = "mean",
):
    """Spearman rank correlation between each map and an occlusion map (Grad-CAM "faithfulness").

    Parameters
    ----------
    model, images, targets, patch, stride, fill, score, output, batch_size
        As in :func:`occlusion_map`.
    heatmaps : array-like of shape (n_samples, height, width), or Explanation
    occlusion : ndarray of shape (n_samples, grid_height, grid_width), optional
        A precomputed :func:`occlusion_map` with the same ``patch``/``stride`` (to compare
        several methods without re-running the occlusions).
    reduction : {"mean", None}, default="mean"

    Returns
    -------
    float or ndarray of shape (n_samples,)
        Spearman rho per image in ``[-1, 1]`` (NaN where a map is constant; the mean skips them).

    Notes
    -----
    Each map is averaged over the occlusion windows (the same grid as the occlusion map), then
    ranks are compared with average ties. The paper (2510 VOC07 images) reports 0.254 for
    Grad-CAM; patch, stride, fill and score space are unspecified there (Grad-CAM, Selvaraju et al. 2017, section 5.3).

    Examples
    --------
    >>> kg.metrics.occlusion_correlation(model, images, exp.heatmaps, patch=8, stride=4)   # doctest: +SKIP
    """
    h = _as_maps(heatmaps)
    x = _as_images(images, h.shape)
    gh, gw, windows = _occlusion_grid(h.shape[1], h.shape[2], patch, stride)
    if occlusion is None:
        occ = occlusion_map(model, x, targets, patch=patch, stride=stride, fill=fill, score=score, output=output,
                            batch_size=batch_size)
    else:
        occ = _array(occlusion)
        if occ.shape != (h.shape[0], gh, gw):
            raise ValueError(
                f"occlusion has shape {occ.shape} but patch/stride give a grid of {(h.shape[0], gh, gw)}; compute it "
                "with occlusion_map(..., patch=, stride=) using the same values."
            )
    pooled = _pool_windows(h, windows)
    values = spearman(pooled, occ.reshape(h.shape[0], -1))
    return _reduce(values, reduction, nan_ok=True)


# ================================================================================================
# Model-parameter randomisation (Adebayo et al. 2018)
# ================================================================================================
@dataclass
class RandomizationResult:
    """Result of :func:`randomization_check`.

    Attributes
    ----------
    method : str
        The explained method.
    mode : str
        ``"cascading"`` or ``"independent"``.
    steps : tuple of str
        ``"none"`` for step 0 (trained weights, on the copy), then the path of the layer
        randomised at each step (cascading: that layer and all before it in this list).
    spearman : ndarray of shape (n_steps + 1, n_samples)
        Signed Spearman rho between each step's map and the trained model's map.
    abs_spearman : ndarray of shape (n_steps + 1, n_samples)
        The same on absolute values of the maps.
    """

    method: str
    mode: str
    steps: tuple
    spearman: np.ndarray
    abs_spearman: np.ndarray
    layer: str | tuple = ""

    def mean(self, kind: str = "abs_spearman") -> np.ndarray:
        """Mean similarity over images at each step, ``(n_steps + 1,)``."""
        if kind not in ("spearman", "abs_spearman"):
            raise ValueError(f"kind must be 'spearman' or 'abs_spearman'; got {kind!r}.")
        return getattr(self, kind).mean(1)

    def summary(self, kind: str = "abs_spearman") -> float:
        """Mean similarity over all randomisation steps (step 0 excluded): low = sensitive = passes."""
        m = self.mean(kind)
        return float(m[1:].mean()) if m.size > 1 else float("nan")


def _comparison_map(exp: Explanation) -> np.ndarray:
    """The map compared across steps: channel-summed attributions if any, else heatmaps."""
    if exp.attributions is not None:
        a = np.asarray(exp.attributions, np.float64)
        return a.sum(-1) if a.ndim == 4 else a
    return np.asarray(exp.heatmaps, np.float64)


def _redraw(layer: keras.layers.Layer, seed: int) -> None:
    """Re-initialise every weight of ``layer`` with the layer's own initialiser, seeded."""
    for k, var in enumerate(layer.weights):
        name = var.name.split("/")[-1].split(":")[0]
        init = getattr(layer, f"{name}_initializer", None)
        if init is None:
            init = keras.initializers.GlorotUniform() if len(var.shape) >= 2 else keras.initializers.Zeros()
        init = keras.initializers.get(init)
        config = init.get_config()
        if "seed" in config:
            config = dict(config, seed=int(seed) * 1000 + k)
            init = type(init).from_config(config)
        var.assign(keras.ops.cast(init(tuple(var.shape), dtype=var.dtype), var.dtype))


def _weighted_layers(model: keras.Model) -> list:
    infos = list_layers(model, spatial_only=False)
    return [i for i in infos if not isinstance(i.layer, keras.Model) and getattr(i.layer, "weights", None)]


def randomization_check(
    model: keras.Model,
    images,
    method="gradcam",
    layer=None,
    targets=None,
    *,
    mode: str = "cascading",
    layers: Sequence[str] | None = None,
    seed: int = 0,
    batch_size: int = 32,
    **options,
) -> RandomizationResult:
    """Model-parameter randomisation test (Adebayo et al., NeurIPS 2018), on a copy of the model.

    A method whose maps depend on what the model learned should change when the weights are
    re-initialised; a method whose maps stay the same behaves like an edge detector.

    Parameters
    ----------
    model : keras.Model
        Functional or Sequential model (it must work with ``keras.models.clone_model``). It is
        never modified: the randomisation happens on a clone carrying a copy of its weights.
    images : array-like of shape (n_samples, ...)
        Preprocessed inputs.
    method : str or BaseCAM subclass, default="gradcam"
        A name from :data:`keras_gradcam.METHODS` (or any name :func:`keras_gradcam.get_method`
        knows, e.g. ``"guided-backprop"``).
    layer : str, optional
        Explained layer (None: the method's default).
    targets : None, int or sequence of int, default=None
        Classes explained; None explains the **trained** model's top-1 classes at every step.
    mode : {"cascading", "independent"}, default="cascading"
        Cascading re-initialises one more layer per step, from the top (output) layer down;
        independent re-initialises one layer at a time, restoring the others.
    layers : sequence of str, optional
        Paths of the layers to randomise, in order (default: every layer with weights, top
        down, nested models included).
    seed : int, default=0
        Seed of the re-drawn weights.
    batch_size : int, default=32
    **options
        Method options (``n_samples=``, ``steps=``, ...).

    Returns
    -------
    RandomizationResult
        Per-step, per-image signed and absolute Spearman similarity with the trained model's
        maps; ``result.mean()`` per step, ``result.summary()`` one number.

    Raises
    ------
    TypeError
        The model cannot be cloned (subclassed models).
    ValueError
        Unknown layer names in ``layers``, bad ``mode``.

    Notes
    -----
    Each re-initialised variable is re-drawn with its layer's own initialiser
    (``kernel_initializer``, ``bias_initializer``, ``gamma_initializer``, ...; a seeded copy
    of it), falling back to Glorot-uniform / zeros. Biases thus usually become zero.
    Every step is explained by a freshly built explainer of the same configuration (class,
    layer, options), so whatever a method builds at setup (the guided copy of Guided Grad-CAM,
    compiled functions) reads the re-drawn weights; this costs one retrace per step.
    The compared map is ``Explanation.attributions`` summed over channels when the method has
    attributions (Guided Backprop), else ``Explanation.heatmaps``. Similarity is Spearman rho
    with and without absolute values (Adebayo et al. also use SSIM and HOG similarity, not
    computed here). A map that becomes constant (e.g. all zero) counts as similarity 0. There
    is no pass/fail threshold in the paper; :meth:`RandomizationResult.summary` gives the mean
    similarity across steps (low is good).

    Examples
    --------
    >>> res = kg.metrics.randomization_check(model, images[:8], "gradcam")   # doctest: +SKIP
    >>> res.steps, res.mean().round(2)                                       # doctest: +SKIP
    """
    from .methods.registry import get_method  # late import: explain imports methods

    if mode not in ("cascading", "independent"):
        raise ValueError(f"mode must be 'cascading' or 'independent'; got {mode!r}.")
    cls = get_method(method)
    reference = cls(model, layer, batch_size=batch_size, **options)(images, targets)
    t = reference.targets if reference.targets is not None else targets
    try:
        copy = keras.models.clone_model(model)
    except Exception as err:  # noqa: BLE001 - re-raised with the fix
        raise TypeError(
            f"randomization_check works on a copy made with keras.models.clone_model, which failed for "
            f"{type(model).__name__}: {err}. Use a Functional or Sequential model."
        ) from err
    copy.set_weights(model.get_weights())
    candidates = _weighted_layers(copy)
    by_path = {i.path: i for i in candidates}
    if layers is None:
        chosen = list(reversed(candidates))
    else:
        unknown = [p for p in layers if p not in by_path]
        if unknown:
            raise ValueError(f"layers {unknown} are not layers with weights of the model; choose from {list(by_path)}.")
        chosen = [by_path[p] for p in layers]
    copy_layer = reference.layer if isinstance(layer, keras.layers.Layer) else layer

    def current():
        # A fresh explainer of the same configuration at every step: whatever a method builds at
        # setup (a private copy of the model, cached weights, compiled functions) is built from the
        # copy's weights as they are now, so no method can explain a stale model.
        return cls(copy, copy_layer, batch_size=batch_size, **options)

    ref_map = _comparison_map(reference)

    def similarity(exp):
        m = _comparison_map(exp)
        signed = np.nan_to_num(spearman(ref_map, m), nan=0.0)
        absolute = np.nan_to_num(spearman(np.abs(ref_map), np.abs(m)), nan=0.0)
        return signed, absolute

    signed, absolute = [], []
    s0, a0 = similarity(current()(images, t))
    signed.append(s0)
    absolute.append(a0)
    for step, info in enumerate(chosen, start=1):
        saved = None if mode == "cascading" else [w.numpy() for w in info.layer.weights]
        _redraw(info.layer, seed + step)
        s, a = similarity(current()(images, t))
        signed.append(s)
        absolute.append(a)
        if saved is not None:
            for var, value in zip(info.layer.weights, saved):
                var.assign(value)
    return RandomizationResult(
        method=cls.name,
        mode=mode,
        steps=("none",) + tuple(i.path for i in chosen),
        spearman=np.stack(signed),
        abs_spearman=np.stack(absolute),
        layer=reference.layer,
    )
