"""Defects a new user hit in the core explainers: threads, compiled-function growth, inputs a user
reaches for first, maps that were silently wrong or silently empty, and errors that used to reach
the user as TensorFlow traces. Each test failed on the code before its fix."""

import gc
import os
import subprocess
import sys
import textwrap
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from models import conv_gap_model
from oracles import close, minmax, relu

import keras_gradcam as kg
from keras_gradcam.core.engine import FUNCTIONS_KEPT

RNG = np.random.default_rng(7)
X = RNG.uniform(size=(4, 8, 8, 3)).astype(np.float32)
W_HEAD = np.array([[1.0, -0.5, 0.2], [0.3, 0.8, -1.0], [-0.4, 0.1, 0.9], [0.6, -0.2, 0.5]])


def build(activation="softmax", scale=1.0, seed=3):
    """conv (4 channels, ReLU) -> GAP -> Dense(3) with hand-set head weights, times ``scale``."""
    kernel = np.random.default_rng(seed).normal(size=(3, 3, 3, 4))
    return conv_gap_model(kernel, np.full(4, 0.1), W_HEAD * scale, np.array([0.1, -0.1, 0.0]) * scale,
                          input_shape=(8, 8, 3), conv_activation="relu", activation=activation, gap_name="gap")


def conv_acts(model, x):
    sub = keras.Model(model.inputs, model.get_layer("conv").output)
    return np.asarray(sub(x), np.float64)


def patched(model):
    """Layers that still carry an instance attribute set by the capture."""
    return [layer.name for layer in model.layers if "call" in vars(layer)]


# --- threads ---------------------------------------------------------------------------------------
def test_concurrent_first_calls_of_one_cold_explainer_agree_and_leave_the_model_as_it_was():
    model = build()
    activation = model.get_layer("head").activation
    expected = kg.GradCAM(build(), layer="conv")(X).heatmaps
    cam = kg.GradCAM(model, layer="conv")  # cold: nothing traced yet
    barrier = threading.Barrier(4)

    def work(_):
        barrier.wait()
        return cam(X).heatmaps

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(work, range(8)))
    for r in results:
        close(r, expected, atol=1e-6)
    assert patched(model) == [] and model.get_layer("head").activation is activation


def test_another_thread_calling_the_model_while_a_trace_is_under_way_gets_the_model_unchanged():
    model = build()
    cam = kg.GradCAM(model, layer="conv")
    probs = np.asarray(model(X))
    seen = {}
    with cam._capture.active():  # what a first call does while it traces (head stripped for logits)
        thread = threading.Thread(target=lambda: seen.setdefault("out", np.asarray(model(X))))
        thread.start()
        thread.join()
    close(seen["out"], probs)  # probabilities, not the logits the trace sees
    close(seen["out"].sum(axis=1), np.ones(len(X)))
    assert patched(model) == []


# --- compiled functions stay bounded ---------------------------------------------------------------
def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_a_new_lambda_target_on_every_call_keeps_a_bounded_number_of_functions_and_flat_memory():
    model = build()
    cam = kg.GradCAM(model, layer="conv")
    # warm up: TensorFlow's first allocations settle within ~350 traces (measured: resident memory
    # grows ~14 MB over traces 150-350, on this commit and the one before it, then < 0.5 MB per 200)
    for k in range(350):
        cam(X[:1], targets=lambda out, k=k: out[:, k % 3])
    gc.collect()
    before = _rss_mb()
    for k in range(200):
        exp = cam(X[:1], targets=lambda out, k=k: out[:, k % 3])
    gc.collect()
    assert len(cam._fns) <= FUNCTIONS_KEPT
    assert _rss_mb() - before < 10, f"resident memory grew by {_rss_mb() - before:.0f} MB over 200 calls"
    close(exp.scores, kg.GradCAM(model, layer="conv")(X[:1], targets=(199 % 3)).scores)


