"""``evaluate()``: every metric of :mod:`keras_gradcam.metrics` for every method, as a table.

>>> rows = kg.evaluate(model, images, methods=["gradcam", "gradcam++"], masks=masks)   # doctest: +SKIP
>>> print(kg.format_table(rows))                                                      # doctest: +SKIP
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np

from .core.progress import Progbar
from .core.validate import positive_float, positive_int
from .explain import explain
from .methods.registry import get_method
from .metrics.arrays import as_boxes, as_images, as_masks, object_pixels, reduce_values
from .metrics.faithfulness import (
    confidence_drop,
    confidence_increase,
    deletion_auc,
    insertion_auc,
    masked_scores,
    win_outcome,
)
from .metrics.localisation import (
    boxes_to_masks,
    energy_pointing_game,
    localization,
    map_area,
    map_entropy,
    masks_to_boxes,
    pointing_game,
    pointing_tolerance,
)
from .metrics.occlusion import occlusion_correlation, occlusion_map
from .metrics.road import ROAD_PERCENTAGES, road_curve
from .metrics.sanity import randomization_check
from .metrics.scoring import Scorer

__all__ = ["METRICS", "SLOW_METRICS", "COLUMNS", "Rows", "evaluate", "format_table"]

#: Metric names :func:`evaluate` accepts in ``metrics=``, in table order.
METRICS: tuple[str, ...] = (
    "energy_pointing_game",
    "pointing_game",
    "localization",
    "average_drop",
    "increase_in_confidence",
    "win_rate",
    "deletion_auc",
    "insertion_auc",
    "road",
    "occlusion_correlation",
    "randomization",
    "map_area",
    "map_entropy",
)

#: The metrics whose cost grows with the model or the image far beyond one explanation, left out by
#: ``metrics="fast"``: ROAD (a sparse solve of the image's size per image, percentage and order),
#: the occlusion correlation (one forward pass per occlusion window: ~1,000 per image at 96 px) and
#: the randomisation check (one explainer, so one trace of the model, per layer with weights).
SLOW_METRICS: tuple[str, ...] = ("road", "occlusion_correlation", "randomization")

#: Table columns: name -> (what it is, "higher" or "lower" is better, or "" when neither).
COLUMNS: dict[str, tuple[str, str]] = {
    "energy_pointing_game": ("share of the map's energy on the object mask", "higher"),
    "pointing_game": ("hit rate of the map's maximum (within `tolerance` px of the mask)", "higher"),
    "localization_accuracy": ("fraction of boxes (15 % threshold, largest component) with IoU >= 0.5", "higher"),
    "localization_iou": ("mean IoU of those boxes with the ground-truth box", "higher"),
    "average_drop": ("Average Drop %, confidence lost on E = L * I", "lower"),
    "increase_in_confidence": ("% of images whose confidence rises on E = L * I", "higher"),
    "win_rate": ("% of images where this method's E keeps the most confidence", "higher"),
    "deletion_auc": ("RISE deletion AUC (substrate 0)", "lower"),
    "insertion_auc": ("RISE insertion AUC (from a blurred copy)", "higher"),
    "road": ("ROAD (LeRF - MoRF) / 2 over 10-90 % removed, noisy linear imputation", "higher"),
    "road_morf": ("ROAD mean score, most relevant pixels removed first", "lower"),
    "road_lerf": ("ROAD mean score, least relevant pixels removed first", "higher"),
    "occlusion_correlation": ("Spearman rho with an occlusion map", "higher"),
    "randomization_similarity": ("mean |Spearman| with the trained map over cascading randomisation", "lower"),
    "map_area": ("fraction of pixels >= 50 % of the map's maximum", ""),
    "map_entropy": ("normalised entropy of the map", ""),
}

_LOCALISATION = ("energy_pointing_game", "pointing_game", "localization")


class Rows(list):
    """The rows of :func:`evaluate`: a list of dict, plus the ``notes`` printed under the table.

    Parameters
    ----------
    rows : iterable of dict, optional
    notes : iterable of str, optional
        What the reader of the numbers must know (a metric left out, images left out of a
        metric); :func:`format_table` prints them below the table.
    """

    def __init__(self, rows=(), notes=()):
        super().__init__(rows)
        self.notes = list(notes)


class _Steps:
    """The evaluation's progress: a bar over its steps (an explanation, a metric) and the seconds each took."""

    def __init__(self, total: int, verbose: bool):
        self.verbose, self.done, self.seconds = verbose, 0, {}
        self.bar = Progbar(total, verbose=1 if verbose else 0, unit_name="step")
        self.last = time.perf_counter()

    def tick(self, label: str) -> float:
        """One more step done: ``label`` took the time since the previous one (returned, in seconds)."""
        now = time.perf_counter()
        self.seconds[label], self.last = now - self.last, now
        self.done += 1
        self.bar.update(self.done)
        return self.seconds[label]

    def report(self) -> None:
        """The seconds per step on stderr, slowest first (where the time went)."""
        if self.verbose and self.seconds:
            slowest = sorted(self.seconds.items(), key=lambda kv: -kv[1])
            print("seconds per step: " + ", ".join(f"{k} {v:.1f}" for k, v in slowest), file=sys.stderr, flush=True)


