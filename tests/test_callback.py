"""GradCAMCallback with real parts: Keras fit, TensorBoard's own event loader and server.

Expected values come from the library's public pieces used independently (``explain`` +
``overlay``), from hand-made masks, or from training runs compared with each other.
"""

from __future__ import annotations

import doctest
import io
import json
import logging
import os
import subprocess
import sys
import urllib.parse
from pathlib import Path

import keras
import numpy as np
import PIL.Image
import pytest
import tensorflow as tf
from tbserver import get, tensorboard
from tensorboard.backend.event_processing import plugin_event_accumulator, plugin_event_multiplexer

import keras_gradcam
from keras_gradcam import datasets
from keras_gradcam.callback import GradCAMCallback
from keras_gradcam.callback import callback as callback_module
from keras_gradcam.callback.summaries import CORRECT, WRONG, empty_maps_note, tile
from keras_gradcam.core.validate import ClassIndexError
from keras_gradcam.explain import explain
from keras_gradcam.viz.overlay import overlay

ROOT = Path(__file__).resolve().parents[1]
SIZE = 16
N_PROBES = 4
PROBE_TAGS = {f"gradcam++/probe_{i:02d}" for i in range(N_PROBES)}


# -- helpers ------------------------------------------------------------------------------------
def tiny_model(size=SIZE, classes=3, name_prefix=""):
    inp = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name=name_prefix + "c1")(inp)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name=name_prefix + "c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(classes, name=name_prefix + "head")(x)
    model = keras.Model(inp, out)
    model.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


@pytest.fixture(scope="module")
def data():
    ds = datasets.make_shapes(n=24, image_size=SIZE, seed=3)
    probes = ds[datasets.make_probe_set(ds, per_class=1)]
    extra = ds[[0]]
    probe_images = np.concatenate([probes.images, extra.images])
    return {
        "x": ds.images,
        "y": ds.labels,
        "probes": probe_images,
        "labels": np.concatenate([probes.labels, extra.labels]),
        "masks": np.concatenate([probes.masks, extra.masks]),
        "names": ds.class_names,
    }


def load_run(run_dir) -> plugin_event_accumulator.EventAccumulator:
    acc = plugin_event_accumulator.EventAccumulator(
        str(run_dir), size_guidance={"tensors": 0}, tensor_size_guidance={"images": 0, "scalars": 0, "text": 0}
    )
    acc.Reload()
    return acc


def decode(event) -> np.ndarray:
    width, height, data = tf.make_ndarray(event.tensor_proto)
    image = tf.io.decode_image(data, channels=3).numpy()
    assert image.shape[:2] == (int(height), int(width))
    return image


def fit(model, data, cb, epochs=2, callbacks_before=(), **kwargs):
    callbacks = list(callbacks_before) + ([cb] if cb else [])
    return model.fit(data["x"], data["y"], epochs=epochs, batch_size=8, verbose=0, callbacks=callbacks, **kwargs)


def run_hooks(cb, model, epochs, initial_epoch=0, after_epoch=None):
    """What ``model.fit(epochs=epochs, initial_epoch=initial_epoch)`` calls on the callback, without training.

    ``after_epoch(epoch)`` runs after each ``on_epoch_end``, like a callback listed after ``cb``.
    """
    cb.set_model(model)
    cb.set_params({"epochs": epochs, "verbose": 0})
    cb.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        cb.on_epoch_end(epoch)
        if after_epoch is not None:
            after_epoch(epoch)
    cb.on_train_end()


def test_tile_layout():
    tiles = np.stack([np.full((2, 3, 3), i, np.uint8) for i in range(5)])
    grid = tile(tiles, gap=1)
    assert grid.shape == (2 * 2 + 1, 3 * 3 + 2, 3)  # 3 columns, 2 rows
    assert grid[0, 0, 0] == 0 and grid[0, 4, 0] == 1 and grid[3, 0, 0] == 3 and grid[3, 4, 0] == 4
    assert grid[2, 0, 0] == 255 and grid[3, 8, 0] == 255  # gap line and empty slot


# -- construction-time errors ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"probe_images": np.zeros((SIZE, SIZE))}, ValueError, r"\(n_probes, height, width, channels\).*batch axis"),
        ({"probe_images": np.zeros((1, 2, SIZE, SIZE, 3))}, ValueError, "got shape"),
        ({"probe_images": {"a": np.zeros((1, SIZE, SIZE, 3))}}, TypeError, "Multi-input models are not supported"),
        ({"probe_images": np.full((2, SIZE, SIZE, 3), np.nan)}, ValueError, "NaN"),
        ({"probe_images": np.zeros((2, SIZE, SIZE, 5))}, ValueError, "pass display_images="),
        ({"targets": "label"}, ValueError, "needs probe_labels"),
        ({"targets": "top1"}, ValueError, '"predicted", "label", an int or one int per probe'),
        ({"targets": 1.5}, TypeError, '"predicted", "label", an int or one int per probe'),
        ({"targets": True}, TypeError, "one int per probe"),
        ({"targets": -1}, ValueError, ">= 0"),
        ({"targets": [0, 1]}, ValueError, "2 entries but there are 3 probes"),
        ({"every_n_epochs": 0}, ValueError, "every_n_epochs must be an int >= 1"),
        ({"every_n_epochs": 1.5}, ValueError, "every_n_epochs must be an int >= 1"),
        ({"probe_masks": np.zeros((3, 8, 8), bool)}, ValueError, r"probe_masks must have shape \(3, 16, 16\).*got \(3, 8, 8\)"),
        ({"probe_masks": np.zeros((2, SIZE, SIZE), bool)}, ValueError, r"probe_masks must have shape \(3, 16, 16\)"),
        ({"probe_labels": [0, 1]}, ValueError, "probe_labels must hold the true classes: 3 ints"),
        ({"probe_labels": [0, -1, 2]}, ValueError, "class indices >= 0"),
        ({"log_dir": 5}, TypeError, "log_dir must be a str or os.PathLike"),
        ({"run_name": ""}, ValueError, "run_name must be a non-empty str"),
        ({"method": "gradcam+++"}, ValueError, "unknown method 'gradcam\\+\\+\\+'; choose one of"),
        ({"colormap": "jett"}, ValueError, "unknown colormap 'jett'"),
        ({"alpha": -0.1}, ValueError, r"alpha must be a number in \[0, 1\]"),
        ({"image_format": "gif"}, ValueError, "image_format must be one of"),
        ({"warn_below": 2}, ValueError, "warn_below must be a share in"),
        ({"on_error": "ignore"}, ValueError, "on_error must be 'raise'"),
        ({"class_names": "abc"}, TypeError, "class_names must be a sequence of str"),
        ({"display_images": np.zeros((2, SIZE, SIZE, 3))}, ValueError, "display_images must be 3 images"),
        ({"method_options": [1]}, TypeError, "method_options must be a dict"),
    ],
)
def test_bad_arguments_fail_at_construction(tmp_path, kwargs, error, match):
    args = {"probe_images": np.zeros((3, SIZE, SIZE, 3), np.float32), "log_dir": str(tmp_path)}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        GradCAMCallback(**args)
    assert not (tmp_path / "gradcam").exists()


