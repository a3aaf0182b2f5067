"""kg.GuidedTraining inside Keras: validation, evaluate, predict, TensorBoard, the callback, distribution, mixed precision.

Pinned numbers come from the hand-set model of ``test_guided_training.py`` (``_pool_model``): its
map is ``2.5 * [[1, 2], [3, 4]]`` and a mask on the top-left block leaves ``9 / 10`` of it outside.
"""

from __future__ import annotations

import os
import warnings

import keras
import numpy as np
import tensorflow as tf
from tensorboard.backend.event_processing import plugin_event_accumulator

import keras_gradcam as kg
from keras_gradcam.metrics import energy_pointing_game


def _pool_model():
    """x (4, 4, 1) -> identity 1x1 conv -> 2x2 average pool -> Dense(2, softmax); logit_0 = [1, 2, 3, 4] . pooled."""
    inputs = keras.Input((4, 4, 1))
    a = keras.layers.Conv2D(1, 1, use_bias=False, name="conv")(inputs)
    a = keras.layers.AveragePooling2D(2, name="pool")(a)
    out = keras.layers.Dense(2, activation="softmax", name="head")(keras.layers.Flatten()(a))
    model = keras.Model(inputs, out)
    model.get_layer("conv").set_weights([np.ones((1, 1, 1, 1), "float32")])
    kernel = np.zeros((4, 2), "float32")
    kernel[:, 0] = [1, 2, 3, 4]
    model.get_layer("head").set_weights([kernel, np.zeros(2, "float32")])
    return model


def _pool_data(n=4):
    """Images with blocks [[1, 2], [3, 4]] (pooled), label 0, mask on the top-left block: share outside 0.9."""
    x = np.stack([np.kron(np.array([[1, 2], [3, 4]], "float32"), np.ones((2, 2), "float32"))[..., None]] * n)
    y = np.zeros(n, "int32")
    masks = np.zeros((n, 4, 4), "float32")
    masks[:, :2, :2] = 1
    return x, y, masks


# logit_0 = 1 + 4 + 9 + 16 = 30, logit_1 = 0: cross-entropy log(1 + e^-30)
CE = float(np.log1p(np.exp(-30.0)))


