"""Checks of what the metrics take: heatmaps, masks, boxes and images, turned into numpy arrays.

Every metric calls these first, so a wrong shape or value fails with the same message
everywhere, naming the argument, what it received and what was expected. The conventions (shapes,
boxes with an exclusive max, soft masks in ``[0, 1]``) are in the package docstring,
:mod:`keras_gradcam.metrics`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ..core.explanation import Explanation
from ..core.validate import one_of

__all__ = [
    "REDUCTIONS",
    "as_array",
    "as_maps",
    "mask_weights",
    "object_pixels",
    "as_masks",
    "as_boxes",
    "as_images",
    "check_unit",
    "check_nonnegative",
    "check_reduction",
    "reduce_values",
]

#: What ``reduction=`` accepts: the mean over images, or None for the per-image values.
REDUCTIONS: tuple = ("mean", None)


def as_array(x) -> np.ndarray:
    """A tensor or array-like as a numpy array, its dtype kept (maps stay float64 for exact sums)."""
    return x.numpy() if tf.is_tensor(x) else np.asarray(x)


def as_maps(heatmaps, name: str = "heatmaps") -> np.ndarray:
    """Maps as float64 ``(N, H, W)``; an Explanation gives its ``heatmaps``."""
    if isinstance(heatmaps, Explanation):
        heatmaps = heatmaps.heatmaps
    h = as_array(heatmaps)
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


def mask_weights(m, name: str = "masks") -> np.ndarray:
    """A mask array as float64 weights in ``[0, 1]``: bool and 0/1 masks exactly, other floats as soft weights.

    Integer masks must hold 0 and 1 only, float masks values in ``[0, 1]``; anything else is refused
    (a 0/255 image mask would otherwise count 255 times).
    """
    m = as_array(m)
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


def object_pixels(w: np.ndarray) -> np.ndarray:
    """Object pixels of mask weights: weight ``>= 0.5`` (exactly the True/1 pixels of a bool/0-1 mask)."""
    return w >= 0.5


def as_masks(masks, shape: tuple, name: str = "masks", ref: str = "heatmaps") -> np.ndarray:
    """Mask weights ``(N, H, W)`` in ``[0, 1]`` of exactly ``shape`` (see :func:`mask_weights`)."""
    m = as_array(masks)
    if m.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a boolean, 0/1 or [0, 1] float array; got dtype {m.dtype}.")
    if m.shape != tuple(shape):
        raise ValueError(
            f"{name} has shape {m.shape} but {ref} has shape {tuple(shape)}; give one (height, width) "
            f"mask per map, at the maps' resolution (resize the masks with nearest-neighbour, or the maps, first)."
        )
    return mask_weights(m, name)


def as_boxes(boxes, n: int, name: str = "boxes", shape: tuple | None = None) -> np.ndarray:
    """Boxes as int64 ``(N, M, 4)``; ``(N, 4)`` becomes ``M = 1``.

    A box with ``y_min == y_max`` or ``x_min == x_max`` is empty (padding); an inverted box
    (``y_min > y_max`` or ``x_min > x_max``) is refused, naming it. With ``shape = (H, W)`` the
    boxes are clipped to the image, ``[0, H] x [0, W]``.
    """
    b = as_array(boxes)
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


def as_images(images, maps_shape: tuple | None = None, name: str = "images") -> np.ndarray:
    """Channels-last float32 images ``(N, H, W, C)`` matching ``maps_shape`` ``(N, H, W)``."""
    x = as_array(images)
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


def check_unit(h: np.ndarray, name: str = "heatmaps") -> None:
    """Refuse maps outside ``[0, 1]`` (within ``1e-6``), where a metric uses them as soft masks."""
    lo, hi = float(h.min()), float(h.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(
            f"{name} must lie in [0, 1] to be used as a soft mask; got values in [{lo:.4g}, {hi:.4g}]. "
            "Min-max normalise them first (Explanation.heatmaps already are)."
        )


def check_nonnegative(h: np.ndarray, name: str = "heatmaps") -> None:
    """Refuse maps with negative values, where a metric reads them as energy or a distribution."""
    if h.min() < 0:
        raise ValueError(
            f"{name} has negative values (min {h.min():.4g}); this metric needs non-negative maps. "
            "Apply a ReLU or min-max normalise them first."
        )


def check_reduction(reduction) -> None:
    """Refuse a ``reduction=`` other than ``"mean"`` or None."""
    one_of("reduction", reduction, REDUCTIONS)


def reduce_values(values: np.ndarray, reduction, nan_ok: bool = False):
    """Per-image ``values`` as ``reduction`` asks: the ndarray itself (None) or their mean as a float.

    With ``nan_ok`` the mean skips NaN values (images a metric leaves out), NaN if all are.
    """
    check_reduction(reduction)
    if reduction is None:
        return values
    if nan_ok:
        return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    return float(np.mean(values))
