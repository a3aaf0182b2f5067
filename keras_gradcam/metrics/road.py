"""ROAD: RemOve And Debias (Rong et al., ICML 2022), a faithfulness metric that needs no retraining.

Deletion curves (RISE) replace the most salient pixels by a constant, and the *shape* of what was
removed then tells the class by itself: a model can score well on the hole, not on what is left.
ROAD removes the pixels of a map's most relevant (MoRF) or least relevant (LeRF) fraction and
fills them by **noisy linear imputation**: each removed pixel becomes the weighted mean of its 8
neighbours (1/6 for the 4 direct ones, 1/12 for the 4 diagonal ones; where a neighbour is outside
the image the weights of the others are renormalised), solved for all removed pixels of an image at
once as one sparse linear system (``scipy.sparse.linalg.spsolve``, the colour channels as
right-hand sides), plus Gaussian noise of standard deviation ``noise`` on the imputed values. The
filled region then looks like its surroundings and leaks little about where the map was.

A faithful map makes the score fall fast when its most relevant pixels go (MoRF: lower is better)
and slowly when its least relevant go (LeRF: higher is better). :func:`road` summarises both as
``(LeRF - MoRF) / 2`` averaged over the removal percentages (pytorch-grad-cam's
``ROADCombined``; higher is better). The paper plots accuracy against the percentage removed; the
curves here are target-class scores (``score=``, as every model metric), from which accuracy
follows when ``score="output"`` is thresholded by the caller.

The percentages are shares of pixels **removed** (``road_curve(..., percentages=[20])`` removes
20 %); pytorch-grad-cam's ``ROADMostRelevantFirst(percentile=80)`` removes the pixels above the 80th
percentile, i.e. also 20 %.
"""

from __future__ import annotations

import keras
import numpy as np
from scipy import sparse
from scipy.sparse import linalg

from ..core.validate import integer, one_of, positive_float, positive_int
from .arrays import as_images, as_maps, reduce_values
from .scoring import scorer_for
from .stats import saliency_ranks

__all__ = ["ROAD_ORDERS", "ROAD_PERCENTAGES", "noisy_linear_imputation", "road_curve", "road"]

#: Removal orders: most relevant first, least relevant first.
ROAD_ORDERS: tuple[str, ...] = ("morf", "lerf")
#: The reference's removal percentages.
ROAD_PERCENTAGES: tuple[int, ...] = (10, 20, 30, 40, 50, 60, 70, 80, 90)

# (row offset, column offset, weight) of the 8 neighbours in the reference's imputer
_NEIGHBOURS = (
    (-1, 0, 1 / 6), (1, 0, 1 / 6), (0, -1, 1 / 6), (0, 1, 1 / 6),
    (-1, -1, 1 / 12), (-1, 1, 1 / 12), (1, -1, 1 / 12), (1, 1, 1 / 12),
)