def test_equal_target_objects_share_one_compiled_function_and_match_int_targets():
    model = build()
    cam = kg.GradCAM(model, layer="conv")
    for k in (0, 1, 2, 0, 1, 2):
        exp = cam(X, targets=kg.ClassTarget(k))
        close(exp.layer_heatmaps, cam(X, targets=k).layer_heatmaps)
    # one function for every class of the output: the index is data (it was one per equal object, 3)
    assert len([key for key in cam._fns if (kg.ClassTarget, None) in key]) == 1
    assert kg.ClassTarget(1) == kg.ClassTarget(1) and hash(kg.ClassTarget(1)) == hash(kg.ClassTarget(1))


def test_output_target_sums_one_output():
    inp = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(2, 3, activation="relu", name="conv")(inp)
    model = keras.Model(inp, [keras.layers.Dense(2)(keras.layers.Flatten()(a)), a])
    exp = kg.GradCAM(model, layer="conv")(X, targets=kg.OutputTarget(output=1))
    close(exp.scores, np.asarray(model(X)[1]).reshape(len(X), -1).sum(axis=1), rtol=1e-5)


# --- inputs a user reaches for first ---------------------------------------------------------------
def test_a_list_of_same_sized_images_is_stacked_and_different_sizes_are_named():
    model = build()
    expected = kg.explain(model, X, "gradcam", "conv").heatmaps
    close(kg.explain(model, list(X), "gradcam", "conv").heatmaps, expected)
    with pytest.raises(ValueError, match=r"different shapes.*\(6, 8, 3\).*\(8, 8, 3\)"):
        kg.explain(model, [X[0], X[1][:6]], "gradcam", "conv")


@pytest.mark.parametrize("kind", ["batched", "unbatched", "with-labels"])
def test_a_tf_data_dataset_is_read_into_memory(kind):
    model = build()
    expected = kg.explain(model, X, "gradcam", "conv").heatmaps
    data = tf.data.Dataset.from_tensor_slices(X)
    if kind == "with-labels":
        data = tf.data.Dataset.from_tensor_slices((X, np.arange(len(X)))).batch(3)
    elif kind == "batched":
        data = data.batch(3)
    close(kg.explain(model, data, "gradcam", "conv").heatmaps, expected)


def test_a_multi_input_model_given_one_array_names_its_inputs():
    a, b = keras.Input((8, 8, 3), name="photo"), keras.Input((8, 8, 3), name="depth")
    h = keras.layers.Conv2D(2, 3, name="conv")(keras.layers.Add()([a, b]))
    model = keras.Model([a, b], keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(h)))
    with pytest.raises(ValueError, match=r"takes 2 inputs \['photo', 'depth'\].*holds 1 array") as info:
        kg.GradCAM(model, layer="conv")(X)
    assert "in user code" not in str(info.value)


def test_a_callable_target_of_the_wrong_shape_is_a_plain_error():
    cam = kg.GradCAM(build(), layer="conv")
    with pytest.raises(ValueError, match=r"one score per sample, shape \(N,\); it returned shape \(None, 3\)") as info:
        cam(X, targets=lambda out: out)
    assert "in user code" not in str(info.value)
    assert patched(cam.model) == []


def test_an_error_inside_a_user_target_keeps_its_type_and_message():
    cam = kg.GradCAM(build(), layer="conv")

    def target(out):
        raise KeyError("my-own-bug")

    with pytest.raises(KeyError, match="my-own-bug") as info:
        cam(X, targets=target)
    assert "in user code" not in str(info.value)
    assert patched(cam.model) == []