def evaluate(
    model: keras.Model,
    images,
    methods: Sequence[str] = ("gradcam", "gradcam++"),
    masks=None,
    boxes=None,
    targets=None,
    *,
    metrics: Sequence[str] | None = None,
    layer=None,
    score: str = "probability",
    batch_size: int = 64,
    tolerance: float | None = None,
    steps: int | None = None,
    occlusion_patch: int | None = None,
    occlusion_stride: int | None = None,
    randomization_images: int | None = 16,
    road_percentages: Sequence[float] = ROAD_PERCENTAGES,
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int = 0,
    verbose: bool = False,
) -> list[dict[str, Any]]:
    """Run every metric for every method on one set of images.

    Parameters
    ----------
    model : keras.Model
        Single-input image classifier; never modified.
    images : array-like of shape (n_samples, height, width, channels)
        Preprocessed as the model expects.
    methods : sequence of str, default=("gradcam", "gradcam++")
        Names from :data:`keras_gradcam.METHODS` (or any name :func:`keras_gradcam.get_method`
        knows).
    masks : array-like of shape (n_samples, height, width), optional
        Object masks for the pointing games (boolean or 0/1, or soft float weights in ``[0, 1]``,
        see :func:`keras_gradcam.metrics.energy_pointing_game`); boxes are derived from their
        pixels ``>= 0.5`` when ``boxes`` is None.
    boxes : array-like of int, shape (n_samples, 4) or (n_samples, max_boxes, 4), optional
        Ground-truth boxes ``(y_min, x_min, y_max, x_max)``, max exclusive, clipped to the
        images, for localisation; masks are derived from them when ``masks`` is None (the
        Score-CAM protocol uses boxes).
    targets : None, int or sequence of int, default=None
        Class explained per image by every method and every metric; None: the model's top-1
        class. Pass the ground-truth labels for the pointing-game protocol.
    metrics : sequence of str, "all" or "fast", optional
        Subset of :data:`METRICS`; None (or ``"all"``) runs all that the inputs allow (the
        localisation metrics need ``masks`` or ``boxes``); ``"fast"`` those without
        :data:`SLOW_METRICS` (what the command line computes by default). ``win_rate`` needs two or more methods: with one
        it is not computed (``None``), and the table's notes say so.
    layer : str, optional
        Explained layer for every method (None: each method's default).
    score : {"probability", "logit", "output"}, default="probability"
        Score space of the model metrics (how it relates to the explainers' ``score``: see
        :mod:`keras_gradcam.metrics`). ``"probability"`` is refused (``ValueError``) where
        the output is no class probability (e.g. one linear unit, a regression): pass
        ``"output"`` or ``"logit"`` there.
    batch_size : int, default=64
        Images per forward pass (explanations and perturbations).
    tolerance : float, optional
        Pointing-game tolerance in pixels. None (default): TorchRay's 15 px at 224 px scaled to
        the images, ``15 * min(height, width) / 224``
        (:func:`keras_gradcam.metrics.pointing_tolerance`), about 2.1 px at 32 px.
    steps : int, optional
        Deletion/insertion steps (None: the image height, as RISE).
    occlusion_patch, occlusion_stride : int, optional
        Occlusion window and stride (None: ``min(H, W) / 7`` and a quarter of that).
    road_percentages : sequence of float, default=(10, 20, ..., 90)
        Shares of pixels ROAD removes (:func:`keras_gradcam.metrics.road_curve`); its noise is
        the reference's 0.01 and its seed is ``seed``.
    randomization_images : int or None, default=16
        The randomisation check re-explains this many images (the first ones) once per layer;
        None uses all.
    method_options : mapping, optional
        Per-method options for the explainer, e.g. ``{"smoothgradcam++": {"n_samples": 8}}``.
    seed : int, default=0
        Seed of the randomisation check and of ROAD's imputation noise.
    verbose : bool, default=False
        A progress bar on stderr (one step per explanation and per metric), then the seconds
        each step took.

    Returns
    -------
    Rows
        A list with one dict per method: ``"method"``, ``"n_images"``, one column per metric
        (see :data:`COLUMNS`; ``None`` where not computed) and ``"seconds"`` (time to explain);
        its ``notes`` (list of str) say what was left out and why. Print it with
        :func:`format_table`.

    Raises
    ------
    ValueError
        Unknown metric or method, a localisation metric without masks or boxes, shape
        mismatches (the message names both shapes).

    Notes
    -----
    Images whose mask is empty (no object: no mask value ``>= 0.5``, or only padding boxes)
    are left out of the localisation metrics (a ``UserWarning`` and a note give how many);
    the other metrics use every image.

    The occlusion map and the confidences on the unperturbed images are computed once and
    shared by all methods; each method is explained once. Expensive parts: deletion and
    insertion (``steps + 1`` forwards per image each), ROAD (a sparse solve and a forward per
    image, percentage and order), occlusion (one forward per window) and
    the randomisation check (one explanation per layer with weights).

    Examples
    --------
    >>> ds = kg.datasets.make_shapes(n=32, image_size=32)                                    # doctest: +SKIP
    >>> rows = kg.evaluate(model, ds.images, ["gradcam", "gradcam++"], masks=ds.masks,
    ...                    targets=ds.labels, tolerance=2)                                   # doctest: +SKIP
    >>> print(kg.format_table(rows))                                                         # doctest: +SKIP
    """
    methods = [methods] if isinstance(methods, str) else list(methods)
    if not methods:
        raise ValueError("methods is empty; pass names from keras_gradcam.METHODS, e.g. ['gradcam', 'gradcam++'].")
    for name in methods:
        get_method(name)  # fail early on a typo
    x = as_images(images)
    n, height, width = x.shape[:3]
    shape = (n, height, width)
    tolerance = (pointing_tolerance((height, width)) if tolerance is None
                 else positive_float("tolerance", tolerance, allow_zero=True))
    if masks is not None:
        masks = as_masks(masks, shape, ref="images[..., 0]")
    if boxes is not None:
        boxes = as_boxes(boxes, n, shape=(height, width))
    if masks is None and boxes is not None:
        masks = boxes_to_masks(boxes, (height, width))
    if boxes is None and masks is not None:
        boxes = masks_to_boxes(masks)
    notes: list[str] = []

    if metrics is None or (isinstance(metrics, str) and metrics in ("all", "fast")):
        wanted = [m for m in METRICS if masks is not None or m not in _LOCALISATION]
        wanted = [m for m in wanted if m not in SLOW_METRICS] if metrics == "fast" else wanted
    else:
        wanted = [metrics] if isinstance(metrics, str) else list(metrics)
        unknown = [m for m in wanted if m not in METRICS]
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; choose from {list(METRICS)}.")
        if masks is None and any(m in _LOCALISATION for m in wanted):
            raise ValueError(
                f"{[m for m in wanted if m in _LOCALISATION]} need ground truth: pass masks= (n_samples, height, "
                "width) or boxes= (n_samples, 4)."
            )
    if "win_rate" in wanted and len(methods) < 2:
        notes.append(f"win_rate: not computed; it compares methods and needs two or more (got {len(methods)}).")
    localised = None  # images with an object, for the localisation metrics
    if masks is not None and any(m in wanted for m in _LOCALISATION):
        localised = object_pixels(masks).any((1, 2))
        if not localised.all():
            left = np.flatnonzero(~localised)
            message = (f"localisation metrics leave out {left.size} of {n} images whose mask is empty (no object): "
                       f"images {left[:10].tolist()}{' ...' if left.size > 10 else ''}.")
            notes.append(message)
            warnings.warn(message, UserWarning, stacklevel=2)
    options = {k: dict(v) for k, v in (method_options or {}).items()}
    bs = positive_int("batch_size", batch_size)

    scorer = Scorer(model, score)
    _, classes = scorer.predict(x, targets, bs)
    confidence = any(m in wanted for m in ("average_drop", "increase_in_confidence", "win_rate"))
    per_method = 1 + int(confidence) + sum(m in wanted for m in ("deletion_auc", "insertion_auc", *SLOW_METRICS)) \
        + (sum(m in wanted for m in _LOCALISATION) if localised is not None else 0)
    progress = _Steps(int("occlusion_correlation" in wanted) + len(methods) * per_method, bool(verbose))
    occlusion = None
    if "occlusion_correlation" in wanted:
        occlusion = occlusion_map(scorer, x, classes, patch=occlusion_patch, stride=occlusion_stride,
                                  score=score, batch_size=bs)
        progress.tick("occlusion map")

    rows, kept = [], {}
    for name in methods:
        opts = options.get(name, {})
        progress.last = time.perf_counter()
        exp = explain(model, x, method=name, layer=layer, targets=classes, batch_size=bs, **opts)
        seconds = progress.tick(f"{name}: explain")
        h = exp.heatmaps
        row: dict[str, Any] = {"method": name, "n_images": n}
        if localised is not None:
            hl, ml, bl = h[localised], masks[localised], boxes[localised]
            some = bool(localised.any())
            nan = float("nan")
            if "energy_pointing_game" in wanted:
                row["energy_pointing_game"] = energy_pointing_game(hl, ml) if some else nan
                progress.tick(f"{name}: energy_pointing_game")
            if "pointing_game" in wanted:
                row["pointing_game"] = pointing_game(hl, ml, tolerance=tolerance) if some else nan
                progress.tick(f"{name}: pointing_game")
            if "localization" in wanted:
                loc = localization(hl, bl) if some else None
                row["localization_accuracy"] = loc.accuracy if some else nan
                row["localization_iou"] = float(loc.ious.mean()) if some else nan
                progress.tick(f"{name}: localization")
        if confidence:
            y, o, _ = masked_scores(scorer, x, h, classes, score=score, mask_space="preprocessed",
                                    raw_images=None, preprocess=None, output=None, batch_size=bs)
            kept[name] = o
            if "average_drop" in wanted:
                row["average_drop"] = reduce_values(confidence_drop(y, o), "mean", nan_ok=True)
            if "increase_in_confidence" in wanted:
                row["increase_in_confidence"] = reduce_values(confidence_increase(y, o), "mean")
            if "win_rate" in wanted:
                row["win_rate"] = None  # filled in once every method has run
            progress.tick(f"{name}: confidence on E = L * I")
        if "deletion_auc" in wanted:
            row["deletion_auc"] = deletion_auc(scorer, x, h, classes, steps=steps, score=score, batch_size=bs)
            progress.tick(f"{name}: deletion_auc")
        if "insertion_auc" in wanted:
            row["insertion_auc"] = insertion_auc(scorer, x, h, classes, steps=steps, score=score, batch_size=bs)
            progress.tick(f"{name}: insertion_auc")
        if "road" in wanted:
            kw = dict(percentages=road_percentages, seed=seed, score=score, batch_size=bs)
            morf = road_curve(scorer, x, h, classes, order="morf", **kw)
            lerf = road_curve(scorer, x, h, classes, order="lerf", **kw)
            row["road"] = float(((lerf - morf) / 2.0).mean())
            row["road_morf"], row["road_lerf"] = float(morf.mean()), float(lerf.mean())
            progress.tick(f"{name}: road")
        if "occlusion_correlation" in wanted:
            row["occlusion_correlation"] = occlusion_correlation(
                scorer, x, h, classes, patch=occlusion_patch, stride=occlusion_stride, score=score, occlusion=occlusion
            )
            progress.tick(f"{name}: occlusion_correlation")
        if "randomization" in wanted:
            k = n if randomization_images is None else min(n, positive_int("randomization_images", randomization_images))
            res = randomization_check(model, x[:k], name, layer, classes[:k], seed=seed, batch_size=bs, **opts)
            row["randomization_similarity"] = res.summary("abs_spearman")
            progress.tick(f"{name}: randomization")
        if "map_area" in wanted:
            row["map_area"] = map_area(h)
        if "map_entropy" in wanted:
            row["map_entropy"] = map_entropy(h)
        row["seconds"] = seconds
        rows.append(row)

    if "win_rate" in wanted and len(kept) > 1:
        for row in rows:
            others = np.max([o for k, o in kept.items() if k != row["method"]], axis=0)
            row["win_rate"] = win_outcome(kept[row["method"]], others, "mean")
    progress.report()
    return Rows(rows, notes)


