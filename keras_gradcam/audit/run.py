"""``kg.audit``: where a model looks, class by class, over a whole dataset, and whether it matters."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from ..core.capture import Capture
from ..core.progress import Progbar
from ..core.validate import check_classes, one_of, positive_float, positive_int
from ..methods.registry import get_method
from ..metrics.localisation import energy_pointing_game, pointing_game, pointing_tolerance
from ..metrics.scoring import Scorer
from ..runs.distribute import placement, split_passes
from ..runs.store import storable_labels
from .analysis import ClassSums, Keeper, consistency, describe_region, flagged_region, top_regions
from .causal import FILLS, paint
from .data import batches
from .report import AuditReport, ClassAudit

__all__ = ["audit"]

EXAMPLES = 4  # images kept per class and strip


def _share(name: str, value) -> float:
    v = positive_float(name, value, expected="a share in (0, 1]")
    if v > 1:
        raise ValueError(f"{name} must be a share in (0, 1]; got {v!r}. Write 10 % as 0.1.")
    return v


def _class_indices(labels, class_names) -> np.ndarray:
    """Labels as class indices: numbers as they are, class names (str or bytes) mapped through ``class_names``."""
    y = np.asarray(labels)
    if y.dtype.kind not in "SUO":
        return y.astype(np.int64)
    names = storable_labels(y)  # bytes (from tf.data) decoded; other Python objects refused
    found = list(dict.fromkeys(names.ravel().tolist()))
    if class_names is None:
        raise ValueError(
            f"the labels are text ({found[:5]}), but no class_names= was given to map them to the model's classes; "
            "pass class_names=[...] in the order of the model's outputs, or give the labels as class indices."
        )
    index = {str(name): i for i, name in enumerate(class_names)}
    unknown = [v for v in found if v not in index]
    if unknown:
        raise ValueError(
            f"labels {unknown[:10]} are not in class_names {list(index)}; text labels must be class names, "
            "spelled as in class_names."
        )
    return np.array([index[v] for v in names.ravel()], np.int64).reshape(names.shape)


def audit(
    model: keras.Model,
    data,
    labels=None,
    class_names: Sequence[str] | None = None,
    masks=None,
    method: str | type = "gradcam++",
    layer=None,
    batch_size: int = 64,
    *,
    top: float = 0.1,
    min_frequency: float = 0.5,
    min_consistency: float = 0.5,
    min_images: int = 5,
    fill: str = "mean",
    confident: float = 0.9,
    tolerance: float | None = None,
    verbose: int = 0,
    strategy=None,
) -> AuditReport:
    r"""Audit a classifier on a dataset: where its evidence sits, class by class, and whether it matters.

    Without masks it finds evidence that sits at the same place in most images of a class (a
    watermark, a border, a corner: objects move, shortcuts do not), then paints that region over in
    every image of the class and measures the accuracy again. With masks it also measures, per
    class, how much of the evidence falls on the objects, and lists the images classified right for
    the wrong reason.

    Parameters
    ----------
    model : keras.Model
        A single-input image classifier with a ``(batch, classes)`` output; never modified.
    data : ndarray of shape (n, height, width, channels), or tf.data.Dataset
        Images preprocessed as the model expects. A dataset yields images, ``(images, labels)`` or
        ``(images, labels, masks)``, batched or not; it is read twice (explaining, then the causal
        check), batch by batch.
    labels : array-like of shape (n,), optional
        True classes (with arrays): class indices, or class names (str or bytes, as a
        ``tf.data.Dataset`` gives text) mapped to indices through ``class_names``. Without labels,
        images are grouped by the model's prediction and the "accuracy" is the share of
        predictions kept.
    class_names : sequence of str, optional
        Names of the classes, for the table and the report.
    masks : array-like of shape (n, height, width), optional
        Object masks (with arrays; a dataset yields them as a third element), boolean or 0/1.
    method : str or BaseCAM subclass, default="gradcam++"
        A name in :data:`keras_gradcam.METHODS`; the explainer is built once and reused per batch.
    layer : str, optional
        The layer to explain (default: the explainer's rule, see docs/layers.md).
    batch_size : int, default=64
        Images per pass.
    top : float, default=0.1
        Share of each map's pixels in its top region.
    min_frequency : float, default=0.5
        A pixel is in a class's flagged region when it is in the top region of at least this share
        of the class's images.
    min_consistency : float, default=0.5
        A class is flagged when at least this share of its top-region pixels falls in the region.
    min_images : int, default=5
        Classes with fewer images are not flagged (one image is always consistent with itself).
    fill : {"mean", "blur"}, default="mean"
        What paints a flagged region over: the mean colour of all images, or the image blurred.
    confident : float, default=0.9
        With masks: an image is "right for the wrong reason" when it is classified right with a
        probability of at least this, and the map's maximum misses the object (pointing game).
    tolerance : float, optional
        Pointing-game tolerance in pixels. None (default): TorchRay's 15 px at 224 px scaled to
        the images, ``15 * min(height, width) / 224``
        (:func:`keras_gradcam.metrics.pointing_tolerance`), about 2.1 px at 32 px.
    verbose : int, default=0
        1 shows a progress bar (images) on standard error.
    strategy : tf.distribute.Strategy, optional
        Explain under this strategy (default: the ``strategy.scope()`` the call is made in, else
        the one the model was created under): every pass is split across the machine's devices
        (``MirroredStrategy``), with the results of a single-device audit. One machine only; see
        docs/distributed.md.

    Returns
    -------
    AuditReport
        ``print(report)`` gives the table; ``report.save("audit/")`` writes ``index.html`` and
        ``summary.json``.

    Raises
    ------
    ValueError
        Shapes that do not fit, labels outside the model's classes, text labels without
        ``class_names`` or not in it, thresholds outside (0, 1], an unknown ``fill`` or ``method``.
    TypeError
        ``model`` is not a Keras model, ``data`` of another kind.

    Notes
    -----
    For each image ``i`` the top region ``R_i`` holds the ``top`` share of pixels with the highest
    map values. For class ``c`` with ``N_c`` images,

    .. math::

        F_c(p) = \frac{|\{i \in c : p \in R_i\}|}{N_c}, \qquad
        S_c = \{p : F_c(p) \ge p_{\min}\}, \qquad
        \kappa_c = \frac{\sum_{p \in S_c} F_c(p)}{\sum_p F_c(p)}

    and the class is flagged when ``S_c`` is not empty, ``kappa_c >= min_consistency`` and
    ``N_c >= min_images``. Why these defaults: ``top = 0.1`` keeps the peak of a map at a typical
    last-convolution resolution (7x7 to 8x8 cells: a cell is 1.5-2 % of the image), so the top
    region is a few cells around the evidence; ``min_frequency = 0.5`` asks the same pixel to be in
    the top region of most images, which an object placed anywhere in the image does not reach (its
    top regions spread over the image, so ``F`` stays low everywhere); ``min_consistency = 0.5``
    asks that region to hold most of the evidence, not a corner of it.

    Memory: per class, three ``(H, W)`` sums and one ``(H, W, C)`` image sum, plus a few scalars
    per image and ``4`` example images per class and list; nothing grows with ``n`` but the scalars.

    Examples
    --------
    >>> report = kg.audit(model, images, labels, class_names=["circle", "square"])  # doctest: +SKIP
    >>> print(report)                                                                 # doctest: +SKIP
    >>> report.save("audit/")                                                         # doctest: +SKIP
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model; got {type(model).__module__}.{type(model).__name__}.")
    batch_size = positive_int("batch_size", batch_size, expected="a positive int")
    top, min_frequency, min_consistency = (_share(n, v) for n, v in
                                           (("top", top), ("min_frequency", min_frequency), ("min_consistency", min_consistency)))
    confident = _share("confident", confident)
    tolerance = None if tolerance is None else positive_float("tolerance", tolerance, allow_zero=True)
    min_images = positive_int("min_images", min_images)
    fill = one_of("fill", fill, FILLS, expected="'mean' (the mean colour) or 'blur' (the image blurred)")
    verbose = one_of("verbose", verbose, (0, 1))
    cls = get_method(method)
    explainer = cls(model, layer, batch_size=batch_size)
    where = placement(model, strategy)
    if where.workers > 1:
        raise ValueError(
            f"audit runs on one machine, but the strategy spans {where.workers} workers; run it on one machine "
            "(MirroredStrategy over its GPUs), or explain the data over the workers with explain_dataset."
        )
    split_passes(explainer, where)
    scorer = Scorer(model, "probability")
    read = batches(data, labels, masks, batch_size)

    state: dict = {}
    scalars: dict[str, list] = {k: [] for k in ("label", "prediction", "confidence", "energy", "pointing", "wrong_reason")}
    progress = Progbar(None, verbose=verbose, unit_name="image")
    seen = 0
    for x, y, m in read():
        x = np.asarray(x, np.float32)
        conf, pred = scorer.predict(x, None, batch_size)
        if not state:
            k = Capture(model, []).num_classes()
            if k is None:
                raise ValueError(f"the model's output must be (batch, classes); got {tuple(model.outputs[0].shape)}.")
            if class_names is not None and len(class_names) != k:
                raise ValueError(f"class_names has {len(class_names)} names but the model has {k} classes; give one per class.")
            state["k"], state["has_labels"], state["has_masks"] = k, y is not None, m is not None
            state["sums"] = ClassSums(k, x.shape[1:3], x.shape[-1])
            state["keep"] = {c: {name: Keeper(EXAMPLES) for name in ("wrong", "most", "least", "first")} for c in range(k)}
            state["tolerance"] = pointing_tolerance(x.shape[1:3]) if tolerance is None else tolerance
        if (y is not None) != state["has_labels"] or (m is not None) != state["has_masks"]:
            raise ValueError("every batch must carry the same parts (images, labels, masks) as the first one.")
        y = pred if y is None else _class_indices(y, class_names)
        check_classes("labels", np.unique(y), state["k"], "Labels are class indices 0 .. classes - 1 of the model.")
        exp = explainer(x, y.astype(np.int32))
        heat = exp.heatmaps
        state["sums"].add(y, heat, top_regions(heat, top), x)
        index = np.arange(seen, seen + len(x))
        correct = pred == y
        if m is not None:
            energy = energy_pointing_game(heat, m, reduction=None)
            hit = pointing_game(heat, m, tolerance=state["tolerance"], reduction=None) if (m > 0).any((1, 2)).all() \
                else np.full(len(x), np.nan)
            wrong = correct & (conf >= confident) & (hit == 0)
        else:
            energy = hit = np.full(len(x), np.nan)
            wrong = np.zeros(len(x), bool)
        for c in np.unique(y):
            sel = y == c
            items = {"image": x[sel], "heatmap": heat[sel], "index": index[sel]}
            keep = state["keep"][int(c)]
            keep["first"].offer(index[sel].astype(np.float64), **items)
            if m is not None:
                keep["most"].offer(-np.nan_to_num(energy[sel], nan=-1.0), **items)
                keep["least"].offer(np.nan_to_num(energy[sel], nan=2.0), **items)
                w = wrong[sel]
                keep["wrong"].offer(energy[sel][w], **{n: a[w] for n, a in items.items()})
        for name, values in (("label", y), ("prediction", pred), ("confidence", conf), ("energy", energy),
                             ("pointing", hit), ("wrong_reason", wrong)):
            scalars[name].append(np.asarray(values))
        seen += len(x)
        progress.update(seen)
    if not state:
        raise ValueError("the data is empty; pass at least one image.")
    per_image = {name: np.concatenate(v) for name, v in scalars.items()}
    sums = state["sums"]
    mean_heat, frequency, mean_image = sums.means()
    colour = (sums.image.sum((0, 1, 2)) / max(1, sums.count.sum() * np.prod(mean_heat.shape[1:]))).astype(np.float32)
    regions = np.zeros_like(frequency, bool)
    classes = []
    for c in range(state["k"]):
        n_c = int(sums.count[c])
        region = flagged_region(frequency[c], min_frequency)
        kappa = consistency(frequency[c], region)
        flagged = bool(region.any() and kappa >= min_consistency and n_c >= min_images)
        regions[c] = region if flagged else False
        sel = per_image["label"] == c
        classes.append(ClassAudit(
            index=c, name=str(class_names[c]) if class_names is not None else str(c), images=n_c,
            accuracy=float((per_image["prediction"][sel] == c).mean()) if n_c else float("nan"),
            consistency=kappa, peak_frequency=float(frequency[c].max()), flagged=flagged,
            region=describe_region(region) if flagged else "", area=float(region.mean()) if flagged else 0.0,
            energy=float(np.nanmean(per_image["energy"][sel])) if state["has_masks"] and n_c else None,
            pointing=float(np.nanmean(per_image["pointing"][sel])) if state["has_masks"] and n_c else None,
            wrong_reason=int(per_image["wrong_reason"][sel].sum()) if state["has_masks"] else None,
        ))
    if regions.any():  # the causal check: the data read again, the flagged classes' images painted
        kept = np.zeros(state["k"], np.int64)
        offset = 0
        for x, _, _ in read():
            y = per_image["label"][offset : offset + len(x)]
            offset += len(x)
            sel = regions[y].any((1, 2))
            if sel.any():
                painted = paint(np.asarray(x, np.float32)[sel], regions[y[sel]], fill, colour)
                _, after = scorer.predict(painted, None, batch_size)
                np.add.at(kept, y[sel], after == y[sel])
        for c in classes:
            if c.flagged:
                c.accuracy_after = float(kept[c.index] / c.images)
    examples = {c: {name: keeper.items for name, keeper in lists.items() if len(keeper)} for c, lists in state["keep"].items()}
    return AuditReport(
        method=cls.name, layer=explainer.layer, classes=classes, labelled=state["has_labels"], fill=fill,
        thresholds={"top": top, "min_frequency": min_frequency, "min_consistency": min_consistency,
                    "min_images": min_images, "confident": confident, "tolerance": state["tolerance"]},
        mean_heatmaps=mean_heat, frequencies=frequency, regions=regions, mean_images=mean_image,
        examples=examples, per_image=per_image,
    )
