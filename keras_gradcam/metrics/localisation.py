"""Map-only metrics: does the map point at the object? They compare maps with ground truth and never run a model.

The pointing games (energy share on the object, hit of the maximum), weakly-supervised box
localisation (Grad-CAM section 4.1), instance coverage (the Grad-CAM++ multi-instance claim), map
area and entropy (sharpness), and the conversions between boxes and masks they rely on.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from ..core.validate import one_of, positive_float
from .arrays import as_array, as_boxes, as_maps, as_masks, check_nonnegative, mask_weights, object_pixels, reduce_values
from .stats import label_components

__all__ = [
    "Localization",
    "boxes_to_masks",
    "masks_to_boxes",
    "energy_pointing_game",
    "pointing_game",
    "pointing_tolerance",
    "localization",
    "instance_coverage",
    "map_area",
    "map_entropy",
]


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
    arr = as_array(boxes)
    b = as_boxes(arr, arr.shape[0] if arr.ndim else 0, shape=(h, w))
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
    m = as_array(masks)
    if m.ndim != 3:
        raise ValueError(f"masks must have shape (n_samples, height, width); got {m.shape}.")
    m = object_pixels(mask_weights(m))
    _, h, w = m.shape
    rows, cols = m.any(2), m.any(1)
    boxes = np.stack(
        [rows.argmax(1), cols.argmax(1), h - rows[:, ::-1].argmax(1), w - cols[:, ::-1].argmax(1)], axis=1
    ).astype(np.int64)
    boxes[~rows.any(1)] = 0
    return boxes


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
    h = as_maps(heatmaps)
    m = as_masks(masks, h.shape)
    check_nonnegative(h)
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
    return reduce_values(values, reduction, nan_ok=True)


#: TorchRay's pointing-game tolerance in pixels and the image side it was set for.
TORCHRAY_TOLERANCE, TORCHRAY_SIDE = 15, 224


def pointing_tolerance(shape) -> float:
    """The default pointing-game tolerance, in pixels, for images of ``shape``: 15/224 of the shorter side.

    TorchRay's pointing-game benchmark (Fong et al., 2019), reproducing Zhang et al. (2016,
    2018), counts a hit within 15 px of the object on images of about 224 px. A fixed 15 px on a
    32 px image covers most of it and nearly every maximum would count as a hit; so the default
    keeps the benchmark's share of the image instead: ``15 * min(height, width) / 224``, exactly
    15 px at 224 px and about 2.1 px at 32 px. :func:`pointing_game`, :func:`keras_gradcam.evaluate`,
    :class:`keras_gradcam.GradCAMCallback` and :func:`keras_gradcam.audit` all use it when no
    tolerance is given.

    Parameters
    ----------
    shape : (int, int)
        ``(height, width)`` of the images (and maps).

    Returns
    -------
    float
        The tolerance in pixels.

    Raises
    ------
    ValueError
        ``shape`` is not two sizes ``>= 1``.

    References
    ----------
    Zhang, Bargal, Lin, Brandt, Shen, Sclaroff, "Top-down neural attention by excitation
    backprop", ECCV 2016 and IJCV 126, 2018 (the pointing game). Fong, Patrick, Vedaldi,
    "Understanding deep networks via extremal perturbations and smooth masks", ICCV 2019
    (TorchRay, whose benchmark uses 15 px).

    Examples
    --------
    >>> from keras_gradcam.metrics import pointing_tolerance
    >>> pointing_tolerance((224, 448)), round(pointing_tolerance((32, 32)), 3)
    (15.0, 2.143)
    """
    try:
        height, width = (int(v) for v in shape)
        valid = height >= 1 and width >= 1 and (height, width) == tuple(shape)
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(f"shape must be (height, width), two sizes >= 1; got {shape!r}.")
    return TORCHRAY_TOLERANCE * min(height, width) / TORCHRAY_SIDE


def pointing_game(heatmaps, masks, *, tolerance: float | None = None, reduction: str | None = "mean"):
    """Whether each map's maximum points at the object (Zhang et al., ECCV 2016).

    Parameters
    ----------
    heatmaps : array-like of shape (n_samples, height, width), or Explanation
    masks : array-like of shape (n_samples, height, width)
        Object pixels of the explained class, boolean or 0/1; float masks with soft values in
        ``[0, 1]`` have their pixels with weight ``>= 0.5`` as object. No mask may be empty.
    tolerance : float, optional
        In pixels: a hit is a mask pixel at squared distance ``d^2 < tolerance^2`` from the
        maximum (TorchRay's strict rule). ``0`` (or anything ``<= 1``) means the maximum itself
        must be inside the mask. None (default): TorchRay's 15 px at 224 px scaled to the maps,
        ``15 * min(height, width) / 224`` (:func:`pointing_tolerance`): 15 px at 224 px, about
        2.1 px at 32 px. Pass ``tolerance=15`` for the benchmark's fixed 15 px.
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

    References
    ----------
    Zhang et al., "Top-down neural attention by excitation backprop", ECCV 2016 and IJCV 2018;
    the 15 px tolerance is TorchRay's (Fong et al., ICCV 2019), on images of about 224 px.

    Examples
    --------
    >>> import numpy as np
    >>> from keras_gradcam.metrics import pointing_game
    >>> h = np.zeros((1, 5, 5)); h[0, 0, 0] = 1
    >>> m = np.zeros((1, 5, 5), bool); m[0, 2, 2] = True
    >>> pointing_game(h, m, tolerance=0), pointing_game(h, m, tolerance=3)
    (0.0, 1.0)
    """
    h = as_maps(heatmaps)
    m = object_pixels(as_masks(masks, h.shape))
    if tolerance is None:
        tolerance = pointing_tolerance(h.shape[1:])
    tolerance = positive_float("tolerance", tolerance, allow_zero=True)
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
    return reduce_values(hits.astype(np.float64), reduction)


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
    h = as_maps(heatmaps)
    gt = as_boxes(boxes, h.shape[0], shape=h.shape[1:])
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be a fraction of the map's maximum in [0, 1]; got {threshold!r}.")
    one_of("connectivity", connectivity, (8, 4))
    n, height, width = h.shape
    peak = h.max((1, 2), keepdims=True)
    binary = (h >= threshold * peak) & (peak > 0)
    labels = label_components(binary, connectivity)
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
    h = as_maps(heatmaps)
    om = as_array(object_masks)
    if om.ndim != 4 or om.shape[0] != h.shape[0] or om.shape[2:] != h.shape[1:]:
        raise ValueError(
            f"object_masks has shape {om.shape} but heatmaps has shape {h.shape}; expected "
            f"(n_samples, max_objects, height, width) = ({h.shape[0]}, K, {h.shape[1]}, {h.shape[2]})."
        )
    om = object_pixels(mask_weights(om, "object_masks"))
    valid = om.any((2, 3))
    if not valid.any(1).all():
        raise ValueError(f"images {np.flatnonzero(~valid.any(1))[:10].tolist()} have no object instance.")
    peak = h.max((1, 2))
    inst_peak = np.where(om, h[:, None], -np.inf).max((2, 3))
    covered = valid & (inst_peak >= threshold * peak[:, None]) & (peak[:, None] > 0)
    values = covered.sum(1) / valid.sum(1)
    return reduce_values(values.astype(np.float64), reduction)


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
    h = as_maps(heatmaps)
    peak = h.max((1, 2), keepdims=True)
    values = ((h >= threshold * peak) & (peak > 0)).mean((1, 2))
    return reduce_values(values, reduction)


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
    h = as_maps(heatmaps)
    check_nonnegative(h)
    n = h.shape[0]
    flat = h.reshape(n, -1)
    total = flat.sum(1, keepdims=True)
    p = np.where(total > 0, flat / np.where(total > 0, total, 1.0), 1.0 / flat.shape[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(p > 0, p * np.log(p), 0.0).sum(1)
    values = ent / math.log(flat.shape[1]) if flat.shape[1] > 1 else np.zeros(n)
    return reduce_values(values, reduction)