# --- silently wrong or silently empty maps ---------------------------------------------------------
def test_a_layer_that_does_not_feed_the_explained_output_is_refused_at_construction():
    inp = keras.Input((8, 8, 3))
    trunk = keras.layers.Conv2D(4, 3, activation="relu", name="trunk")(inp)
    side = keras.layers.Conv2D(4, 3, activation="relu", name="side")(trunk)
    first = keras.layers.Dense(3, name="classes")(keras.layers.GlobalAveragePooling2D()(trunk))
    second = keras.layers.Dense(2, name="other")(keras.layers.GlobalAveragePooling2D()(side))
    model = keras.Model(inp, [first, second])
    for method in ("gradcam", "gradcam++", "layercam", "ablationcam"):
        with pytest.raises(ValueError, match=r"layer 'side' does not feed the explained output 'classes'"):
            kg.get_method(method)(model, layer="side", output=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights: some maps may hold no positive evidence
        assert kg.GradCAM(model, layer="side", output=1)(X, targets=0).heatmaps.shape == (4, 8, 8)
        assert kg.GradCAM(model, layer="trunk", output=0)(X, targets=0).heatmaps.shape == (4, 8, 8)


def test_a_non_differentiable_score_warns_and_names_the_cause():
    cam = kg.GradCAM(build(), layer="conv")
    with pytest.warns(RuntimeWarning, match=r"4 of 4 maps are all zero because every gradient at the layer is exactly zero"):
        exp = cam(X, targets=lambda out: tf.cast(tf.argmax(out, axis=-1), tf.float32))
    assert exp.heatmaps.max() == 0


def test_non_finite_scores_warn_with_the_count_and_flag_each_sample():
    x = X.copy()
    x[[0, 2]] *= 3e38  # finite inputs whose activations overflow float32: inf and NaN scores
    with pytest.warns(RuntimeWarning, match=r"2 of 4 samples have a score or map that is not finite"):
        exp = kg.GradCAM(build(), layer="conv")(x, targets=0)
    assert exp.finite.tolist() == [False, True, False, True]
    assert exp[1:].finite.tolist() == [True, False, True]
    assert exp.heatmaps[[1, 3]].max() == 1


def test_nan_weights_flag_every_sample():
    model = build()
    kernel, bias = model.get_layer("head").get_weights()
    kernel[0, 1] = np.nan
    model.get_layer("head").set_weights([kernel, bias])
    with pytest.warns(RuntimeWarning, match=r"4 of 4 samples have a score or map that is not finite"):
        exp = kg.GradCAM(model, layer="conv")(X, targets=0)
    assert not exp.finite.any()


def test_no_positive_evidence_warns():
    model = build()
    kernel, bias = model.get_layer("head").get_weights()
    model.get_layer("head").set_weights([-np.abs(kernel), bias])  # every channel lowers every class
    with pytest.warns(RuntimeWarning, match=r"4 of 4 maps are all zero: the layer shows no positive evidence"):
        exp = kg.GradCAM(model, layer="conv")(X, targets=0)
    assert exp.heatmaps.max() == 0 and exp.finite.all()


@pytest.mark.parametrize("scale", [1e-9, 1e9])
@pytest.mark.parametrize("method", ["gradcam", "xgradcam", "hirescam", "layercam"])
def test_normalised_maps_do_not_depend_on_the_scale_of_the_head(method, scale):
    reference = kg.get_method(method)(build(), layer="conv")(X, targets=0)
    scaled = kg.get_method(method)(build(scale=scale), layer="conv")(X, targets=0)
    assert reference.heatmaps.max() == pytest.approx(1.0)
    close(scaled.heatmaps, reference.heatmaps, atol=2e-5)
    close(scaled.layer_heatmaps / scale, reference.layer_heatmaps, rtol=1e-4, atol=1e-6 * reference.layer_heatmaps.max())


def test_gradcam_matches_the_hand_computation_at_a_tiny_scale():
    # the Grad-CAM of a GAP head: alpha_k = W[k, c] / Z (Selvaraju et al. Eq. 1), here times 1e-9
    model = build(scale=1e-9)
    acts = conv_acts(model, X)
    expected = relu(acts @ (W_HEAD[:, 2] * 1e-9 / 36))
    assert expected.max() < 1e-7
    exp = kg.GradCAM(model, layer="conv")(X, targets=2)
    close(exp.layer_heatmaps, expected, rtol=1e-4, atol=0)
    assert (exp.heatmaps.reshape(len(X), -1).max(axis=1) == 1).all()


@pytest.mark.parametrize("scale", [1e-9, 1e9])
def test_gradcam_plus_plus_is_not_empty_at_any_scale(scale):
    # Grad-CAM++'s alpha = 1 / (2 + g * sum A) depends on the score's scale by its formula (the
    # paper's exp link), so its maps change with the scale, but they never vanish
    exp = kg.GradCAMPlusPlus(build(scale=scale), layer="conv")(X, targets=0)
    assert (exp.heatmaps.reshape(len(X), -1).max(axis=1) == 1).all()


def test_a_softmax_the_head_detection_cannot_see_warns_that_probabilities_are_explained():
    inp = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inp)
    logits = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(a))
    model = keras.Model(inp, keras.layers.Lambda(lambda t: keras.ops.softmax(t))(logits))
    with pytest.warns(RuntimeWarning, match="looks like probabilities"):
        kg.GradCAM(model, layer="conv")(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kg.GradCAM(model, layer="conv", score="output")(X)  # on purpose: no warning
        kg.GradCAM(build(), layer="conv")(X)  # a Dense softmax head: logits, no warning


# --- models built under a distribution strategy ----------------------------------------------------
@pytest.mark.parametrize("method", sorted(kg.METHODS))
def test_a_model_built_in_a_mirrored_strategy_scope_explains_like_the_plain_model(method):
    strategy = tf.distribute.MirroredStrategy()
    plain = build()
    with strategy.scope():
        mirrored = build()
    options = {"verbose": 0} if method in ("scorecam", "ablationcam") else {}
    options.update({"n_samples": 2} if method == "smoothgradcam++" else {"steps": 2} if method == "integrated-gradcam" else {})
    expected = kg.get_method(method)(plain, **options)(X).heatmaps
    with strategy.scope():
        inside = kg.get_method(method)(mirrored, **options)(X).heatmaps
    outside = kg.get_method(method)(mirrored, **options)(X).heatmaps
    close(inside, expected, atol=1e-5)
    close(outside, expected, atol=1e-5)


# --- a model this device cannot run ----------------------------------------------------------------
_NO_ONEDNN = textwrap.dedent(
    """
    import keras, numpy as np, keras_gradcam as kg
    inp = keras.Input((3, 8, 8))
    a = keras.layers.Conv2D(2, 3, data_format="channels_first", name="conv")(inp)
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D(data_format="channels_first")(a)))
    try:
        kg.GradCAM(model, layer="conv")(np.ones((1, 3, 8, 8), "float32"))
        print("RAN")
    except kg.DeviceError as e:
        print("DEVICE-ERROR", e)
    """
)


def test_a_model_the_device_cannot_run_gets_a_clear_error():
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU runs channels_first convolutions; the check needs a CPU-only TensorFlow")
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)
    done = subprocess.run([sys.executable, "-c", _NO_ONEDNN], env=env, capture_output=True, text=True, timeout=240)
    out = done.stdout
    if "RAN" in out:
        pytest.skip("this TensorFlow build runs channels_first convolutions on this CPU even with oneDNN off")
    assert "DEVICE-ERROR the model cannot run on this device" in out, done.stdout + done.stderr[-2000:]
    assert "TF_ENABLE_ONEDNN_OPTS=1" in out and "channels_last" in out and "in user code" not in out