def test_good_arguments_accepted(tmp_path):
    probes = np.zeros((3, SIZE, SIZE, 3), np.float32)
    one_hot = np.eye(3)[[2, 0, 1]]
    masks = np.ones((3, SIZE, SIZE, 1))
    cb = GradCAMCallback(probes, tmp_path, probe_labels=one_hot, targets="label", probe_masks=masks)
    np.testing.assert_array_equal(cb._target_arg, [2, 0, 1])
    assert cb.run_dir == os.path.join(str(tmp_path), "gradcam")
    GradCAMCallback(probes, str(tmp_path), targets=[0, 1, 2], method="GradCAM", probe_labels=[1, 1, 1])
    GradCAMCallback(tf.constant(probes[..., 0]), tmp_path, targets=np.int64(2))  # grayscale, tensor


def test_get_config_plain_values(tmp_path):
    cb = GradCAMCallback(np.zeros((3, SIZE, SIZE, 3)), tmp_path / "logs", method="xgradcam", layer="c2",
                         targets=np.array([0, 2, 1]), every_n_epochs=3, class_names=["a", "b", "c"])
    config = cb.get_config()
    assert config["log_dir"] == str(tmp_path / "logs")
    assert config["method"] == "xgradcam" and config["layer"] == "c2" and config["targets"] == [0, 2, 1]
    assert config["every_n_epochs"] == 3 and config["run_name"] == "gradcam"
    assert config["class_names"] == ["a", "b", "c"]
    json.dumps(config)  # plain values only, no arrays
    assert not any(isinstance(v, np.ndarray) for v in config.values())
    rebuilt = GradCAMCallback(np.zeros((3, SIZE, SIZE, 3)), **config)
    assert rebuilt.get_config() == config


@pytest.mark.parametrize(
    "kwargs, data",
    [
        ({"targets": [0, 2, 1], "layer": "c2", "method": "xgradcam", "every_n_epochs": 3}, {}),
        ({"targets": "label", "class_names": ["a", "b", "c"], "grid": True, "image_format": "png"},
         {"probe_labels": [0, 1, 2], "probe_masks": np.ones((3, SIZE, SIZE), bool)}),
        ({"targets": keras_gradcam.ClassTarget(2), "warn_below": 0.25, "pointing_tolerance": 3}, {}),
        ({"targets": keras_gradcam.OutputTarget(reduce="mean"), "on_error": "warn", "batch_size": 2,
          "method_options": {"counterfactual": True}, "method": "gradcam"}, {}),
        ({"targets": np.int64(1), "alpha": 0.7, "colormap": "inferno", "run_name": "other"},
         {"display_images": np.zeros((3, SIZE, SIZE, 3), np.uint8)}),
    ],
)
def test_from_config_round_trips(tmp_path, kwargs, data):
    """get_config is JSON; from_config(config, <the probe data>) rebuilds a callback with the same config."""
    probes = np.zeros((3, SIZE, SIZE, 3), np.float32)
    cb = GradCAMCallback(probes, tmp_path, **data, **kwargs)
    config = cb.get_config()
    rebuilt = GradCAMCallback.from_config(json.loads(json.dumps(config)), probe_images=probes, **data)
    assert rebuilt.get_config() == config
    assert rebuilt.targets == (int(cb.targets) if isinstance(cb.targets, np.integer) else cb.targets)  # objects too


def test_from_config_asks_for_what_a_config_cannot_hold(tmp_path):
    probes = np.zeros((3, SIZE, SIZE, 3), np.float32)

    def score(outputs):
        return outputs[:, 1]

    config = GradCAMCallback(probes, tmp_path, targets=score).get_config()
    assert config["targets"] is None  # a callable is code, not configuration
    with pytest.raises(TypeError, match="from_config needs the probe data"):
        GradCAMCallback.from_config(config)
    with pytest.raises(ValueError, match="targets were a callable.*targets=<the callable>"):
        GradCAMCallback.from_config(config, probe_images=probes)
    rebuilt = GradCAMCallback.from_config(config, probe_images=probes, targets=score)
    assert rebuilt.targets is score and rebuilt.get_config() == config
    with pytest.raises(ValueError, match="needs probe_labels"):  # the labels are data too
        GradCAMCallback.from_config(GradCAMCallback(probes, tmp_path, probe_labels=[0, 1, 2], targets="label")
                                    .get_config(), probe_images=probes)


def test_out_of_range_classes_are_class_index_errors(tmp_path, data):
    """Both an IndexError (as the explainers raise) and a ValueError (as the callback always did)."""
    for kwargs in ({"targets": -1}, {"targets": [0, -2, 1, 0]}, {"probe_labels": [0, -1, 2, 1]}):
        with pytest.raises(ClassIndexError):
            GradCAMCallback(data["probes"], tmp_path, **kwargs)
    cb = GradCAMCallback(data["probes"], tmp_path, targets=7)
    with pytest.raises(IndexError, match="targets include class 7"):
        cb.set_model(tiny_model())
    with pytest.raises(ClassIndexError, match="class_names names 3 classes"):
        GradCAMCallback(data["probes"], tmp_path, probe_labels=[0, 1, 5, 2], class_names=data["names"])


@pytest.mark.parametrize("make_target", [lambda: keras_gradcam.ClassTarget(2), lambda: (lambda out: out[:, 1] - out[:, 0])])
def test_target_objects_and_callables_reach_the_explainer(tmp_path, data, make_target):
    """As in explain(): the logged overlay is overlay(probes, explain(..., targets=<the same target>))."""
    target = make_target()
    model = tiny_model()
    cb = GradCAMCallback(data["probes"], tmp_path, targets=target, image_format="png", probe_labels=data["labels"])
    run_hooks(cb, model, epochs=1)
    exp = explain(model, data["probes"], method="gradcam++", targets=target)
    expected = overlay(data["probes"], exp.heatmaps)
    acc = load_run(tmp_path / "gradcam")
    for i in range(N_PROBES):
        np.testing.assert_array_equal(decode(acc.Tensors(f"gradcam++/probe_{i:02d}")[0])[:SIZE], expected[i])
    caption = tf.make_ndarray(acc.Tensors("gradcam++/captions")[0].tensor_proto).item().decode()
    explained = [line.split("|")[4].strip() for line in caption.splitlines() if line.startswith("| 0")]
    assert explained == ["-"] * N_PROBES  # a callable names no class
    description = acc.SummaryMetadata("gradcam++/probe_00").summary_description
    assert "heatmap of the target `" in description
    if isinstance(target, keras_gradcam.ClassTarget):
        assert "ClassTarget(index=2, output=None)" in description
    with pytest.raises(TypeError, match="a target object"):
        GradCAMCallback(data["probes"], tmp_path, targets=1.5)


