"""Faithfulness metrics that perturb the input according to a map and read the model's confidence.

Confidence on the explanation alone, ``E = L * I`` (Grad-CAM++ section 4.1: Average Drop %,
% Increase in Confidence, Win %), and the RISE deletion and insertion curves and their areas
(Petsiuk et al. 2018). Occlusion (Grad-CAM section 5.3) is in
:mod:`keras_gradcam.metrics.occlusion`. Every perturbed image goes through one compiled
:class:`~keras_gradcam.metrics.scoring.Scorer`.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

from ..core.explanation import Explanation
from ..core.validate import one_of, positive_int
from .arrays import as_array, as_images, as_maps, check_reduction, check_unit, reduce_values
from .scoring import make_substrate, scorer_for
from .stats import auc, saliency_ranks

__all__ = [
    "MASK_SPACES",
    "masked_scores",
    "confidence_drop",
    "confidence_increase",
    "win_outcome",
    "average_drop",
    "increase_in_confidence",
    "win_rate",
    "deletion_curve",
    "insertion_curve",
    "deletion_auc",
    "insertion_auc",
]

#: Where ``E = L * I`` is formed (``mask_space=``): on the model input, or on raw images then preprocessed.
MASK_SPACES: tuple[str, ...] = ("preprocessed", "raw")


# ================================================================================================
# Confidence metrics (Grad-CAM++ section 4.1)
# ================================================================================================
def masked_scores(model, images, heatmaps, targets, *, score, mask_space, raw_images, preprocess, output, batch_size):
    """``(Y, O, classes)``: scores on the images and on ``E = L * I`` (Grad-CAM++ section 4.1).

    The arguments are those of :func:`average_drop`; ``model`` may be a shared
    :class:`~keras_gradcam.metrics.scoring.Scorer`.
    """
    h = as_maps(heatmaps)
    x = as_images(images, h.shape)
    check_unit(h)
    bs = positive_int("batch_size", batch_size)
    one_of("mask_space", mask_space, MASK_SPACES)
    if mask_space == "raw" and (raw_images is None or preprocess is None):
        raise ValueError(
            "mask_space='raw' multiplies the map with the raw images and then preprocesses: pass raw_images= "
            "(n_samples, height, width, channels) and preprocess= (a function raw -> model input)."
        )
    scorer = scorer_for(model, score, output)
    y, classes = scorer.predict(x, targets, bs)
    if mask_space == "preprocessed":
        e = x * h[..., None].astype(np.float32)
    else:
        raw = as_images(raw_images, h.shape, name="raw_images")
        e = as_images(preprocess(raw * h[..., None].astype(np.float32)), h.shape, name="preprocess(raw_images)")
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
    y, o, _ = masked_scores(model, images, heatmaps, targets, score=score, mask_space=mask_space,
                             raw_images=raw_images, preprocess=preprocess, output=output, batch_size=batch_size)
    return reduce_values(confidence_drop(y, o), reduction, nan_ok=True)


def confidence_drop(y: np.ndarray, o: np.ndarray) -> np.ndarray:
    """Per image, the Average Drop term ``100 * max(0, Y - O) / Y`` (NaN where ``Y <= 0``)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(y > 0, 100.0 * np.maximum(0.0, y - o) / np.where(y > 0, y, 1.0), np.nan)


def confidence_increase(y: np.ndarray, o: np.ndarray) -> np.ndarray:
    """Per image, the Increase in Confidence term ``100 * 1[Y < O]`` (100.0 or 0.0)."""
    return 100.0 * (o > y)


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
    y, o, _ = masked_scores(model, images, heatmaps, targets, score=score, mask_space=mask_space,
                             raw_images=raw_images, preprocess=preprocess, output=output, batch_size=batch_size)
    return reduce_values(confidence_increase(y, o), reduction)


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
    if isinstance(others, Explanation) or (not isinstance(others, (list, tuple)) and as_array(others).ndim == 3):
        others = [others]
    others = list(others)
    if not others:
        raise ValueError("win_rate needs at least one competing set of maps in `others`.")
    h = as_maps(heatmaps)
    scorer = scorer_for(model, score, output)
    kw = dict(score=score, mask_space=mask_space, raw_images=raw_images, preprocess=preprocess, output=output,
              batch_size=batch_size)
    y, o, classes = masked_scores(scorer, images, h, targets, **kw)
    best = None
    for k, other in enumerate(others):
        oh = as_maps(other, name=f"others[{k}]")
        if oh.shape != h.shape:
            raise ValueError(f"others[{k}] has shape {oh.shape} but heatmaps has shape {h.shape}.")
        _, ok, _ = masked_scores(scorer, images, oh, classes, **kw)
        best = ok if best is None else np.maximum(best, ok)
    return win_outcome(o, best, reduction)


def win_outcome(o: np.ndarray, best_other: np.ndarray, reduction):
    """Per image ``1`` (win), ``0`` (tie) or ``-1`` (loss) of confidences ``o`` against the best competitor's.

    ``reduction="mean"`` gives the win percentage instead (ties are no wins).
    """
    check_reduction(reduction)
    outcome = np.sign(o - best_other).astype(np.int8)
    return outcome if reduction is None else float(100.0 * np.mean(outcome == 1))


# ================================================================================================
# Deletion / insertion (RISE)
# ================================================================================================
def _counts(hw: int, steps: int | None, height: int, width: int) -> np.ndarray:
    n = height if steps is None else positive_int("steps", steps)
    if n > hw:
        raise ValueError(f"steps={n} is more than the {hw} pixels of the image.")
    return np.arange(n + 1, dtype=np.int64) * hw // n  # floor(i * HW / n) pixels changed after step i


def _curve(mode, model, images, heatmaps, targets, steps, substrate, blur_kernel, blur_sigma, score, output, batch_size):
    h = as_maps(heatmaps)
    x = as_images(images, h.shape)
    bs = positive_int("batch_size", batch_size)
    scorer = scorer_for(model, score, output)
    _, classes = scorer.predict(x, targets, bs)
    sub = make_substrate(substrate, x, blur_kernel, blur_sigma)
    start, end = (x, sub) if mode == "deletion" else (sub, x)
    counts = _counts(h.shape[1] * h.shape[2], steps, h.shape[1], h.shape[2])
    return scorer.curves(start, end, saliency_ranks(h), counts, classes, bs)


def _area(mode, model, images, heatmaps, targets, steps, substrate, blur_kernel, blur_sigma, score, output, batch_size,
          reduction):
    """The area under the ``mode`` curve of each image, reduced: the one body of both AUCs."""
    check_reduction(reduction)  # before the forward passes, not after
    curves = _curve(mode, model, images, heatmaps, targets, steps, substrate, blur_kernel, blur_sigma, score, output,
                    batch_size)
    return reduce_values(auc(curves), reduction)


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
    return _area("deletion", model, images, heatmaps, targets, steps, substrate, blur_kernel, blur_sigma, score,
                 output, batch_size, reduction)


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
    return _area("insertion", model, images, heatmaps, targets, steps, substrate, blur_kernel, blur_sigma, score,
                 output, batch_size, reduction)
