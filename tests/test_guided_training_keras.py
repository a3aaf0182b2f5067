"""kg.GuidedTraining inside Keras: validation, evaluate, predict, TensorBoard, the callback, distribution, mixed precision.

Pinned numbers come from the hand-set model of ``test_guided_training.py`` (``_pool_model``): its
map is ``2.5 * [[1, 2], [3, 4]]`` and a mask on the top-left block leaves ``9 / 10`` of it outside.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings

import keras
import numpy as np
import pytest
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


MIRRORED = textwrap.dedent(
    """
    import json, sys
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import keras_gradcam as kg

    def build():
        keras.utils.set_random_seed(0)
        inputs = keras.Input((6, 6, 1))
        a = keras.layers.Conv2D(3, 3, padding="same", activation="tanh", name="conv")(inputs)
        out = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(a))
        return keras.Model(inputs, out)

    rng = np.random.default_rng(0)
    x = rng.random((8, 6, 6, 1)).astype("float32")
    y = (np.arange(8) % 3).astype("int32")
    masks = np.zeros((8, 6, 6), "float32")
    masks[:, :3, :] = 1  # every sample annotated: each replica's mean is the global one

    def train(strategy):
        with strategy.scope():
            model = build()
            # no composites: each replica pairs the images of its own half of the batch
            guided = kg.GuidedTraining(model, layer="conv", weight=3.0, counterfactual=False)
            guided.compile(optimizer=keras.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")
        ds = tf.data.Dataset.from_tensor_slices((x, y, masks)).batch(8)
        history = guided.fit(ds, epochs=2, verbose=0)
        return model.get_weights(), history.history

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert mirrored.num_replicas_in_sync == 2
    got, got_logs = train(mirrored)
    want, want_logs = train(tf.distribute.get_strategy())
    json.dump({
        "max_weight_diff": max(float(np.abs(a - b).max()) for a, b in zip(got, want)),
        "moved": max(float(np.abs(a - b).max()) for a, b in zip(want, build().get_weights())),
        "logs": got_logs, "want_logs": want_logs,
    }, sys.stdout)
    """
)


@pytest.mark.slow  # a second TensorFlow process: ~20 s alone, ~40 s on a shared 2-core machine
def test_mirrored_strategy_on_two_cpu_devices_matches_one_device():
    """Two logical CPUs (configured before TensorFlow starts, hence a subprocess); 4 samples per replica.

    The replicas' gradients are summed, so each replica's alignment term is scaled by 1/2 like its
    task loss: the weights after two steps equal one-device training on the whole batch.
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, "-c", MIRRORED], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["moved"] > 1e-3  # training did change the weights
    assert result["max_weight_diff"] < 1e-5
    for key in ("loss", "alignment_loss"):
        np.testing.assert_allclose(result["logs"][key], result["want_logs"][key], rtol=1e-5)
    assert min(result["logs"]["alignment_loss"]) > 0.05


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_trains_and_reports_the_float32_alignment(policy):
    """Under a mixed policy the layers compute in half precision; the map is computed in float32.

    The alignment loss of the hand model (0.9) is reproduced to half-precision accuracy, and a fit
    runs (mixed_float16: Keras wraps the optimizer in a LossScaleOptimizer, whose scale_loss the
    step uses). The global policy is restored afterwards.
    """
    before = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = _pool_model()
        assert model.get_layer("conv").compute_dtype == policy.split("_")[1]
        x, y, masks = _pool_data()
        guided = kg.GuidedTraining(model, layer="pool", weight=1.0)
        _, align = guided.forward(x, y, masks)
        assert align.dtype == tf.float32
        np.testing.assert_allclose(float(align), 0.9, rtol=1e-2)
        guided.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
        if policy == "mixed_float16":
            assert isinstance(guided.optimizer, keras.optimizers.LossScaleOptimizer)
        before_weights = [w.copy() for w in model.get_weights()]
        history = guided.fit(x, y, sample_weight=masks, batch_size=2, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"]).all()
        np.testing.assert_allclose(history.history["alignment_loss"], [0.9], rtol=2e-2)
        assert not all(np.array_equal(a, b) for a, b in zip(before_weights, model.get_weights()))
    finally:
        keras.mixed_precision.set_global_policy(before)
    assert keras.mixed_precision.global_policy().name == before