# -- failures before or during training ---------------------------------------------------------
def test_probe_shape_mismatch_fails_before_training(tmp_path, data):
    model = tiny_model()
    before = [w.copy() for w in model.get_weights()]
    cb = GradCAMCallback(np.zeros((2, 20, 20, 3), np.float32), tmp_path)
    expected = r"probe_images have shape \(2, 20, 20, 3\) but the model takes inputs of shape \(None, 16, 16, 3\)"
    with pytest.raises(ValueError, match=expected):
        fit(model, data, cb)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # no step was taken


def test_target_out_of_range_fails_before_training(tmp_path, data):
    cb = GradCAMCallback(data["probes"], tmp_path, targets=7)
    with pytest.raises(ValueError, match=r"targets include class 7 but the model has 3 classes \(0 .. 2\)"):
        fit(tiny_model(), data, cb)


def binary_model():
    """A one-unit sigmoid classifier, as Keras' binary tutorials build it."""
    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(1, activation="sigmoid", name="head")(x))
    model.compile(keras.optimizers.SGD(0.01), keras.losses.BinaryCrossentropy())
    return model


def test_binary_sigmoid_model_takes_0_1_labels_as_targets(tmp_path, data):
    """Labels 0/1 of a Dense(1, sigmoid) model are its two classes (0 = negative, logit -s)."""
    binary = {**data, "y": (data["y"] == 0).astype("float32")}
    labels = (data["labels"] == 0).astype(int)
    assert set(labels) == {0, 1}
    cb = GradCAMCallback(data["probes"], tmp_path, probe_labels=labels, targets="label")
    fit(binary_model(), binary, cb)
    acc = load_run(tmp_path / "gradcam")
    assert PROBE_TAGS <= set(acc.Tags()["tensors"])
    assert [e.step for e in acc.Tensors("gradcam++/probe_00")] == [0, 1]
    cb = GradCAMCallback(data["probes"], tmp_path / "bad", targets=2)
    with pytest.raises(ValueError, match=r"targets include class 2 but the model has 2 classes \(0 .. 1\)"):
        fit(binary_model(), binary, cb)


def test_unknown_layer_fails_before_training(tmp_path, data):
    cb = GradCAMCallback(data["probes"], tmp_path, layer="no_such_layer")
    with pytest.raises(ValueError, match="no_such_layer"):
        fit(tiny_model(), data, cb)


def test_unwritable_log_dir_fails_before_training(tmp_path, data):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    cb = GradCAMCallback(data["probes"], blocker / "logs")
    with pytest.raises(OSError, match="cannot create its run folder .*Pass a writable log_dir"):
        fit(tiny_model(), data, cb)


def test_failure_inside_callback_is_reported(tmp_path, data, monkeypatch, caplog):
    def broken(self):
        raise tf.errors.ResourceExhaustedError(None, None, "out of memory (simulated)")

    monkeypatch.setattr(GradCAMCallback, "_explain", broken)
    cb = GradCAMCallback(data["probes"], tmp_path)
    expected = r"GradCAMCallback failed at epoch 0 .*ResourceExhaustedError.*on_error='warn'"
    with pytest.raises(RuntimeError, match=expected) as info:
        fit(tiny_model(), data, cb)
    # chained to the original error (Keras' traceback filter drops __cause__, the context stays)
    assert isinstance(info.value.__cause__ or info.value.__context__, tf.errors.ResourceExhaustedError)

    cb = GradCAMCallback(data["probes"], tmp_path / "warn", on_error="warn")
    with caplog.at_level(logging.ERROR, logger="keras_gradcam"):
        history = fit(tiny_model(), data, cb, epochs=3)
    assert len(history.history["loss"]) == 3  # training went on
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "switched off for the rest of this fit" in errors[0].getMessage()


