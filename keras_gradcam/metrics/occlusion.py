"""Occlusion: the drop in confidence when each patch of the image is hidden, and its agreement with a map.

The occlusion map (Zeiler & Fergus style) and the rank correlation of a saliency map with it, the
"faithfulness" of Grad-CAM section 5.3. The occluded images are built and scored inside one
compiled :class:`~keras_gradcam.metrics.scoring.Scorer` function.
"""

from __future__ import annotations

import keras
import numpy as np

from ..core.validate import positive_int
from .arrays import as_array, as_images, as_maps, reduce_values
from .scoring import make_substrate, scorer_for
from .stats import spearman

__all__ = ["occlusion_grid", "occlusion_map", "occlusion_correlation"]


def occlusion_grid(height: int, width: int, patch, stride) -> tuple[int, int, np.ndarray]:
    """The occlusion windows of an image: ``(grid_height, grid_width, windows)``.

    ``windows`` is int ``(grid_height * grid_width, 4)``, ``(y0, x0, y1, x1)`` with the max
    exclusive, in row-major grid order; ``patch`` None is ``round(min(H, W) / 7)`` and
    ``stride`` None a quarter of the patch. A last row/column flush with the border is added
    when the stride does not reach it.
    """
    side = min(height, width)
    p = max(1, round(side / 7)) if patch is None else positive_int("patch", patch)
    s = max(1, p // 4) if stride is None else positive_int("stride", stride)
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
    x = as_images(images)
    bs = positive_int("batch_size", batch_size)
    gh, gw, windows = occlusion_grid(x.shape[1], x.shape[2], patch, stride)
    scorer = scorer_for(model, score, output)
    base, classes = scorer.predict(x, targets, bs)
    fill_img = make_substrate(fill, x, 11, 5.0)
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
    h = as_maps(heatmaps)
    x = as_images(images, h.shape)
    gh, gw, windows = occlusion_grid(h.shape[1], h.shape[2], patch, stride)
    if occlusion is None:
        occ = occlusion_map(model, x, targets, patch=patch, stride=stride, fill=fill, score=score, output=output,
                            batch_size=batch_size)
    else:
        occ = as_array(occlusion)
        if occ.shape != (h.shape[0], gh, gw):
            raise ValueError(
                f"occlusion has shape {occ.shape} but patch/stride give a grid of {(h.shape[0], gh, gw)}; compute it "
                "with occlusion_map(..., patch=, stride=) using the same values."
            )
    pooled = _pool_windows(h, windows)
    values = spearman(pooled, occ.reshape(h.shape[0], -1))
    return reduce_values(values, reduction, nan_ok=True)
