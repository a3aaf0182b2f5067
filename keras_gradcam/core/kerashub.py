"""What keras-gradcam knows of KerasHub models, read by duck typing (KerasHub is never imported).

- A KerasHub task's image preprocessor (:func:`preprocessor_of`, :func:`preprocess`): the model's
  own call does not run it, so the engine runs it on the raw images, as ``predict`` would.
- A ``RetinaNetObjectDetector``'s raw outputs (box deltas on its anchors, class logits) decoded
  into boxes, differentiably (:class:`RetinaNetDetections`), for
  :class:`~keras_gradcam.core.dense_targets.BoxTarget`.
"""

from __future__ import annotations

import keras
import numpy as np

from .dense_targets import CORNER_FORMATS
from .inputs import as_inputs, stack_single_images
from .validate import one_of

__all__ = ["preprocessor_of", "preprocess", "RetinaNetDetections"]


def preprocessor_of(model: keras.Model):
    """The image preprocessor attached to a KerasHub task (``model.preprocessor`` with an ``image_converter``), or None.

    Read by duck typing (no KerasHub import): a KerasHub ``ImageClassifier`` built with its
    preprocessor, or from a preset, has one; the model's own call does not run it (``predict`` and
    ``fit`` do), so keras-gradcam runs it on the raw images before explaining, as ``predict`` would.
    """
    pre = getattr(model, "preprocessor", None)
    if pre is None or not callable(pre) or getattr(pre, "image_converter", None) is None:
        return None
    return pre


def preprocess(model: keras.Model, images) -> tuple:
    """Raw images through a KerasHub task's preprocessor: ``(preprocessed, raw spatial size)``.

    ``(images, None)`` for a model without one (:func:`preprocessor_of`). The preprocessor (resize,
    rescale, normalise) runs eagerly, outside any gradient: explanations are of the model on what
    the preprocessor gives, and their maps are brought back to the raw images' size.

    Raises
    ------
    ValueError
        The images are not one batch ``(n_samples, height, width, channels)`` (or a list of single
        images of one size), so there is no raw size to bring the maps back to.
    """
    pre = preprocessor_of(model)
    if pre is None:
        return images, None
    x = stack_single_images(model, as_inputs(images))
    if isinstance(x, np.ndarray) and x.ndim == 3:
        x = x[None]  # one raw image
    if not isinstance(x, np.ndarray) or x.ndim != 4:
        got = type(x).__name__ if not isinstance(x, np.ndarray) else f"an array of shape {x.shape}"
        raise ValueError(
            f"model {model.name!r} has a KerasHub preprocessor, which keras-gradcam runs on the raw images; "
            f"images must be one batch (n_samples, height, width, channels) of raw images, got {got}."
        )
    first = getattr(getattr(pre, "image_converter", None), "data_format", None) == "channels_first"
    raw = tuple(int(d) for d in (x.shape[2:4] if first else x.shape[1:3]))
    out = pre(x)
    if isinstance(out, (tuple, list)):  # (x, y, sample_weight) packing
        out = out[0]
    return np.asarray(keras.ops.convert_to_numpy(out)), raw



class RetinaNetDetections:
    """KerasHub ``RetinaNetObjectDetector`` raw outputs as ``(boxes, class logits)``, differentiably.

    The model returns box deltas relative to its anchors (``"bbox_regression"``) and class logits
    (``"cls_logits"``) before non-maximum suppression. This adapter decodes the deltas with the
    model's own anchor generator and KerasHub's decoding (as ``decode_predictions`` does, without
    the suppression), in ``keras.ops`` (on any backend), so gradients flow through the boxes.

    Parameters
    ----------
    model : keras_hub.models.RetinaNetObjectDetector
        Read only (its ``anchor_generator`` and ``bounding_box_format``).
    image_shape : (height, width, channels), optional
        The images' shape; by default the model's input shape (needed when it has ``None`` sides).
    box_format : {"yxyx", "xyxy", "rel_yxyx", "rel_xyxy"}, optional
        The corner format of the boxes returned (and so of :class:`BoxTarget`'s reference box); by
        default the model's ``bounding_box_format``.
    """

    def __init__(self, model, image_shape=None, box_format: str | None = None):
        generator = getattr(model, "anchor_generator", None)
        if generator is None or not hasattr(model, "bounding_box_format"):
            raise TypeError(f"RetinaNetDetections needs a KerasHub RetinaNetObjectDetector (with an anchor_generator); got {type(model).__name__}.")
        shape = tuple(image_shape or tuple(model.input_shape)[1:])
        if len(shape) != 3 or None in shape:
            raise ValueError(f"the image shape must be known: pass image_shape=(height, width, channels); the model's input shape is {tuple(model.input_shape)}.")
        self.model, self.image_shape = model, tuple(int(s) for s in shape)
        self.box_format = one_of("box_format", box_format or model.bounding_box_format, CORNER_FORMATS,
                                 expected=f"a corner format, one of {CORNER_FORMATS} (pass box_format=)")
        levels = generator(np.zeros((1, *self.image_shape), np.float32))
        anchors = np.concatenate([keras.ops.convert_to_numpy(a) for a in levels.values()], axis=0)
        anchors.setflags(write=False)
        self.anchors = anchors

    def _key(self):
        return (id(self.model), self.image_shape, self.box_format)

    def __eq__(self, other):
        return type(other) is type(self) and other._key() == self._key()

    def __hash__(self):
        return hash(self._key())

    def __call__(self, outputs):
        h, w, _ = self.image_shape
        boxes = keras.utils.bounding_boxes.decode_deltas_to_boxes(
            anchors=keras.ops.convert_to_tensor(self.anchors), boxes_delta=keras.ops.cast(outputs["bbox_regression"], "float32"),
            encoded_format="center_xywh", anchor_format=self.model.anchor_generator.bounding_box_format,
            box_format=self.model.bounding_box_format, image_shape=self.image_shape,
        )
        if self.box_format != self.model.bounding_box_format:
            boxes = keras.utils.bounding_boxes.convert_format(boxes, source=self.model.bounding_box_format,
                                                              target=self.box_format, height=h, width=w)
        return boxes, outputs["cls_logits"]