# -- what is written --------------------------------------------------------------------------
def test_event_files_exact_tags_steps_and_images(tmp_path, data):
    log_dir = tmp_path / "exp1"
    model = tiny_model()
    cb = GradCAMCallback(data["probes"], log_dir, probe_labels=data["labels"], probe_masks=data["masks"],
                         class_names=data["names"], every_n_epochs=2, grid=True)
    model.fit(data["x"], data["y"], epochs=5, batch_size=8, verbose=0,
              callbacks=[keras.callbacks.TensorBoard(str(log_dir)), cb])

    mux = plugin_event_multiplexer.EventMultiplexer(tensor_size_guidance={"images": 0, "scalars": 0, "text": 0})
    mux.AddRunsFromDirectory(str(log_dir))
    mux.Reload()
    assert set(mux.Runs()) == {"train", "gradcam"}  # beside Keras' run, in the same TensorBoard
    tags = set(mux.Runs()["gradcam"]["tensors"])
    expected = PROBE_TAGS | {"gradcam++/grid", "gradcam++/captions", "bias/energy_inside_object", "bias/pointing_game"}
    assert tags == expected
    assert set(mux.PluginRunToTagToContent("images")) == {"gradcam"}
    assert set(mux.PluginRunToTagToContent("images")["gradcam"]) == PROBE_TAGS | {"gradcam++/grid"}
    assert set(mux.PluginRunToTagToContent("scalars")["gradcam"]) == {"bias/energy_inside_object", "bias/pointing_game"}
    assert "epoch_loss" in mux.PluginRunToTagToContent("scalars")["train"]

    logged = [0, 2, 4]  # every 2nd epoch (0-based, Keras' TensorBoard steps) and the last one
    for tag in expected:
        events = mux.Tensors("gradcam", tag)
        assert [e.step for e in events] == logged, tag  # one per logged epoch, step = epoch
    assert cb.history["epoch"] == logged

    strip = max(2, SIZE // 16)
    for tag in PROBE_TAGS:
        image = decode(mux.Tensors("gradcam", tag)[-1])
        assert image.shape == (SIZE + strip, SIZE, 3)
    grid = decode(mux.Tensors("gradcam", "gradcam++/grid")[-1])
    assert grid.shape == (2 * (SIZE + strip) + 2, 2 * SIZE + 2, 3)

    for name in ("energy_inside_object", "pointing_game"):
        values = [float(tf.make_ndarray(e.tensor_proto)) for e in mux.Tensors("gradcam", f"bias/{name}")]
        np.testing.assert_allclose(values, cb.history[name], rtol=1e-6)
        assert all(0.0 <= v <= 1.0 for v in values)

    desc = mux.SummaryMetadata("gradcam", "gradcam++/probe_01").summary_description
    true_name = data["names"][data["labels"][1]]
    assert f"**Probe 01**, true class **{true_name}**" in desc and "Grad-CAM++" in desc and "`c2`" in desc
    caption = tf.make_ndarray(mux.Tensors("gradcam", "gradcam++/captions")[-1].tensor_proto).item().decode()
    assert caption.startswith("**Epoch 5** (step 4), Grad-CAM++ at layer `c2`")
    assert "| probe | true | predicted | explained | score | inside object | pointing hit |" in caption
    assert caption.count("\n| 0") == N_PROBES
    scalar_desc = mux.SummaryMetadata("gradcam", "bias/energy_inside_object").summary_description
    assert f"scores {data['masks'].mean():.0%}" in scalar_desc


def test_overlay_pixels_are_kg_overlay_of_explain(tmp_path, data):
    """PNG is lossless: the logged image is exactly overlay(probes, explain(...).heatmaps)."""
    model = tiny_model()
    cb = GradCAMCallback(data["probes"], tmp_path, image_format="png", alpha=0.5, colormap="inferno",
                         targets=[0, 1, 2, 0], grid=True)
    fit(model, data, cb, epochs=1)
    exp = explain(model, data["probes"], method="gradcam++", targets=[0, 1, 2, 0])
    expected = overlay(data["probes"], exp.heatmaps, alpha=0.5, colormap="inferno")
    acc = load_run(tmp_path / "gradcam")
    for i in range(N_PROBES):
        got = decode(acc.Tensors(f"gradcam++/probe_{i:02d}")[0])
        assert got.shape == (SIZE, SIZE, 3)  # no labels: no strip
        np.testing.assert_array_equal(got, expected[i])
    np.testing.assert_array_equal(decode(acc.Tensors("gradcam++/grid")[0]), tile(expected))
    # with PNG the events are what tf.summary.image itself writes for the same uint8 overlay
    writer = tf.summary.create_file_writer(str(tmp_path / "reference"))
    with writer.as_default(step=0):
        tf.summary.image("gradcam++/probe_00", expected[:1])
    writer.close()
    ref = load_run(tmp_path / "reference")
    ours = acc.Tensors("gradcam++/probe_00")[0].tensor_proto
    assert tf.make_ndarray(ref.Tensors("gradcam++/probe_00")[0].tensor_proto).tolist() == tf.make_ndarray(ours).tolist()
    assert ref.SummaryMetadata("gradcam++/probe_00").plugin_data == acc.SummaryMetadata("gradcam++/probe_00").plugin_data
    assert "bias/energy_inside_object" not in acc.Tags()["tensors"]  # no masks: no bias scalars
    caption = tf.make_ndarray(acc.Tensors("gradcam++/captions")[0].tensor_proto).item().decode()
    explained = [line.split("|")[4].strip() for line in caption.splitlines() if line.startswith("| 0")]
    assert explained == ["0", "1", "2", "0"]


def test_strip_marks_right_and_wrong_predictions(tmp_path, data):
    model = tiny_model()
    cb = GradCAMCallback(data["probes"], tmp_path, probe_labels=data["labels"], image_format="png")
    fit(model, data, cb, epochs=1)
    predictions = explain(model, data["probes"]).predictions
    acc = load_run(tmp_path / "gradcam")
    assert "gradcam++/grid" not in acc.Tags()["tensors"]  # off by default
    for i in range(N_PROBES):
        strip = decode(acc.Tensors(f"gradcam++/probe_{i:02d}")[0])[SIZE:]
        colour = CORRECT if predictions[i] == data["labels"][i] else WRONG
        assert (strip == colour).all()


def test_warning_when_evidence_lies_outside_objects(tmp_path, data, caplog):
    masks = np.zeros_like(data["masks"])
    masks[:, :2, :2] = True  # a tiny "object" in the corner: nearly all evidence lies outside
    cb = GradCAMCallback(data["probes"], tmp_path, probe_masks=masks, method="gradcam", warn_below=0.9)
    with caplog.at_level(logging.WARNING, logger="keras_gradcam"):
        run_hooks(cb, tiny_model(), epochs=3)
    warnings = [r.getMessage() for r in caplog.records if r.name == "keras_gradcam"]
    assert len(warnings) == 2  # when it falls below (epoch 1), and at the end of fit (epoch 3)
    share = cb.history["energy_inside_object"][2]
    expected = f"Only {100 * share:.0f}% of the Grad-CAM evidence lies inside the objects at epoch 3 "
    assert warnings[1].startswith(expected)
    assert "at epoch 1 " in warnings[0] and "the objects cover 2% of the probe images" in warnings[0]
    assert "the model may be using a shortcut (background, watermark). Look at the probe overlays" in warnings[1]

    auto = GradCAMCallback(data["probes"], tmp_path, probe_masks=masks)
    assert auto.warn_threshold == pytest.approx(2 * 4 / SIZE**2)  # "auto": twice the objects' area share
    full = np.ones_like(masks)
    assert GradCAMCallback(data["probes"], tmp_path, probe_masks=full).warn_threshold == 0.5  # at most a half
    assert GradCAMCallback(data["probes"], tmp_path).warn_threshold is None  # no masks

    caplog.clear()
    cb = GradCAMCallback(data["probes"], tmp_path / "quiet", probe_masks=masks, warn_below=None)
    with caplog.at_level(logging.WARNING, logger="keras_gradcam"):
        run_hooks(cb, tiny_model(), epochs=1)
    assert not [r for r in caplog.records if r.name == "keras_gradcam"]


# -- training is not disturbed ------------------------------------------------------------------
def bn_dropout_model():
    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Dropout(0.3)(x)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="last")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.Dropout(0.2)(x))
    return keras.Model(inp, out)


def train_once(data, callback):
    keras.utils.set_random_seed(0)
    model = bn_dropout_model()
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    callbacks = [callback] if callback else []
    model.fit(data["x"], data["y"], epochs=3, batch_size=8, shuffle=False, verbose=0, callbacks=callbacks)
    return [v.numpy().copy() for v in model.weights], [v.numpy().copy() for v in model.optimizer.variables]


