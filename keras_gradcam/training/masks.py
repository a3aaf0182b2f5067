"""The checks of guided training's annotation masks, against the images of their batch.

Masks must be ``(batch, *spatial)`` at the images' resolution (a trailing channel axis of 1 is
accepted), one per image, with finite values in ``[0, 1]`` (boolean, 0/1 or soft weights; the
value check is :func:`keras_gradcam.metrics.arrays.mask_weights`, the one every metric uses, so a
0/255 mask is refused with the same fix). Shapes known while the step is traced are checked then;
what is only known when a batch arrives (its size, its values) is checked by
:func:`checked_masks` inside the step, and a failure comes out of ``fit``/``evaluate`` as the
``ValueError`` it is (:func:`reraised`), not as TensorFlow's ``InvalidArgumentError``.
"""

from __future__ import annotations

import contextlib
import re

import keras
import numpy as np
import tensorflow as tf

from ..core import backend
from ..metrics.arrays import mask_weights

__all__ = ["MARKER", "check_masks", "checked_masks", "static_check", "reraised"]

#: Opens every mask error raised inside a compiled step, so that :func:`reraised` finds it.
MARKER = "GuidedTraining masks: "


def _expected(batch, spatial) -> str:
    return f"({', '.join(str(d) for d in (batch, *spatial))})"


def _shape_error(shape: tuple, batch, spatial: tuple) -> str | None:
    """Why masks of ``shape`` do not fit ``batch`` images of ``spatial`` size (None: they fit); None dims are unknown."""
    shape, spatial = tuple(shape), tuple(spatial)
    if len(shape) == len(spatial) + 2 and shape[-1] == 1:
        shape = shape[:-1]
    shown = "(" + ", ".join("batch" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
    expected = _expected("batch" if batch is None else batch, spatial)
    if len(shape) != len(spatial) + 1:
        return (
            f"masks must have shape {expected}: one mask per image at the images' resolution, 1 where the "
            f"evidence should be; got shape {shown} for images of spatial size {spatial}."
        )
    if batch is not None and shape[0] is not None and shape[0] != batch:
        return (
            f"the batch has {batch} images but {shape[0]} masks (masks of shape {shape}); give one mask per "
            f"image, masks of shape {expected} (an all-zero mask means 'no annotation')."
        )
    got = shape[1:]
    if all(g is not None and s is not None for g, s in zip(got, spatial)) and got != spatial:
        hint = (
            " They look transposed (width, height): pass masks.transpose(0, 2, 1)."
            if len(got) == 2 and got == spatial[::-1]
            else " Draw or resize the masks at the images' resolution (nearest-neighbour keeps them binary)."
        )
        return f"masks have shape {shown} but the images are {' x '.join(map(str, spatial))}; expected {expected}.{hint}"
    return None


def check_masks(masks, batch: int, spatial: tuple) -> np.ndarray:
    """The masks as float32 weights in ``[0, 1]``, after checking them against ``batch`` images of ``spatial`` size.

    Raises
    ------
    ValueError
        A shape other than ``(batch, *spatial)`` (or with a trailing axis of 1), a value outside
        ``[0, 1]`` (0/255 masks included), NaN or inf.
    TypeError
        Masks that are not numeric.
    """
    m = np.asarray(masks)
    problem = _shape_error(m.shape, int(batch), tuple(int(s) for s in spatial))
    if problem:
        raise ValueError(problem)
    if m.ndim == len(spatial) + 2:
        m = m[..., 0]
    return mask_weights(m, "masks").astype(np.float32)


def static_check(masks, images, channels_first: bool) -> tuple:
    """Check what the traced shapes already say; return the images' ``(batch, spatial)``, None where unknown."""
    shape = tuple(images.shape)
    spatial = shape[2:] if channels_first else shape[1:-1]
    problem = _shape_error(tuple(masks.shape), shape[0], spatial)
    if problem:
        raise ValueError(problem)
    return shape[0], spatial


def _check_in_step(masks, image_shape, channels_first):
    image_shape = tuple(int(s) for s in image_shape)
    spatial = image_shape[2:] if channels_first else image_shape[1:-1]
    try:
        return check_masks(masks, image_shape[0], spatial)
    except (ValueError, TypeError) as e:
        raise ValueError(MARKER + str(e)) from None


def checked_masks(masks, images, channels_first: bool):
    """``masks`` as float32 ``(batch, *spatial)`` weights, checked against ``images`` (see :func:`check_masks`).

    Eagerly the check raises at once; inside a compiled TensorFlow step it runs on the host when
    the batch arrives (a ``tf.numpy_function``: not compilable with XLA) and :func:`reraised`
    turns its failure back into a ``ValueError``. On JAX and PyTorch the step runs eagerly
    (``GuidedTraining`` is not jitted), so the masks' values are at hand and checked at once.
    """
    if backend.name != "tensorflow":
        static_check(masks, images, channels_first)
        shape = tuple(images.shape)
        spatial = shape[2:] if channels_first else shape[1:-1]
        return keras.ops.convert_to_tensor(check_masks(keras.ops.convert_to_numpy(masks), shape[0], spatial))
    masks = tf.convert_to_tensor(masks)
    static_check(masks, images, channels_first)
    if tf.executing_eagerly():
        shape = tuple(images.shape)
        spatial = shape[2:] if channels_first else shape[1:-1]
        return tf.constant(check_masks(np.asarray(masks), shape[0], spatial))
    out = tf.numpy_function(
        lambda m, s: _check_in_step(m, s, channels_first), [masks, tf.shape(images)], tf.float32, stateful=False
    )
    shape = tuple(masks.shape)
    spatial_rank = images.shape.rank - 2
    out.set_shape(shape[: spatial_rank + 1])
    return out


@contextlib.contextmanager
def reraised(model=None):
    """Turn a mask error raised inside a compiled step (an ``InvalidArgumentError``) back into a ``ValueError``.

    On JAX, Keras's ``fit`` and ``evaluate`` take the values out of the variables (the model's,
    the optimizer's, the metrics') for the steps and put them back only after a step has run: an
    error in the first step (bad masks) would leave them empty. After an error, each of
    ``model``'s emptied variables gets back its value from before the call, or zeros (the initial
    value of the optimizer's slots and the metrics' sums) if it was made during the call.
    """
    kept = {}
    if backend.name == "jax" and model is not None:
        kept = {id(v): v.value for v in _all_variables(model)}
    try:
        yield
    except Exception as e:
        if model is not None and backend.name == "jax":
            for variable in _all_variables(model):
                if getattr(variable, "_value", True) is None:  # emptied by Keras for the step that failed
                    variable.assign(kept.get(id(variable), keras.ops.zeros(variable.shape, variable.dtype)))
        if not isinstance(e, tf.errors.InvalidArgumentError):
            raise
        found = re.search(re.escape(MARKER) + r"(.*?)(?:\n|$)", e.message or "")
        if not found:
            raise
        raise ValueError(found.group(1).strip()) from None


def _all_variables(model) -> list:
    optimizer = getattr(model, "optimizer", None)
    return list(model.variables) + list(getattr(optimizer, "variables", [])) + list(model.metrics_variables)
