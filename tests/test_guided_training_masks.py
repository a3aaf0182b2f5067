"""kg.GuidedTraining checks its masks: shape (batch, H, W) matching the images, finite values in [0, 1].

Each mistake reaches the user as a ValueError naming what was received and what was expected, from
``forward`` (eager) and from ``fit`` (a compiled step, where TensorFlow would otherwise raise its
own InvalidArgumentError or go on silently).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gradcam as kg

H, W = 8, 12  # not square: a transposed mask is visible


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((H, W, 1))
    a = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    out = keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling2D()(a))
    return keras.Model(inputs, out)


def _data(n=4):
    x = np.random.default_rng(0).random((n, H, W, 1)).astype("float32")
    y = (np.arange(n) % 2).astype("int32")
    masks = np.zeros((n, H, W), "float32")
    masks[:, 2:6, 3:9] = 1
    return x, y, masks


def _fit(guided, x, y, masks, mask_batch=None):
    guided.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ds = tf.data.Dataset.zip(
        (
            tf.data.Dataset.from_tensor_slices(x).batch(len(x)),
            tf.data.Dataset.from_tensor_slices(y).batch(len(x)),
            tf.data.Dataset.from_tensor_slices(masks).batch(mask_batch or len(x)),
        )
    )
    return guided.fit(ds, epochs=1, verbose=0)


def _both_ways(guided, x, y, masks, match, mask_batch=None):
    """The same ValueError from the eager forward pass and from a compiled fit step."""
    with pytest.raises(ValueError, match=match):
        guided.forward(x, y, masks if mask_batch is None else masks[:mask_batch])
    with pytest.raises(ValueError, match=match):
        _fit(guided, x, y, masks, mask_batch)


def test_0_255_masks_are_refused_with_the_fix():
    x, y, masks = _data()
    guided = kg.GuidedTraining(_model())
    m255 = (masks * 255).astype("uint8")
    _both_ways(guided, x, y, m255, r"integer dtype must hold 0 and 1 only; got values in \[0, 255\]\. Pass masks > 0")
    _both_ways(guided, x, y, masks * 255, r"values in \[0, 255\]")  # float 0/255 too


def test_a_mask_count_that_differs_from_the_batch():
    x, y, masks = _data()
    guided = kg.GuidedTraining(_model())
    _both_ways(guided, x, y, masks, r"the batch has 4 images but 3 masks .* masks of shape \(4, 8, 12\)", mask_batch=3)


def test_transposed_masks_are_refused_not_resized():
    x, y, masks = _data()
    guided = kg.GuidedTraining(_model())
    transposed = masks.transpose(0, 2, 1)  # (W, H) masks for H x W images
    _both_ways(guided, x, y, transposed, r"masks have shape \((?:4|batch), 12, 8\) but the images are 8 x 12; expected "
               r"\((?:4|batch), 8, 12\)\. They look transposed")
    smaller = np.zeros((4, 4, 6), "float32")
    _both_ways(guided, x, y, smaller, r"masks have shape \((?:4|batch), 4, 6\) but the images are 8 x 12")


def test_a_nan_in_a_mask():
    x, y, masks = _data()
    masks[1, 0, 0] = np.nan
    guided = kg.GuidedTraining(_model())
    _both_ways(guided, x, y, masks, "masks contains NaN or inf values")


def test_good_masks_still_train_the_same_way():
    """Bool, 0/1 integer, float and (batch, H, W, 1) masks give the same alignment loss."""
    x, y, masks = _data()
    guided = kg.GuidedTraining(_model())
    expected = float(guided.forward(x, y, masks)[1])
    for variant in (masks.astype(bool), masks.astype("uint8"), masks[..., None]):
        assert float(guided.forward(x, y, variant)[1]) == pytest.approx(expected, rel=1e-6)
    history = _fit(guided, x, y, masks)
    assert np.isfinite(history.history["alignment_loss"][0])