def test_bit_identical_weights_with_and_without_callback(tmp_path, data):
    weights_a, opt_a = train_once(data, None)
    cb = GradCAMCallback(data["probes"], tmp_path, probe_labels=data["labels"], probe_masks=data["masks"])
    weights_b, opt_b = train_once(data, cb)
    assert cb.history["epoch"] == [0, 1, 2]  # it did run every epoch
    assert len(weights_a) == len(weights_b) and len(opt_a) == len(opt_b)
    for a, b in zip(weights_a + opt_a, weights_b + opt_b):
        assert np.array_equal(a, b)  # BatchNorm statistics, optimizer state, everything
    assert not np.array_equal(weights_a[0], bn_dropout_model().get_weights()[0])  # training did change them


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def test_memory_flat_and_no_retracing_over_30_epochs(tmp_path, data):
    model = tiny_model()
    cb = GradCAMCallback(data["probes"], tmp_path, probe_labels=data["labels"], probe_masks=data["masks"])
    rows = []  # per epoch, after the callback: traced-function counts and RSS

    def record(epoch):
        traces = sum(fn.experimental_get_tracing_count() for fn in cb.explainer._fns.values())
        rows.append((epoch, traces, cb._writer.write_fn.experimental_get_tracing_count(), rss_kib()))

    run_hooks(cb, model, epochs=30, after_epoch=record)
    assert len(cb.history["epoch"]) == 30
    assert len(cb.explainer._fns) == 1
    assert {row[1] for row in rows} == {1} and {row[2] for row in rows} == {1}  # traced once, reused
    growth_mib = (rows[29][3] - rows[9][3]) / 1024
    assert growth_mib < 4.0, f"RSS grew by {growth_mib:.1f} MiB between epochs 10 and 30: {rows}"
    assert cb._writer is None  # closed at on_train_end


def test_reuse_across_fits_and_lazy_writers(tmp_path, data):
    model = tiny_model()
    cb = GradCAMCallback(data["probes"], tmp_path, every_n_epochs=1)
    assert cb._writer is None and not (tmp_path / "gradcam").exists()  # nothing at construction
    run_hooks(cb, model, epochs=2)
    explainer, fn = cb.explainer, next(iter(cb.explainer._fns.values()))
    assert cb._writer is None
    run_hooks(cb, model, epochs=4, initial_epoch=2)
    assert cb.explainer is explainer and fn.experimental_get_tracing_count() == 1  # no retracing
    assert cb.history["epoch"] == [2, 3]  # reset per fit
    acc = load_run(tmp_path / "gradcam")
    assert sorted(e.step for e in acc.Tensors("gradcam++/probe_00")) == [0, 1, 2, 3]  # two event files, any order
    assert len(list((tmp_path / "gradcam").glob("events.out.tfevents.*"))) == 2  # one writer per fit

    other = tiny_model(name_prefix="o_")
    run_hooks(cb, other, epochs=1)  # a new model gets a new explainer
    assert cb.explainer is not explainer and cb.explainer.layer == "o_c2"


def test_sequential_without_input_is_built_by_fit(tmp_path, data):
    model = keras.Sequential(
        [keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)]
    )
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    cb = GradCAMCallback(data["probes"], tmp_path, method="gradcam")
    fit(model, data, cb, epochs=1)
    expected = {t.replace("++", "") for t in PROBE_TAGS} | {"gradcam/captions"}
    assert set(load_run(tmp_path / "gradcam").Tags()["tensors"]) == expected


# -- distribution -------------------------------------------------------------------------------
def test_only_the_chief_writes(tmp_path, data, monkeypatch):
    monkeypatch.setattr(callback_module, "_is_chief", lambda model=None: False)
    cb = GradCAMCallback(data["probes"], tmp_path)
    fit(tiny_model(), data, cb, epochs=2)
    assert not (tmp_path / "gradcam").exists() and cb.history["epoch"] == []


def test_mirrored_strategy_single_device(tmp_path, data):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = tiny_model()
    cb = GradCAMCallback(data["probes"], tmp_path, probe_masks=data["masks"])
    fit(model, data, cb, epochs=2)
    assert callback_module._is_chief(model)
    assert cb.history["epoch"] == [0, 1]
    assert PROBE_TAGS <= set(load_run(tmp_path / "gradcam").Tags()["tensors"])


MIRRORED_SCRIPT = """
import sys, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from keras_gradcam.callback import GradCAMCallback
from tensorboard.backend.event_processing import plugin_event_accumulator
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert strategy.num_replicas_in_sync == 2
keras.utils.set_random_seed(0)
x = np.random.rand(16, 16, 16, 3).astype("float32"); y = np.arange(16) % 3
with strategy.scope():
    inp = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(4, 3, activation="relu", name="c")(inp)
    h = keras.layers.BatchNormalization()(h)
    model = keras.Model(inp, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(h)))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
masks = np.zeros((3, 16, 16), bool); masks[:, 4:12, 4:12] = True
cb = GradCAMCallback(x[:3], sys.argv[1], probe_masks=masks)
model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[cb])
acc = plugin_event_accumulator.EventAccumulator(sys.argv[1] + "/gradcam"); acc.Reload()
print(sorted(acc.Tags()["tensors"]), [e.step for e in acc.Tensors("gradcam++/probe_00")])
"""