def test_normalize_is_relative_to_the_maps_magnitude():
    from keras_gradcam.core.postprocess import normalize

    base = np.array([[0.0, 1.0, 3.0, 2.0]], np.float32)
    for scale in (1e-20, 1.0, 1e20):
        close(np.asarray(normalize(tf.constant(base * scale))), minmax(base.astype(np.float64)))
    flat = np.array([[5.0, 5.0 * (1 + 1e-8), 5.0, 5.0]], np.float32)  # rounding noise on a constant
    assert np.asarray(normalize(tf.constant(flat))).max() == 0


def test_integer_token_ids_reach_the_model_as_integers():
    # ids above 2**24 are not representable in float32: a float round trip would change them
    inp = keras.Input((6,), dtype="int32")
    onehot = keras.layers.Lambda(lambda t: keras.ops.one_hot(t % 5, 5))(inp)
    a = keras.layers.Conv1D(3, 2, activation="relu", name="conv")(onehot)
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(a)))
    small = np.array([[0, 1, 2, 3, 4, 2], [4, 4, 1, 0, 2, 3]])
    large = small + 5 * (2**24 + 1)  # the same ids modulo 5
    assert not np.array_equal(large.astype(np.float32).astype(np.int64) % 5, small)
    cam = kg.GradCAM(model, layer="conv")
    close(cam(large, targets=0).layer_heatmaps, cam(small, targets=0).layer_heatmaps)
    with pytest.raises(TypeError, match="non-integer floats"):
        cam(small + 0.5, targets=0)