def _frozen(model, **kwargs):
    """GuidedTraining with SGD(0): fitting changes nothing, so every logged number is the hand value."""
    guided = kg.GuidedTraining(model, layer="pool", **kwargs)
    guided.compile(optimizer=keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return guided


def test_validation_data_evaluate_and_predict_report_the_hand_values():
    x, y, masks = _pool_data()
    model = _pool_model()
    guided = _frozen(model, weight=2.0)
    history = guided.fit(
        tf.data.Dataset.from_tensor_slices((x, y, masks)).batch(2), epochs=2, verbose=0,
        validation_data=tf.data.Dataset.from_tensor_slices((x, y, masks)).batch(2),
    )
    for key in ("alignment_loss", "val_alignment_loss"):
        np.testing.assert_allclose(history.history[key], [0.9, 0.9], rtol=1e-6)
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(history.history[key], [CE + 2 * 0.9] * 2, rtol=1e-6)
    np.testing.assert_allclose(history.history["val_accuracy"], [1.0, 1.0])
    # validation batches without masks: plain validation, alignment 0
    history = guided.fit(x, y, sample_weight=masks, batch_size=2, epochs=1, verbose=0, validation_data=(x, y))
    assert history.history["val_alignment_loss"] == [0.0]
    np.testing.assert_allclose(history.history["val_loss"], [CE], rtol=1e-6, atol=1e-12)
    # evaluate: with masks (as the third element of a dataset, or as sample_weight), and without
    logs = guided.evaluate(tf.data.Dataset.from_tensor_slices((x, y, masks)).batch(4), verbose=0, return_dict=True)
    np.testing.assert_allclose([logs["alignment_loss"], logs["loss"]], [0.9, CE + 1.8], rtol=1e-6)
    logs = guided.evaluate(x, y, sample_weight=masks, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["alignment_loss"], 0.9, rtol=1e-6)
    logs = guided.evaluate(x, y, verbose=0, return_dict=True)
    assert logs["alignment_loss"] == 0.0
    # predict: the wrapped model's output; a dataset of (x, y, masks) is read for its x only
    expected = np.array([[1.0, np.exp(-30.0)]]) / (1 + np.exp(-30.0))
    np.testing.assert_allclose(guided.predict(x, verbose=0), np.repeat(expected, 4, axis=0), rtol=1e-6)
    ds = tf.data.Dataset.from_tensor_slices((x, y, masks)).batch(3)
    np.testing.assert_allclose(guided.predict(ds, verbose=0), model.predict(x, verbose=0), rtol=0, atol=0)


def test_hint_loss_reported_the_same_way():
    """loss="hint" on the hand model: g = M / mean(M) = [[0.4, 0.8], [1.2, 1.6]]; pairs (top-left, b) for
    the three other cells: mean(max(0, g_b - 0.4)) = (0.4 + 0.8 + 1.2) / 3 = 0.8."""
    x, y, masks = _pool_data()
    guided = _frozen(_pool_model(), weight=1.0, loss="hint")
    logs = guided.evaluate(x, y, sample_weight=masks, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["alignment_loss"], 0.8, rtol=1e-6)


def _scalars(run_dir) -> dict:
    acc = plugin_event_accumulator.EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    acc.Reload()
    return {tag: [float(tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)] for tag in acc.Tags()["tensors"]}


def test_alignment_loss_in_tensorboard_per_batch_and_per_epoch(tmp_path):
    x, y, masks = _pool_data()
    guided = _frozen(_pool_model())
    guided.fit(
        tf.data.Dataset.from_tensor_slices((x, y, masks)).batch(2), epochs=2, verbose=0,
        validation_data=tf.data.Dataset.from_tensor_slices((x, y, masks)).batch(4),
        callbacks=[keras.callbacks.TensorBoard(str(tmp_path), update_freq=1)],
    )
    train, validation = _scalars(tmp_path / "train"), _scalars(tmp_path / "validation")
    np.testing.assert_allclose(train["epoch_alignment_loss"], [0.9, 0.9], rtol=1e-6)
    np.testing.assert_allclose(train["batch_alignment_loss"], [0.9] * 4, rtol=1e-6)  # 2 epochs x 2 batches
    np.testing.assert_allclose(validation["epoch_alignment_loss"], [0.9, 0.9], rtol=1e-6)


def test_progress_bar_shows_alignment_loss(capsys):
    x, y, masks = _pool_data()
    _frozen(_pool_model()).fit(x, y, sample_weight=masks, batch_size=2, epochs=1, verbose=2)
    assert "alignment_loss: 0.9000" in capsys.readouterr().out


def test_gradcam_callback_during_guided_fit_explains_the_wrapped_model(tmp_path):
    """The callback looks through the wrapper: it explains the user's model (its softmax looked through)."""
    x, y, masks = _pool_data()
    model = _pool_model()
    guided = _frozen(model)
    callback = kg.GradCAMCallback(
        x[:2], log_dir=str(tmp_path), probe_labels=y[:2], method="gradcam", layer="pool", probe_masks=masks[:2],
        warn_below=None,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no "explains probabilities" warning
        guided.fit(tf.data.Dataset.from_tensor_slices((x, y, masks)).batch(2), epochs=2, verbose=0, callbacks=[callback])
    assert callback.model is model
    # the share the callback logs is the one kg.explain's heatmaps of the user's model give
    heatmaps = kg.explain(model, x[:2], targets=y[:2], method="gradcam", layer="pool").heatmaps
    expected = energy_pointing_game(heatmaps, masks[:2])
    assert 0 < expected < 0.5  # most of the map 2.5 * [[1, 2], [3, 4]] lies outside the top-left block
    np.testing.assert_allclose(callback.history["energy_inside_object"], [expected] * 2, rtol=1e-5)
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "gradcam"))