@pytest.mark.slow
def test_mirrored_strategy_two_replicas(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, "-c", MIRRORED_SCRIPT, str(tmp_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "'gradcam++/probe_02'" in res.stdout and "'bias/energy_inside_object'" in res.stdout
    assert "[0, 1]" in res.stdout  # steps of the two epochs


# -- a real TensorBoard -------------------------------------------------------------------------
def test_real_tensorboard_serves_the_image_tags(tmp_path, data):
    log_dir = tmp_path / "exp"
    cb = GradCAMCallback(data["probes"], log_dir, probe_masks=data["masks"])
    model = tiny_model()
    callbacks = [keras.callbacks.TensorBoard(str(log_dir)), cb]
    model.fit(data["x"], data["y"], epochs=2, batch_size=8, verbose=0, callbacks=callbacks)

    with tensorboard(log_dir, ready=lambda tags: len(tags.get("gradcam", ())) == N_PROBES) as (base, tags, reason):
        if "gradcam" not in tags:
            pytest.skip(f"tensorboard did not serve the log dir on loopback: {reason}")
        assert set(tags) == {"gradcam"}
        assert set(tags["gradcam"]) == PROBE_TAGS
        assert "<strong>Probe 00</strong>" in tags["gradcam"]["gradcam++/probe_00"]["description"]  # markdown, rendered
        scalars = json.loads(get(base + "/data/plugin/scalars/tags")[0])
        assert {"bias/energy_inside_object", "bias/pointing_game"} == set(scalars["gradcam"])
        assert "epoch_loss" in scalars["train"]
        query = urllib.parse.urlencode({"run": "gradcam", "tag": "gradcam++/probe_00", "sample": 0})
        images = json.loads(get(base + "/data/plugin/images/images?" + query)[0])
        assert [im["step"] for im in images] == [0, 1]
        body, kind = get(base + "/data/plugin/images/individualImage?" + images[1]["query"])
        assert kind == "image/jpeg" and body[:2] == b"\xff\xd8"


# -- docs ---------------------------------------------------------------------------------------
def test_docstring_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(keras_gradcam, "GradCAMCallback", GradCAMCallback, raising=False)  # until exported
    monkeypatch.setattr(keras_gradcam, "overlay", overlay, raising=False)
    result = doctest.testmod(callback_module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
    assert (tmp_path / "runs" / "doc" / "gradcam").is_dir() and (tmp_path / "runs" / "doc" / "train").is_dir()


# -- the point of it all: dataset bias shows up in the scalar -----------------------------------
def _bias_model(size, classes=3):
    inp = keras.Input((size, size, 3))
    x = inp
    for filters in (16, 32):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="last_conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(classes, activation="softmax")(x))


def _train_and_log(ds, probes, log_dir):
    keras.utils.set_random_seed(0)
    model = _bias_model(ds.image_size)
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    cb = GradCAMCallback(probes.images, log_dir, probe_labels=probes.labels, probe_masks=probes.masks,
                         class_names=probes.class_names)
    history = model.fit(ds.images, ds.labels, epochs=10, batch_size=32, shuffle=False, verbose=0,
                        callbacks=[keras.callbacks.TensorBoard(str(log_dir)), cb])
    acc = load_run(Path(log_dir) / "gradcam")
    scalars = {name: [float(tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors(f"bias/{name}")]
               for name in ("energy_inside_object", "pointing_game")}
    return history.history["accuracy"], scalars, cb


@pytest.mark.slow
def test_bias_end_to_end_shortcut_shows_in_the_scalar(tmp_path, caplog):
    """A CNN trained where a corner patch gives the class away looks at the patch, not the shape.

    Same CNN, seed and schedule on the biased data (every image carries the class-coloured corner
    cue) and on its cue-free twin; the probes carry the cue in both runs, like a validation set
    drawn from the biased source. About 1 min on 2 CPU cores.
    """
    biased, clean = datasets.make_biased_pair(n=1500, image_size=32, spurious_rate=1.0, seed=0)
    probe_ds = datasets.make_shapes(n=60, image_size=32, spurious_rate=1.0, seed=123)
    probes = probe_ds[datasets.make_probe_set(probe_ds, per_class=4)]

    with caplog.at_level(logging.WARNING, logger="keras_gradcam"):
        acc_b, scal_b, cb_b = _train_and_log(biased, probes, tmp_path / "biased")
    warned_b = [r.getMessage() for r in caplog.records if r.name == "keras_gradcam"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="keras_gradcam"):
        acc_c, scal_c, cb_c = _train_and_log(clean, probes, tmp_path / "clean")
    warned_c = [r.getMessage() for r in caplog.records if r.name == "keras_gradcam"]

    assert acc_b[-1] > 0.95  # the shortcut is learnt at once
    assert acc_c[-1] > 0.45  # the shapes are learnt, more slowly (chance: 0.33)
    assert len(scal_b["energy_inside_object"]) == len(scal_c["energy_inside_object"]) == 10
    energy_b, energy_c = scal_b["energy_inside_object"][-1], scal_c["energy_inside_object"][-1]
    assert energy_b < 0.5 * energy_c, (scal_b, scal_c)
    assert np.mean(scal_b["energy_inside_object"][-3:]) < 0.5 * np.mean(scal_c["energy_inside_object"][-3:])
    assert scal_b["pointing_game"][-1] < scal_c["pointing_game"][-1]
    # the plain-language warning: for the biased model at its last epoch, not for the clean one
    assert any(m.startswith("Only ") and "at epoch 10 " in m for m in warned_b), warned_b
    assert not any("at epoch 10 " in m for m in warned_c), warned_c
    assert cb_b.warn_threshold == pytest.approx(min(0.5, 2 * probes.masks.mean()))


# -- probes and labels checked against the model (before any training step) ----------------------
def test_probe_labels_outside_the_model_classes_are_rejected(tmp_path, data):
    """A label the model cannot predict would make every caption and strip compare with nonsense."""
    labels = np.array([0, 1, 7, 2])
    cb = GradCAMCallback(data["probes"], tmp_path, probe_labels=labels)  # targets="predicted"
    model = tiny_model()
    before = [w.copy() for w in model.get_weights()]
    expected = r"probe_labels include class 7 but the model has 3 classes \(0 .. 2\) \(first at probe 2\)"
    with pytest.raises(ValueError, match=expected + r".*true class index"):
        cb.set_model(model)  # as soon as the model is known
    with pytest.raises(ValueError, match=expected):
        fit(model, data, cb)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # no step was taken
    assert not (tmp_path / "gradcam").exists()
    # targets="label" explains those labels: the message names probe_labels, not targets
    cb = GradCAMCallback(data["probes"], tmp_path, probe_labels=labels, targets="label")
    with pytest.raises(ValueError, match=expected):
        cb.set_model(model)
    # with class_names the number of classes is known at construction
    names_match = r"probe_labels include class 7 but class_names names 3 classes \(0 .. 2\) \(first at probe 2\)"
    with pytest.raises(ValueError, match=names_match):
        GradCAMCallback(data["probes"], tmp_path, probe_labels=labels, class_names=data["names"])
    with pytest.raises(ValueError, match=r"targets include class 3 but class_names names 3 classes \(0 .. 2\)"):
        GradCAMCallback(data["probes"], tmp_path, targets=3, class_names=data["names"])
    GradCAMCallback(data["probes"], tmp_path, probe_labels=[0, 1, 2, 2], class_names=data["names"]).set_model(model)


def gray_model(size=SIZE):
    inp = keras.Input((size, size, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)
    out = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inp, out)


@pytest.mark.parametrize(
    "probes, match",
    [
        (np.zeros((2, SIZE, SIZE, 3)),
         r"probe_images have shape \(2, 16, 16, 3\) but the model takes inputs of shape \(None, 16, 16, 1\)"
         r".*3 channels, the model 1.*mean\(axis=-1, keepdims=True\)"),
        (np.zeros((2, SIZE, SIZE)),
         r"probe_images have shape \(2, 16, 16\) .*\(None, 16, 16, 1\).*probe_images\[\.\.\., None\]"),
        (np.zeros((2, 20, 20, 1)),
         r"probe_images have shape \(2, 20, 20, 1\) .*are 20x20, the model takes 16x16.*resize"),
    ],
)
def test_probe_shape_checked_when_the_model_is_set(tmp_path, probes, match):
    with pytest.raises(ValueError, match=match):
        cb = GradCAMCallback(probes, tmp_path)
        cb.set_model(gray_model())


def test_probe_shape_of_a_model_built_by_fit_is_a_value_error(tmp_path, data, caplog):
    """A Sequential without Input is built by the first step: probes are checked before they are explained.

    The mismatch is the user's, so it is a ValueError naming both shapes, also with on_error="warn"
    (which is for failures while logging, not for probes that can never fit the model).
    """
    model = keras.Sequential(
        [keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)]
    )
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    gray = {**data, "x": data["x"][..., :1]}
    cb = GradCAMCallback(data["probes"], tmp_path, on_error="warn")  # RGB probes, 1-channel training data
    expected = r"probe_images have shape \(4, 16, 16, 3\) but the model takes inputs of shape \(None, 16, 16, 1\)"
    with pytest.raises(ValueError, match=expected) as info:
        fit(model, gray, cb, epochs=2)
    assert "in user code" not in str(info.value)
    assert not list((tmp_path / "gradcam").glob("events.out.tfevents.*"))  # nothing written


# -- training that diverged: no false shortcut alarm ---------------------------------------------
def overflow_model():
    """Hand-set weights: score = 1e30 * 27 * mean(pixel), finite for pixels of 1, inf for pixels of 1e9.

    Conv2D(1, 3x3, all-ones kernel, 'same', ReLU) on a constant 3-channel image of value v gives
    27 v in the interior; the head multiplies the average by 1e30. float32 overflows above 3.4e38.
    """
    inp = keras.Input((4, 4, 3))
    x = keras.layers.Conv2D(1, 3, padding="same", activation="relu", name="c")(inp)
    out = keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, out)
    model.get_layer("c").set_weights([np.ones((3, 3, 3, 1), np.float32), np.zeros(1, np.float32)])
    model.get_layer("head").set_weights([np.array([[1e30, -1e30]], np.float32), np.zeros(2, np.float32)])
    return model


def test_non_finite_outputs_are_reported_not_taken_for_a_shortcut(tmp_path, data, caplog):
    model = tiny_model()
    model.set_weights([np.full_like(w, np.nan) for w in model.get_weights()])  # what a NaN loss leaves behind
    weights = model.get_weights()
    cb = GradCAMCallback(data["probes"], tmp_path, probe_labels=data["labels"], probe_masks=data["masks"],
                         warn_below=0.9)
    with caplog.at_level(logging.WARNING, logger="keras_gradcam"):
        cb.set_model(model)
        cb.on_train_begin()
        cb.on_epoch_end(0)
        cb.on_train_end()
    messages = [r.getMessage() for r in caplog.records if r.name == "keras_gradcam"]
    assert not any("shortcut" in m for m in messages), messages  # no bias alarm on a broken model
    assert len(messages) == 1
    assert "at epoch 1 (TensorBoard step 0)" in messages[0] and f"{N_PROBES} of {N_PROBES} probes" in messages[0]
    assert "NaN or inf" in messages[0] and "diverged" in messages[0]
    acc = load_run(tmp_path / "gradcam")
    tags = set(acc.Tags()["tensors"])
    assert PROBE_TAGS <= tags and "gradcam++/captions" in tags
    assert not {"bias/energy_inside_object", "bias/pointing_game"} & tags  # skipped for that epoch
    notes = acc.Tensors("gradcam++/warnings")
    assert [e.step for e in notes] == [0]
    note = tf.make_ndarray(notes[0].tensor_proto).item().decode()
    assert f"{N_PROBES} of {N_PROBES} probes" in note and "not finite" in note
    caption = tf.make_ndarray(acc.Tensors("gradcam++/captions")[0].tensor_proto).item().decode()
    assert "not finite" in caption
    assert cb.history["epoch"] == [0]
    assert np.isnan(cb.history["energy_inside_object"]).all() and np.isnan(cb.history["pointing_game"]).all()
    assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(weights, model.get_weights()))


def diverged_model(logit=6.7e11):
    """What a run diverged with finite outputs leaves (SGD at lr 1e12 on the shapes): huge logits and no
    evidence. Hand-set: the last conv's bias of -1e6 switches every ReLU of ``c2`` off, so the explained
    layer is all zero and every map is empty, and the head's bias makes the logits (logit, 0, -logit)."""
    model = tiny_model()
    weights = model.get_weights()  # c1 kernel, c1 bias, c2 kernel, c2 bias, head kernel, head bias
    weights[3] = np.full_like(weights[3], -1e6)
    weights[5] = np.array([logit, 0.0, -logit], np.float32)
    model.set_weights(weights)
    return model


def test_all_empty_maps_of_a_diverged_run_are_reported_not_taken_for_a_shortcut(tmp_path, data, caplog):
    model = diverged_model()
    cb = GradCAMCallback(data["probes"], tmp_path, probe_labels=data["labels"], probe_masks=data["masks"],
                         warn_below=0.9)
    with caplog.at_level(logging.WARNING, logger="keras_gradcam"):
        cb.set_model(model)
        cb.on_train_begin()
        cb.on_epoch_end(0)
        cb.on_epoch_end(1)
        cb.on_train_end()
    messages = [r.getMessage() for r in caplog.records if r.name == "keras_gradcam"]
    assert not any("shortcut" in m or m.startswith("Only ") for m in messages), messages
    assert len(messages) == 2, messages  # one per logged epoch
    first = messages[0]
    assert "Every Grad-CAM++ heatmap is empty" in first and f"the {N_PROBES} probes at epoch 1 (TensorBoard step 0)" in first
    assert "no evidence anywhere, inside or outside the objects" in first
    assert "6.7e+11 in magnitude" in first and "diverged" in first and "lower the learning rate" in first
    acc = load_run(tmp_path / "gradcam")
    tags = set(acc.Tags()["tensors"])
    assert PROBE_TAGS <= tags and "gradcam++/captions" in tags
    assert not {"bias/energy_inside_object", "bias/pointing_game"} & tags  # no energy scalar, no pointing game
    notes = acc.Tensors("gradcam++/warnings")
    assert [e.step for e in notes] == [0, 1]
    note = tf.make_ndarray(notes[0].tensor_proto).item().decode()
    assert "heatmap is empty" in note and "6.7e+11" in note
    caption = tf.make_ndarray(acc.Tensors("gradcam++/captions")[0].tensor_proto).item().decode()
    assert "heatmap is empty" in caption and "| 0% |" not in caption and "| no |" not in caption
    assert cb.history["epoch"] == [0, 1]
    assert np.isnan(cb.history["energy_inside_object"]).all() and np.isnan(cb.history["pointing_game"]).all()


def test_all_empty_maps_with_small_scores_do_not_blame_the_learning_rate():
    note = empty_maps_note(2, 4, "Grad-CAM", 3.5)
    assert "Every Grad-CAM heatmap is empty" in note and "at epoch 3 (TensorBoard step 2)" in note
    assert "3.5 in magnitude" in note and "learning rate" not in note and "no positive evidence" in note


def test_one_non_finite_probe_is_counted(tmp_path, caplog):
    probes = np.stack([np.ones((4, 4, 3)), np.full((4, 4, 3), 1e9)]).astype(np.float32)
    masks = np.ones((2, 4, 4), bool)
    cb = GradCAMCallback(probes, tmp_path, probe_masks=masks, method="gradcam", targets=0,
                         display_images=np.zeros((2, 4, 4, 3)))
    model = overflow_model()
    with caplog.at_level(logging.WARNING, logger="keras_gradcam"):
        cb.set_model(model)
        cb.on_train_begin()
        cb.on_epoch_end(4)
        cb.on_train_end()
    messages = [r.getMessage() for r in caplog.records if r.name == "keras_gradcam"]
    assert len(messages) == 1 and "1 of 2 probes" in messages[0] and "at epoch 5 " in messages[0]
    acc = load_run(tmp_path / "gradcam")
    assert [e.step for e in acc.Tensors("gradcam/warnings")] == [4]
    assert "bias/energy_inside_object" not in acc.Tags()["tensors"]


# -- the last epoch of a fit stopped early ---------------------------------------------------------
class _StopAfter(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            self.model.stop_training = True


def test_last_epoch_logged_when_another_callback_stops_training(tmp_path, data):
    cb = GradCAMCallback(data["probes"], tmp_path, probe_masks=data["masks"], every_n_epochs=3)
    history = fit(tiny_model(), data, cb, epochs=3, callbacks_before=[_StopAfter(1)])
    assert len(history.history["loss"]) == 2  # epochs 0 and 1 ran
    acc = load_run(tmp_path / "gradcam")
    for tag in PROBE_TAGS | {"gradcam++/captions", "bias/energy_inside_object", "bias/pointing_game"}:
        assert [e.step for e in acc.Tensors(tag)] == [0, 1], tag  # epoch 0 (due) and 1 (where it ended)
    assert cb.history["epoch"] == [0, 1]
    caption = tf.make_ndarray(acc.Tensors("gradcam++/captions")[-1].tensor_proto).item().decode()
    assert caption.startswith("**Epoch 2** (step 1)")
    assert cb._writer is None  # closed after the final log

    # already logged (every epoch due): logged once, not twice
    cb = GradCAMCallback(data["probes"], tmp_path / "every", every_n_epochs=1)
    fit(tiny_model(), data, cb, epochs=3, callbacks_before=[_StopAfter(1)])
    assert [e.step for e in load_run(tmp_path / "every" / "gradcam").Tensors("gradcam++/probe_00")] == [0, 1]


# -- the records are TensorBoard's own --------------------------------------------------------------
def test_records_are_those_tensorboard_reads(tmp_path, data):
    """Each record carries the plugin name TensorBoard's dashboard reads ("images", "scalars",
    "text"), and a JPEG card the image plugin's layout: the strings [width, height, encoded image]."""
    cb = GradCAMCallback(data["probes"], tmp_path, probe_masks=data["masks"])  # JPEG, default tolerance
    cb.set_model(tiny_model())
    cb.on_train_begin()
    cb.on_epoch_end(0)
    cb.on_train_end()
    acc = load_run(tmp_path / "gradcam")
    plugins = {"gradcam++/probe_00": "images", "bias/pointing_game": "scalars", "gradcam++/captions": "text"}
    assert {tag: acc.SummaryMetadata(tag).plugin_data.plugin_name for tag in plugins} == plugins
    width, height, jpeg = tf.make_ndarray(acc.Tensors("gradcam++/probe_00")[0].tensor_proto)
    assert (width, height) == (str(SIZE).encode(), str(SIZE).encode())
    with PIL.Image.open(io.BytesIO(jpeg)) as card:  # decoded by another library than the writer's
        assert (card.format, card.mode, card.size) == ("JPEG", "RGB", (SIZE, SIZE))
    assert acc.SummaryMetadata("gradcam++/probe_00").summary_description.startswith("**Probe 00**")
    # the scalar says which pointing-game tolerance it uses: 15 px at 224 px scaled to 16 px probes
    assert "tolerance 1.07 px" in acc.SummaryMetadata("bias/pointing_game").summary_description


def test_default_pointing_tolerance_is_the_metrics_one_scaled_to_the_probes(tmp_path, data):
    """Masks of one pixel next to each map's maximum (d^2 = 1): a hit with the default tolerance at
    16 px (15 * 16 / 224 = 1.07 px, so d^2 < 1.148), a miss with pointing_tolerance=0."""
    keras.utils.set_random_seed(0)
    model = tiny_model()
    probes = data["probes"]
    h = explain(model, probes, method="gradcam", targets=0).heatmaps
    assert (h.reshape(len(h), -1).max(1) > 0).all()  # every map points somewhere
    masks = np.zeros(h.shape, bool)
    for i, (py, px) in enumerate(zip(*np.unravel_index(h.reshape(len(h), -1).argmax(1), h.shape[1:]))):
        masks[i, py, px + 1 if px < SIZE - 1 else px - 1] = True
    rates = {}
    for name, tolerance, shown in (("default", None, "1.07"), ("zero", 0, "0")):
        cb = GradCAMCallback(probes, tmp_path, run_name=name, method="gradcam", targets=0, probe_masks=masks,
                             pointing_tolerance=tolerance, warn_below=None)
        cb.set_model(model)
        cb.on_train_begin()
        cb.on_epoch_end(0)
        cb.on_train_end()
        acc = load_run(tmp_path / name)
        rates[name] = float(tf.make_ndarray(acc.Tensors("bias/pointing_game")[0].tensor_proto))
        assert f"tolerance {shown} px" in acc.SummaryMetadata("bias/pointing_game").summary_description
        assert cb.get_config()["pointing_tolerance"] == tolerance
        assert GradCAMCallback.from_config(cb.get_config(), probe_images=probes).pointing_tolerance == tolerance
    assert rates == {"default": 1.0, "zero": 0.0}