def test_explain_takes_method_options_as_a_dict_like_the_callback_and_evaluate():
    model = build()
    by_dict = kg.explain(model, X, "gradcam", "conv", method_options={"counterfactual": True})
    close(by_dict.heatmaps, kg.explain(model, X, "gradcam", "conv", counterfactual=True).heatmaps)
    with pytest.raises(ValueError, match=r"\['counterfactual'\] are given twice"):
        kg.explain(model, X, "gradcam", "conv", method_options={"counterfactual": True}, counterfactual=False)


def test_a_layer_on_another_branch_is_refused_or_run_as_true_for_each_method():
    """Gradients and ablation need the path from the layer to the output; Eigen-CAM reads no output; Score-CAM
    masks the input with the layer's channels and scores the masks through the model's own path."""
    inp = keras.Input((8, 8, 3))
    trunk = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="trunk")(inp)
    side = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="side")(inp)
    first = keras.layers.Dense(3, name="classes")(keras.layers.GlobalAveragePooling2D()(trunk))
    second = keras.layers.Dense(2, name="other")(keras.layers.GlobalAveragePooling2D()(side))
    model = keras.Model(inp, [first, second])
    refused = {"gradcam": "no gradient flows from that output to it", "eigengradcam": "no gradient flows",
               "ablationcam": "ablating its channels cannot change that output", "cam": "Dense head, which never reads"}
    for method, why in refused.items():
        with pytest.raises(ValueError, match=r"layer 'side' does not feed the explained output 'classes'.*" + why):
            kg.get_method(method)(model, layer="side", output=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Eigen-CAM: no refusal, no warning; its map ignores the output
        eigen = [kg.EigenCAM(model, layer="side", output=k)(X, targets=0).heatmaps for k in (0, 1)]
    np.testing.assert_array_equal(eigen[0], eigen[1])
    assert eigen[0].max() > 0
    with pytest.warns(UserWarning, match=r"'side' does not feed.*'classes'.*only as masks on the input") as caught:
        cam = kg.ScoreCAM(model, layer="side", output=0, verbose=0)
    assert caught[0].filename == __file__  # pointed at the user's line
    exp = cam(X, targets=0)
    assert np.isfinite(exp.heatmaps).all() and exp.heatmaps.reshape(len(X), -1).std(axis=1).min() > 0
    # the masked images are scored by 'classes': the channel weights differ from those 'other' gives
    other = kg.ScoreCAM(model, layer="side", output=1, verbose=0)(X, targets=0)
    assert not np.allclose(exp.extras["channel_weights"], other.extras["channel_weights"])