def _impute_one(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Noise-free linear imputation of one ``(H, W, C)`` float64 image; ``removed`` is ``(H, W)`` bool."""
    height, width = removed.shape
    ys, xs = np.nonzero(removed)
    m = ys.size
    if m == 0:
        return image.copy()
    index = np.full(removed.shape, -1, np.int64)
    index[ys, xs] = np.arange(m)
    diagonal = np.zeros(m)
    rhs = np.zeros((m, image.shape[-1]))
    rows, cols, vals = [], [], []
    for dy, dx, w in _NEIGHBOURS:
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
        diagonal[inside] += w  # sum of the weights of the neighbours that exist: the renormalisation
        r, ny, nx = np.flatnonzero(inside), ny[inside], nx[inside]
        unknown = removed[ny, nx]
        rows.append(r[unknown])
        cols.append(index[ny[unknown], nx[unknown]])
        vals.append(np.full(int(unknown.sum()), -w))
        np.add.at(rhs, r[~unknown], w * image[ny[~unknown], nx[~unknown]])
    a = sparse.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(m, m))
    a = a + sparse.diags(diagonal, format="csc")
    solved = linalg.spsolve(a, rhs)
    out = image.copy()
    out[ys, xs] = solved.reshape(m, -1)
    return out


def noisy_linear_imputation(images, removed, *, noise: float = 0.01, seed: int = 0) -> np.ndarray:
    """Fill the ``removed`` pixels of each image from their neighbours, plus Gaussian noise (ROAD).

    Parameters
    ----------
    images : array-like of shape (n_samples, height, width, channels)
        Channels-last images, in the units the model reads (the noise is added in those units).
    removed : array-like of bool, shape (n_samples, height, width)
        The pixels to replace (all channels of a pixel together).
    noise : float, default=0.01
        Standard deviation of the Gaussian noise added to the imputed values only (the
        reference's 0.01, meant for normalised inputs; scale it for inputs in ``[0, 255]``). 0
        gives the plain linear imputation.
    seed : int, default=0
        Seed of the noise; image ``i`` draws from ``numpy.random.default_rng([seed, i])``, so its
        result does not depend on the other images of the batch.

    Returns
    -------
    ndarray of float32, shape (n_samples, height, width, channels)
        Kept pixels exactly as given; each removed pixel ``x_i`` solves
        ``sum_j w_ij x_i = sum_j w_ij x_j`` over its neighbours ``j`` inside the image.

    Raises
    ------
    ValueError
        Shapes that do not match, or an image whose every pixel is removed (nothing to impute from).
    """
    x = as_images(images).astype(np.float64)
    r = np.asarray(removed)
    if r.dtype != bool:
        raise TypeError(f"removed must be a boolean array (True = replace the pixel); got dtype {r.dtype}.")
    if r.shape != x.shape[:3]:
        raise ValueError(f"removed has shape {r.shape} but images has shape {x.shape}; give one (H, W) mask per image.")
    noise = positive_float("noise", noise, allow_zero=True, expected="a standard deviation >= 0")
    seed = integer("seed", seed)
    full = r.reshape(r.shape[0], -1).all(1)
    if full.any():
        raise ValueError(
            f"images {np.flatnonzero(full)[:5].tolist()} have every pixel removed, so nothing is left to impute "
            "from; remove less than 100 % of the pixels."
        )
    return _fill(x, r, noise, seed, 0)


def _fill(x: np.ndarray, removed: np.ndarray, noise: float, seed: int, start: int) -> np.ndarray:
    """The imputation of float64 ``x``; image ``i`` of the batch is image ``start + i`` of the data (its noise seed)."""
    out = np.empty_like(x)
    for i in range(x.shape[0]):  # one sparse solve per image, as the reference
        out[i] = _impute_one(x[i], removed[i])
        if noise > 0:
            rng = np.random.default_rng([seed, start + i])
            out[i][removed[i]] += rng.normal(0.0, noise, size=(int(removed[i].sum()), x.shape[-1]))
    return out.astype(np.float32)


def _percentages(percentages) -> np.ndarray:
    p = np.asarray(percentages, np.float64).reshape(-1)
    if p.size == 0 or not np.isfinite(p).all() or (p <= 0).any() or (p >= 100).any():
        raise ValueError(
            f"percentages must be shares of pixels removed, each in (0, 100); got {list(np.asarray(percentages).reshape(-1))}."
        )
    return p


def road_curve(
    model: keras.Model,
    images,
    heatmaps,
    targets=None,
    *,
    order: str = "morf",
    percentages=ROAD_PERCENTAGES,
    noise: float = 0.01,
    seed: int = 0,
    score: str = "probability",
    output=None,
    batch_size: int = 64,
) -> np.ndarray:
    """Scores as a map's most (``"morf"``) or least (``"lerf"``) relevant pixels are removed and imputed.

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
    order : {"morf", "lerf"}, default="morf"
        Most relevant first (lower is better) or least relevant first (higher is better).
    percentages : sequence of float, default=(10, 20, ..., 90)
        Shares of the pixels removed, each in (0, 100): ``round(p / 100 * H * W)`` pixels,
        ranked by saliency with a stable sort (ties in row-major order).
    noise, seed : float, int
        Of :func:`noisy_linear_imputation`.
    score : {"probability", "logit", "output"}, default="probability"
    output : int or str, optional
    batch_size : int, default=64
        Images per forward pass.

    Returns
    -------
    ndarray of float32, shape (n_samples, len(percentages))
        The target-class score of each imputed image.

    Notes
    -----
    Cost: one sparse solve per image and percentage (CPU, scipy) and one forward pass each, run
    ``batch_size`` at a time through one compiled function.
    """
    one_of("order", order, ROAD_ORDERS)
    return _curves(model, images, heatmaps, targets, (order,), percentages, noise, seed, score, output, batch_size)[order]


def _curves(model, images, heatmaps, targets, orders, percentages, noise, seed, score, output, batch_size) -> dict:
    """:func:`road_curve` for each of ``orders``, the arguments checked and the classes found once."""
    h = as_maps(heatmaps)
    x = as_images(images, h.shape)
    p = _percentages(percentages)
    noise = positive_float("noise", noise, allow_zero=True, expected="a standard deviation >= 0")
    seed = integer("seed", seed)
    bs = positive_int("batch_size", batch_size)
    scorer = scorer_for(model, score, output)
    _, classes = scorer.predict(x, targets, bs)
    n, height, width = h.shape
    hw = height * width
    counts = np.rint(p / 100.0 * hw).astype(np.int64)
    if counts.max() >= hw:
        raise ValueError(
            f"removing {p[counts.argmax()]:g} % of a {height}x{width} map rounds to every pixel, leaving nothing to "
            "impute from; use smaller percentages or larger images."
        )
    ranks = saliency_ranks(h).reshape(n, 1, height, width)
    x64 = x.astype(np.float64)
    per = max(1, bs // p.size)  # images whose imputed copies make about one batch
    curves = {}
    for order in orders:
        removed = ranks < counts[None, :, None, None] if order == "morf" else ranks >= (hw - counts)[None, :, None, None]
        out = np.empty((n, p.size), np.float32)
        for i in range(0, n, per):
            sl = slice(i, min(n, i + per))
            k = sl.stop - sl.start
            imputed = np.stack(
                [_fill(x64[sl], removed[sl, j], noise, seed + 7919 * j, sl.start) for j in range(p.size)], axis=1
            )  # (k, P, H, W, C)
            scores, _ = scorer.predict(imputed.reshape(k * p.size, *x.shape[1:]), np.repeat(classes[sl], p.size), bs)
            out[sl] = scores.reshape(k, p.size)
        curves[order] = out
    return curves


def road(
    model: keras.Model,
    images,
    heatmaps,
    targets=None,
    *,
    percentages=ROAD_PERCENTAGES,
    noise: float = 0.01,
    seed: int = 0,
    score: str = "probability",
    output=None,
    batch_size: int = 64,
    reduction: str | None = "mean",
):
    """ROAD combined: ``(LeRF - MoRF) / 2`` averaged over the removal percentages (higher is better).

    Parameters
    ----------
    model, images, heatmaps, targets, percentages, noise, seed, score, output, batch_size
        As in :func:`road_curve`.
    reduction : {"mean", None}, default="mean"

    Returns
    -------
    float or ndarray of shape (n_samples,)
        Per image ``mean_p (lerf_p - morf_p) / 2``, in the units of ``score`` (a probability
        difference by default): large when removing the least relevant pixels keeps the score
        and removing the most relevant ones destroys it.

    Examples
    --------
    >>> kg.metrics.road(model, images, exp.heatmaps, percentages=[20, 50, 80])   # doctest: +SKIP
    """
    curves = _curves(model, images, heatmaps, targets, ROAD_ORDERS, percentages, noise, seed, score, output, batch_size)
    return reduce_values(((curves["lerf"] - curves["morf"]) / 2.0).mean(axis=1).astype(np.float64), reduction)