def _cell(value, digits: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "nan" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def format_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    *,
    digits: int = 3,
    notes: Sequence[str] | None = None,
) -> str:
    """Render rows (e.g. from :func:`evaluate`) as a Markdown table, with its notes below.

    Parameters
    ----------
    rows : sequence of dict
        One dict per row; missing keys print as ``-``.
    columns : sequence of str, optional
        Columns in order; None uses every key, in order of first appearance.
    digits : int, default=3
        Decimals of float cells.
    notes : sequence of str, optional
        Lines printed under the table as a ``Notes:`` list; None takes ``rows.notes`` when
        ``rows`` has them (the :class:`Rows` that :func:`evaluate` returns).

    Returns
    -------
    str
        A Markdown (GitHub) pipe table, columns padded to equal width; numbers right-aligned;
        then, if there are notes, a blank line, ``Notes:`` and one ``- note`` line each.

    Examples
    --------
    >>> from keras_gradcam.evaluate import format_table
    >>> print(format_table([{"method": "gradcam", "pointing_game": 0.75}]))
    | method  | pointing_game |
    |:--------|--------------:|
    | gradcam |         0.750 |
    """
    notes = list(getattr(rows, "notes", None) or []) if notes is None else list(notes)
    rows = list(rows)
    if columns is None:
        columns = []
        for row in rows:
            columns += [k for k in row if k not in columns]
    columns = list(columns)
    if not columns:
        return ""
    cells = [[_cell(row.get(c), digits) for c in columns] for row in rows]
    numeric = [
        all(isinstance(row.get(c), (int, float, np.number)) and not isinstance(row.get(c), bool) or row.get(c) is None
            for row in rows) and any(row.get(c) is not None for row in rows)
        for c in columns
    ]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]

    def line(values):
        out = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "| " + " | ".join(out) + " |"

    rule = "|" + "|".join((("-" * (w + 1)) + ":") if num else (":" + "-" * (w + 1)) for w, num in zip(widths, numeric)) + "|"
    table = "\n".join([line(columns), rule] + [line(r) for r in cells])
    return table + "".join(["\n\nNotes:"] + [f"\n- {note}" for note in notes] if notes else [])
