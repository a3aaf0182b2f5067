"""Targets for dense predictions: a class over a region of a segmentation map, one detection's box.

A target is a callable ``outputs -> (B,)`` scores (see :mod:`keras_gradcam.core.targets`). These
two reduce a segmentation map or a detector's raw outputs to one score per image, with hashable
equality (equal targets share one compiled function) and checks that name what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

from . import backend
from .targets import Target, digest, pick_output
from .validate import boolean, check_classes, integer, one_of, positive_float, warn_user

__all__ = ["SegmentationTarget", "BoxTarget", "box_iou"]

CORNER_FORMATS = ("xyxy", "yxyx", "rel_xyxy", "rel_yxyx")


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.array(array, copy=True, order="C")  # keeps 0-d arrays 0-d
    array.setflags(write=False)
    return array


def _direct(target: Target, outputs) -> backend.Tensor:
    """``target(outputs)`` outside an explainer: its rows and shared data as constants for the batch."""
    batch = keras.tree.flatten(outputs)[0].shape[0]
    rows = target.rows(batch) if batch is not None else {}
    for name, r in rows.items():
        if batch is not None and r.shape[0] != batch:
            raise ValueError(
                f"{target.describe()} holds {r.shape[0]} per-image entries ({name}) but the outputs have {batch} "
                "rows: call it on the outputs of as many images, or pass it to an explainer as targets=."
            )
    data = {k: keras.ops.convert_to_tensor(v) for k, v in rows.items()}
    return target.score(outputs, data, {k: keras.ops.convert_to_tensor(v) for k, v in target.shared().items()}, None)


class SegmentationTarget(Target):
    """The summed logit of one class over a region of a segmentation map.

    ``score = sum over pixels p of mask[p] * logit[p, category]``. With ``mask=None`` the region
    is where the model predicts ``category`` (the argmax over classes, taken from the forward pass
    and not differentiated), as pytorch-grad-cam's ``SemanticSegmentationTarget`` does with a mask
    computed beforehand. A softmax at the end of the model is skipped while explaining (the
    explainer's default ``score="logit"``), so the logits are summed, not probabilities.

    Parameters
    ----------
    category : int
        The class (channel of the segmentation output).
    mask : array-like of shape (height, width) or (n_samples, height, width), optional
        Weights of the pixels (bool or float), at the resolution of the model's output (resize it
        first if the model predicts at a lower resolution, e.g. SegFormer's quarter size). One mask
        for all images, or one per image (cut per batch like the images). None: the predicted
        region of ``category``.
    output : int or str, optional
        Which output of a multi-output model (None for a single-output model).
    data_format : {"channels_last", "channels_first"}, optional
        Where the class axis of the output is: last (``(B, H, W, C)``) or second
        (``(B, C, H, W)``); by default ``keras.config.image_data_format()``.

    Raises
    ------
    TypeError
        ``category`` is not an int.
    ValueError
        A mask that is not 2-D or 3-D, or (when explaining) whose shape is not the output's spatial
        shape; a ``category`` outside the output's classes.

    Examples
    --------
    >>> t = SegmentationTarget(1, mask=np.eye(4, dtype=bool))
    >>> t == SegmentationTarget(1, mask=np.eye(4, dtype=bool)), t.num_samples
    (True, None)
    """

    def __init__(self, category: int, mask=None, output: int | str | None = None, data_format: str | None = None):
        self.category = integer("category", category, expected="an int class index")
        if self.category < 0:
            raise ValueError(f"category must be a class index >= 0; got {self.category}.")
        if mask is not None:
            mask = np.asarray(mask)
            if mask.dtype.kind not in "biuf" or mask.ndim not in (2, 3):
                raise ValueError(
                    "mask must be a bool or float array of shape (height, width), one for all images, or "
                    f"(n_samples, height, width), one per image; got {mask.dtype} of shape {mask.shape}."
                )
            mask = _frozen(mask.astype(np.float32))
        self.mask = mask
        self.output = output
        self.data_format = one_of("data_format", data_format or keras.config.image_data_format(),
                                  ("channels_last", "channels_first"))

    @property
    def num_samples(self) -> int | None:
        """The number of per-image masks (None for one mask, or none, shared by all images)."""
        return None if self.mask is None or self.mask.ndim == 2 else int(self.mask.shape[0])

    def _key(self):
        return (self.category, digest(self.mask), self.output, self.data_format)

    @property
    def key(self):
        """Masks are data: targets differing only in their masks' values share a compiled function."""
        kind = None if self.mask is None else self.mask.ndim
        return (SegmentationTarget, self.category, kind, self.output, self.data_format)

    def rows(self, n: int) -> dict[str, np.ndarray]:
        return {"mask": self.mask} if self.mask is not None and self.mask.ndim == 3 else {}

    def shared(self) -> dict[str, np.ndarray]:
        return {"mask": self.mask} if self.mask is not None and self.mask.ndim == 2 else {}

    def __eq__(self, other):
        return type(other) is type(self) and other._key() == self._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        mask = None if self.mask is None else f"<mask {self.mask.shape}>"
        return f"SegmentationTarget(category={self.category}, mask={mask}, output={self.output!r})"

    def class_logits(self, outputs) -> tuple:
        """The category's logit map ``(B, *spatial)`` and, for ``mask=None``, the predicted region."""
        out = keras.ops.cast(pick_output(outputs, self.output), "float32")
        if len(out.shape) < 3:
            raise ValueError(
                f"SegmentationTarget needs a segmentation output of shape (N, height, width, classes) (or classes "
                f"first with data_format='channels_first'); the explained output has shape {tuple(out.shape)}."
            )
        axis = 1 if self.data_format == "channels_first" else -1
        check_classes("category", [self.category], out.shape[axis],
                      fix=f"The output has shape {tuple(out.shape)} ({self.data_format}).")
        logit = out[:, self.category] if axis == 1 else out[..., self.category]
        predicted = keras.ops.cast(keras.ops.argmax(out, axis=axis) == self.category, "float32")  # not differentiable
        return logit, predicted

    def score(self, outputs, rows, shared, capture) -> backend.Tensor:
        logit, predicted = self.class_logits(outputs)
        if self.mask is None:
            mask = predicted
        else:
            spatial = tuple(logit.shape[1:])
            if tuple(self.mask.shape[-2:]) != spatial and None not in spatial:
                raise ValueError(
                    f"the mask has shape {self.mask.shape[-2:]} (height, width) but the segmentation output's "
                    f"spatial shape is {spatial}: give the mask at the output's resolution (resize it, nearest "
                    "neighbour, to that shape)."
                )
            mask = rows["mask"] if self.mask.ndim == 3 else shared["mask"][None]
        return keras.ops.sum(logit * keras.ops.cast(mask, "float32"), axis=tuple(range(1, len(logit.shape))))

    def __call__(self, outputs) -> backend.Tensor:
        return _direct(self, outputs)


def box_iou(boxes: backend.Tensor, reference: backend.Tensor) -> backend.Tensor:
    """IoU of corner boxes ``(B, A, 4)`` with one reference box per sample ``(B, 4)``: ``(B, A)``.

    Both in the same corner format, ``(y1, x1, y2, x2)`` or ``(x1, y1, x2, y2)`` (IoU is the same
    in either). Differentiable with respect to ``boxes``.
    """
    ops = keras.ops
    ref = reference[:, None, :]
    lo = ops.maximum(boxes[..., :2], ref[..., :2])
    hi = ops.minimum(boxes[..., 2:], ref[..., 2:])
    inter = ops.prod(ops.maximum(hi - lo, 0.0), axis=-1)
    area = ops.prod(ops.maximum(boxes[..., 2:] - boxes[..., :2], 0.0), axis=-1)
    ref_area = ops.prod(ops.maximum(ref[..., 2:] - ref[..., :2], 0.0), axis=-1)
    return inter / ops.maximum(area + ref_area - inter, 1e-9)


def _warn_unmatched(matched) -> None:
    """The warning of samples without a match, on the host while the compiled function runs (``backend.on_host``)."""
    missing = int((~np.asarray(matched, bool)).sum())
    if missing:
        warn_user(
            f"BoxTarget: {missing} of {matched.shape[0]} samples have no detection of the class whose box overlaps "
            "the reference box with IoU >= iou_threshold; their score is 0 and their map all zero. Lower "
            "iou_threshold (or min_score), or check the box format and the class.",
            RuntimeWarning,
        )


class BoxTarget(Target):
    """The class score of the detection that matches a reference box, optionally plus its IoU.

    Among the predicted boxes whose top class is ``category`` (and whose class score is at least
    ``min_score``, if given), the one with the highest IoU with ``box`` is matched, if that IoU is
    at least ``iou_threshold``; the score is its ``category`` score (plus the IoU with
    ``add_iou=True``, as pytorch-grad-cam's ``FasterRCNNBoxScoreTarget`` does). The choice of box is
    taken from the forward pass and not differentiated; the score and the IoU are (the IoU through
    the predicted box's coordinates). When no box matches, the sample's score is 0 (its map is all
    zero) and a ``RuntimeWarning`` says how many samples had no match.

    Parameters
    ----------
    box : array-like of shape (4,) or (n_samples, 4)
        The reference box, in the corner format of the detections' boxes (``(y1, x1, y2, x2)`` for
        KerasHub's default ``"yxyx"``, or ``(x1, y1, x2, y2)``); one for all images or one per
        image (cut per batch like the images).
    category : int or sequence of int
        The class, for all images or one per image.
    detections : callable, optional
        ``outputs -> (boxes (B, A, 4), class_scores (B, A, C))``: the model's outputs as boxes and
        per-class scores (logits). None: the outputs are already that pair (a tuple, or a dict with
        ``"boxes"`` and ``"scores"``). For KerasHub's RetinaNet use
        :class:`~keras_gradcam.core.kerashub.RetinaNetDetections`.
    iou_threshold : float, default=0.5
        The least IoU of a match, in ``[0, 1]``.
    add_iou : bool, default=False
        Add the matched box's IoU to the score (it then explains the box's position too).
    min_score : float, optional
        Only boxes whose ``category`` score is at least this are candidates (in the units of
        ``class_scores``, logits for RetinaNet).

    Examples
    --------
    >>> t = BoxTarget([0, 0, 8, 8], category=1)
    >>> t == BoxTarget((0, 0, 8, 8), category=1)
    True
    """

    def __init__(self, box, category, detections: Callable | None = None, iou_threshold: float = 0.5,
                 add_iou: bool = False, min_score: float | None = None):
        box = np.asarray(box, dtype=np.float32)
        if box.ndim not in (1, 2) or box.shape[-1] != 4:
            raise ValueError(f"box must be 4 corner coordinates, shape (4,), or one box per image, (n_samples, 4); got shape {box.shape}.")
        if not np.isfinite(box).all() or (box[..., 2:] < box[..., :2]).any():
            raise ValueError(
                "box must be finite corners (min, min, max, max) in the detections' corner format, e.g. (y1, x1, y2, x2) "
                f"with y2 >= y1 and x2 >= x1; got {box.tolist()}."
            )
        cats = np.asarray(category)
        if cats.dtype.kind not in "iu" or cats.ndim > 1:
            raise TypeError(f"category must be an int class index or one per image; got {category!r}.")
        if (cats < 0).any():
            raise ValueError(f"category must be class indices >= 0; got {cats.tolist()}.")
        rows = {len(a) for a in (box, cats) if a.ndim == (2 if a is box else 1)}
        if len(rows) > 1:
            raise ValueError(f"box has {box.shape[0]} rows and category {cats.shape[0]}: give the same number of each, or one of each.")
        if detections is not None and not callable(detections):
            raise TypeError(f"detections must be a callable outputs -> (boxes, class_scores), or None; got {type(detections).__name__}.")
        self.box = _frozen(box)
        self.category = _frozen(cats.astype(np.int32))
        self.detections = detections
        self.iou_threshold = positive_float("iou_threshold", iou_threshold, allow_zero=True)
        if self.iou_threshold > 1:
            raise ValueError(f"iou_threshold must be in [0, 1]; got {iou_threshold!r}.")
        self.add_iou = boolean("add_iou", add_iou)
        self.min_score = None if min_score is None else float(min_score)

    @property
    def num_samples(self) -> int | None:
        """The number of per-image boxes or classes (None when one box and one class serve all)."""
        if self.box.ndim == 2:
            return int(self.box.shape[0])
        return int(self.category.shape[0]) if self.category.ndim == 1 else None

    def _key(self):
        return (digest(self.box), digest(self.category), self.detections, self.iou_threshold, self.add_iou, self.min_score)

    @property
    def key(self):
        """Boxes are data; the classes (checked against the output while tracing) are part of the key."""
        return (BoxTarget, self.box.ndim, digest(self.category), self.detections, self.iou_threshold, self.add_iou,
                self.min_score)

    def rows(self, n: int) -> dict[str, np.ndarray]:
        rows = {"box": self.box} if self.box.ndim == 2 else {}
        if self.category.ndim == 1:
            rows["category"] = self.category
        return rows

    def shared(self) -> dict[str, np.ndarray]:
        return {"box": self.box} if self.box.ndim == 1 else {}

    def __eq__(self, other):
        return type(other) is type(self) and other._key() == self._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        return f"BoxTarget(box={self.box.tolist()}, category={self.category.tolist()}, iou_threshold={self.iou_threshold})"

    def _pair(self, outputs):
        got = self.detections(outputs) if self.detections is not None else outputs
        if isinstance(got, dict) and {"boxes", "scores"} <= set(got):
            got = (got["boxes"], got["scores"])
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise ValueError(
                "BoxTarget needs the detections as (boxes (N, A, 4), class_scores (N, A, classes)); got "
                f"{type(got).__name__}. Pass detections=<callable outputs -> (boxes, class_scores)>, e.g. "
                "RetinaNetDetections(model) for KerasHub's RetinaNet."
            )
        boxes, scores = (keras.ops.cast(t, "float32") for t in got)
        if len(boxes.shape) != 3 or boxes.shape[-1] != 4 or len(scores.shape) != 3:
            raise ValueError(
                f"BoxTarget needs boxes of shape (N, A, 4) and class scores (N, A, classes); got {tuple(boxes.shape)} "
                f"and {tuple(scores.shape)}."
            )
        check_classes("category", self.category.reshape(-1).tolist(), scores.shape[-1])
        return boxes, scores

    def match(self, outputs, rows=None, shared=None):
        """``(score (B,), iou (B,), index (B,), matched (B,) bool)``: the matched box of each sample.

        ``rows`` and ``shared``: the target's data for the batch (see :class:`~keras_gradcam.core.targets.Target`);
        by default its own, for outputs of as many images as it holds rows.
        """
        if rows is None or shared is None:
            batch = keras.tree.flatten(outputs)[0].shape[0]
            rows = {k: keras.ops.convert_to_tensor(v) for k, v in self.rows(batch).items()}
            shared = {k: keras.ops.convert_to_tensor(v) for k, v in self.shared().items()}
        ops = keras.ops
        boxes, scores = self._pair(outputs)
        zero = ops.zeros_like(scores[:, 0, 0], "int32")  # (B,): the batch, of any size
        box = rows["box"] if self.box.ndim == 2 else ops.cast(zero, "float32")[:, None] + shared["box"][None]
        cat = rows["category"] if self.category.ndim == 1 else zero + int(self.category)
        cat = ops.cast(cat, "int32")
        iou = box_iou(boxes, box)
        cat_score = ops.take_along_axis(scores, ops.expand_dims(cat[:, None] + ops.zeros_like(iou, "int32"), -1), axis=2)[..., 0]  # (B, A)
        candidate = ops.cast(ops.argmax(scores, axis=-1), "int32") == cat[:, None]
        if self.min_score is not None:
            candidate = ops.logical_and(candidate, cat_score >= self.min_score)
        ranked = ops.stop_gradient(ops.where(candidate, iou, -1.0))
        index = ops.cast(ops.argmax(ranked, axis=1), "int32")[:, None]
        matched = ops.take_along_axis(ranked, index, axis=1)[:, 0] >= self.iou_threshold
        best_iou = ops.take_along_axis(iou, index, axis=1)[:, 0]
        best_score = ops.take_along_axis(cat_score, index, axis=1)[:, 0]
        return best_score, best_iou, index[:, 0], matched

    def score(self, outputs, rows, shared, capture) -> backend.Tensor:
        score, iou, _, matched = self.match(outputs, rows, shared)
        if self.add_iou:
            score = score + iou
        # the warning runs on the host with every call of the compiled function; the flags it returns
        # (the same) are used, so that it runs before the score is
        (flags,) = backend.on_host(_warn_unmatched, matched)
        return keras.ops.where(flags, score, keras.ops.zeros_like(score))

    def __call__(self, outputs) -> backend.Tensor:
        return _direct(self, outputs)
