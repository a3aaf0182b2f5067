"""Score-CAM, Ablation-CAM and Eigen-CAM against numbers computed independently with numpy."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import oracles
import pytest
import tensorflow as tf
from models import conv_gap_model
from oracles import minmax, softmax

from keras_gradcam.methods.ablationcam import AblationCAM
from keras_gradcam.methods.eigencam import EigenCAM
from keras_gradcam.methods.perturbation import plan_passes
from keras_gradcam.methods.scorecam import ScoreCAM

# A tiny network: 1x1 conv (3 channels, the third constant) -> 2x2 average pooling (the explained
# layer, 3x3x3) -> global average pooling -> Dense(3). Every number below follows from these weights.
# Upsampling 3 -> 6 misses interior extremes, so normalising masks before or after it differs.
KERNEL = np.array([1.0, -1.0, 0.0], np.float32).reshape(1, 1, 1, 3)
BIAS = np.array([0.0, 0.5, 0.3], np.float32)
DENSE = np.array([[2.0, -1.0, 0.5], [1.0, 1.5, -2.0], [0.5, 0.2, 0.1]], np.float32)  # (channels, classes)
DENSE_B = np.array([0.1, -0.2, 0.0], np.float32)


def tiny(activation=None, nested=False, skip=False) -> keras.Model:
    model = conv_gap_model(KERNEL, BIAS, DENSE, DENSE_B, pool=2, activation=activation, head_name="dense", nested=nested)
    if not skip:
        return model
    # a path around the explained layer: the logits also get 0.7 * mean(x)
    inp = model.inputs[0]
    side = keras.layers.Dense(3, use_bias=False, name="side")
    out = keras.layers.Add()([model.outputs[0], side(keras.layers.GlobalAveragePooling2D()(inp))])
    side.set_weights([np.full((1, 3), 0.7, np.float32)])
    return keras.Model(inp, out)


X = np.random.default_rng(0).uniform(-1, 1, size=(3, 6, 6, 1)).astype(np.float32)


def np_acts(x):
    """The pooled conv activations (N, 3, 3, 3)."""
    a = x * KERNEL[0, 0] + BIAS
    n = a.shape[0]
    return a.reshape(n, 3, 2, 3, 2, 3).mean(axis=(2, 4))


def np_logits(x, skip=False):
    out = np_acts(x).mean(axis=(1, 2)) @ DENSE + DENSE_B
    return out + 0.7 * x.mean(axis=(1, 2, 3))[:, None] if skip else out


def up(maps, size=(6, 6)):
    """Bilinear (half-pixel) upsampling by TensorFlow: (N, h, w) -> (N, *size)."""
    return tf.image.resize(maps[..., None], size, method="bilinear").numpy()[..., 0]


def np_conv(x):
    """The conv activations before pooling (N, 6, 6, 3)."""
    return x * KERNEL[0, 0] + BIAS


def np_scorecam(x, targets, variant="probability", layer="pool"):
    acts = np_acts(x) if layer == "pool" else np_conv(x)
    return oracles.scorecam(x, acts, np_logits, targets, up, variant)


TARGETS = np.array([0, 1, 2])


# -- Score-CAM --------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["probability", "channel-softmax"])
def test_scorecam_weights_by_hand(variant):
    exp = ScoreCAM(tiny(), "pool", weights=variant, verbose=0)(X, targets=TARGETS)
    weights, layer_map, heat = np_scorecam(X, TARGETS, variant)
    assert weights[:, 2].max() == 0 and weights[:, :2].min() > 0  # constant channel 2 skipped
    np.testing.assert_allclose(exp.extras["channel_weights"], weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(exp.layer_heatmaps, layer_map, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(exp.heatmaps, heat, atol=1e-5)


def test_scorecam_does_not_softmax_twice():
    weights, _, _ = np_scorecam(X, TARGETS)
    as_logits = ScoreCAM(tiny("softmax"), "pool", verbose=0)(X, targets=TARGETS)
    as_probs = ScoreCAM(tiny("softmax"), "pool", score="output", verbose=0)(X, targets=TARGETS)
    np.testing.assert_allclose(as_logits.extras["channel_weights"], weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(as_probs.extras["channel_weights"], weights, rtol=1e-5, atol=1e-6)
    twice = softmax(softmax(np_logits(X * minmax(up(np_acts(X)[..., 0]))[..., None])))[np.arange(3), TARGETS]
    assert np.abs(twice - weights[:, 0]).max() > 1e-3  # the check can tell a double softmax


def test_scorecam_at_two_layers_of_different_sizes_in_one_process():
    # each explainer owns its compiled masking: a 3x3 layer and a 6x6 one, in both orders
    model = tiny()
    for layer in ("pool", "conv", "pool", "conv"):
        exp = ScoreCAM(model, layer, verbose=0)(X, targets=TARGETS)
        weights, layer_map, heat = np_scorecam(X, TARGETS, layer=layer)
        np.testing.assert_allclose(exp.extras["channel_weights"], weights, rtol=1e-5, atol=1e-6, err_msg=layer)
        np.testing.assert_allclose(exp.layer_heatmaps, layer_map, rtol=1e-4, atol=1e-6, err_msg=layer)
        np.testing.assert_allclose(exp.heatmaps, heat, atol=1e-5, err_msg=layer)


def test_faster_scorecam_keeps_the_top_std_channels():
    exp = ScoreCAM(tiny(), "pool", max_channels=1, verbose=0)(X, targets=TARGETS)
    full, _, _ = np_scorecam(X, TARGETS)
    std = np_acts(X).std(axis=(1, 2))
    best = std.argmax(axis=1)
    expected = np.zeros_like(full)
    expected[np.arange(3), best] = full[np.arange(3), best]
    np.testing.assert_allclose(exp.extras["channel_weights"], expected, rtol=1e-5, atol=1e-6)


# -- Ablation-CAM -----------------------------------------------------------------------------------


def np_ablation(x, targets, skip=False, absolute=False):
    """y_k with channel k of the pooled layer set to 0, through the (linear) head, by numpy."""
    y = np_logits(x, skip)[np.arange(len(x)), targets]
    weights = np.zeros((len(x), 3))
    for k in range(3):
        acts = np_acts(x)
        acts[..., k] = 0
        yk = (acts.mean(axis=(1, 2)) @ DENSE + DENSE_B)[np.arange(len(x)), targets]
        if skip:
            yk = yk + 0.7 * x.mean(axis=(1, 2, 3))
        weights[:, k] = (y - yk) if absolute else (y - yk) / y
    return y, weights


POSITIVE = np.array([0, 0, 0])  # class 0 has a positive logit for every sample of X


def test_ablation_weights_by_hand_on_every_path():
    y, weights = np_ablation(X, POSITIVE)
    assert (y > 0).all()
    layer_map = np.maximum((np_acts(X) * weights[:, None, None]).sum(-1), 0)
    runs = {
        "head": AblationCAM(tiny(), "pool", verbose=0),
        "full": AblationCAM(tiny(), "pool", head_only=False, verbose=0),
        "nested": AblationCAM(tiny(nested=True), "backbone/pool", verbose=0),
    }
    for name, cam in runs.items():
        exp = cam(X, targets=POSITIVE)
        assert cam.uses_head == (name == "head"), name
        np.testing.assert_allclose(exp.extras["channel_weights"], weights, rtol=1e-4, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(exp.layer_heatmaps, layer_map, rtol=1e-4, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(exp.scores, y, rtol=1e-5, err_msg=name)


def test_ablation_with_a_skip_connection_runs_the_whole_model():
    cam = AblationCAM(tiny(skip=True), "pool", verbose=0)
    exp = cam(X, targets=POSITIVE)
    assert not cam.uses_head
    _, weights = np_ablation(X, POSITIVE, skip=True)
    np.testing.assert_allclose(exp.extras["channel_weights"], weights, rtol=1e-4, atol=1e-6)


def test_ablation_nonpositive_score_warns_and_uses_the_absolute_drop():
    targets = np.array([0, 1, 2])
    y, absolute = np_ablation(X, targets, absolute=True)
    assert (y <= 0).any() and (y > 0).any()
    with pytest.warns(UserWarning, match=r"y <= 0"):
        exp = AblationCAM(tiny(), "pool", verbose=0)(X, targets=targets)
    _, relative = np_ablation(X, targets)
    expected = np.where(y[:, None] > 0, relative, absolute)
    np.testing.assert_allclose(exp.extras["channel_weights"], expected, rtol=1e-4, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exp = AblationCAM(tiny(), "pool", drop="absolute", verbose=0)(X, targets=targets)
    np.testing.assert_allclose(exp.extras["channel_weights"], absolute, rtol=1e-4, atol=1e-6)


# -- Eigen-CAM --------------------------------------------------------------------------------------


def np_eigen(acts, center=False):
    maps = []
    for a in acts:
        o = a.reshape(-1, a.shape[-1]).astype(np.float64)
        if center:
            o = o - o.mean(axis=0)
        _, _, vt = np.linalg.svd(o, full_matrices=False)
        m = o @ vt[0]
        m = m * (1.0 if m[np.abs(m).argmax()] > 0 else -1.0)
        maps.append(m.reshape(a.shape[:-1]))
    return np.stack(maps)


@pytest.fixture(scope="module")
def conv_net():
    keras.utils.set_random_seed(2)
    inp = keras.Input((12, 12, 3))
    h = keras.layers.Conv2D(6, 3, activation="relu", name="c1")(inp)
    h = keras.layers.Conv2D(5, 3, name="c2")(h)  # signed activations: the sign rule matters
    out = keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(h))
    return keras.Model(inp, out)


@pytest.mark.parametrize("center", [False, True])
def test_eigencam_against_numpy_svd(conv_net, center):
    x = np.random.default_rng(1).normal(size=(4, 12, 12, 3)).astype(np.float32)
    acts = keras.Model(conv_net.input, conv_net.get_layer("c2").output)(x).numpy()
    cam = EigenCAM(conv_net, "c2", center=center)
    exp = cam(x)
    expected = np_eigen(acts, center)
    np.testing.assert_allclose(exp.layer_heatmaps, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert (exp.layer_heatmaps < 0).any()  # no ReLU by default
    np.testing.assert_allclose(exp.heatmaps, minmax(up(expected, (12, 12))), atol=1e-4)
    other = cam(x, targets=[3, 2, 1, 0])  # class-agnostic
    np.testing.assert_allclose(other.heatmaps, exp.heatmaps, atol=1e-6)


# -- shared behaviour -------------------------------------------------------------------------------


def test_batch_equals_one_by_one_and_chunking_does_not_matter(conv_net):
    x = np.random.default_rng(4).normal(size=(3, 12, 12, 3)).astype(np.float32)
    for cls in (ScoreCAM, AblationCAM, EigenCAM):
        kwargs = {} if cls is EigenCAM else {"verbose": 0}
        cam = cls(conv_net, "c2", batch_size=4, **kwargs)
        full = cam(x)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # y <= 0 samples for Ablation-CAM
            wide = cam(x, batch_size=64)
            for i in range(len(x)):
                one = cam(x[i : i + 1])
                np.testing.assert_allclose(one.heatmaps, full.heatmaps[i : i + 1], atol=1e-5, err_msg=cls.name)
        np.testing.assert_allclose(wide.heatmaps, full.heatmaps, atol=1e-5, err_msg=cls.name)


def test_nested_backbone_equals_flat_for_scorecam_and_eigencam():
    flat, nested = tiny(), tiny(nested=True)
    for cls, kwargs in ((ScoreCAM, {"verbose": 0}), (EigenCAM, {})):
        a = cls(flat, "pool", **kwargs)(X, targets=TARGETS)
        b = cls(nested, "backbone/pool", **kwargs)(X, targets=TARGETS)
        np.testing.assert_allclose(b.heatmaps, a.heatmaps, atol=1e-6, err_msg=cls.name)


def test_plan_passes_bounds_images_per_pass():
    for n, k, bs in [(8, 64, 32), (8, 3, 32), (1, 2048, 8), (5, 7, 1), (3, 100, 250)]:
        samples, chunk = plan_passes(n, k, bs)
        assert 1 <= samples <= n and 1 <= chunk <= k
        assert samples * chunk <= max(bs, 1)


def test_progress_bar_only_when_verbose(capsys):
    cam = ScoreCAM(tiny(), "pool", verbose=1)
    cam(X[:1])
    assert "pass" in capsys.readouterr().err  # progress goes to stderr (tests/test_progress.py)
    cam.verbose = 0
    cam(X[:1])
    assert capsys.readouterr() == ("", "")


def test_options_are_checked():
    model = tiny()
    for cls in (ScoreCAM, AblationCAM, EigenCAM):
        with pytest.raises(ValueError, match="counterfactual"):
            cls(model, "pool", counterfactual=True)
    with pytest.raises(ValueError, match="weights must be one of"):
        ScoreCAM(model, "pool", weights="softmax")
    with pytest.raises(ValueError, match="max_channels"):
        ScoreCAM(model, "pool", max_channels=0)
    with pytest.raises(ValueError, match="drop must be one of"):
        AblationCAM(model, "pool", drop="ratio")
    with pytest.raises(ValueError, match="verbose"):
        AblationCAM(model, "pool", verbose=3)


# -- integer token inputs: methods that perturb the input refuse them --------------------------------


def token_model(dtype="int32", nested=False) -> keras.Model:
    """Embedding -> Conv1D -> pooling -> Dense on token ids (optionally the embedding in a nested model)."""
    inp = keras.Input((10,), dtype=dtype)
    emb = keras.layers.Embedding(20, 4, name="emb")
    if nested:
        inner_in = keras.Input((10,), dtype=dtype)
        h = keras.Model(inner_in, emb(inner_in), name="encoder")(inp)
    else:
        h = emb(inp)
    h = keras.layers.Conv1D(3, 3, padding="same", activation="relu", name="conv")(h)
    h = keras.layers.GlobalAveragePooling1D()(h)
    return keras.Model(inp, keras.layers.Dense(2, name="dense")(h), name="tokens")


TOKENS = np.random.default_rng(1).integers(1, 20, size=(2, 10)).astype(np.int32)


@pytest.mark.parametrize("dtype, nested", [("int32", False), ("float32", False), ("float32", True)])
@pytest.mark.parametrize("name", ["smoothgradcam++", "integrated-gradcam", "scorecam"])
def test_input_perturbing_methods_refuse_token_inputs(name, dtype, nested):
    # today: Smooth Grad-CAM++ fails inside TensorFlow, Integrated Grad-CAM silently interpolates ids
    from keras_gradcam.methods.registry import get_method

    model = token_model(dtype, nested)
    options = {"verbose": 0} if name == "scorecam" else {}
    with pytest.raises(ValueError, match="meaningless for integer token ids") as err:
        get_method(name)(model, "conv", **options)(TOKENS)
    message = str(err.value)
    assert ("'encoder/emb'" if nested else "'emb'") in message and ("int32" in message) == (dtype == "int32")
    for works in ("Grad-CAM", "Grad-CAM++", "XGrad-CAM", "HiResCAM", "LayerCAM", "Ablation-CAM", "Eigen-CAM"):
        assert works in message


def test_the_refusal_names_exactly_the_methods_that_work_on_token_models():
    """Every registered method runs on the token model: the ones that work are the ones the refusal names."""
    from keras_gradcam.methods.inputs import token_inputs
    from keras_gradcam.methods.perturbation import ChannelPerturbation
    from keras_gradcam.methods.registry import METHODS

    model = token_model()
    model.get_layer("dense").set_weights([np.array([[1.0, -1.0], [0.5, 0.2], [-0.3, 1.0]], np.float32), np.zeros(2)])
    works, refusal = [], None
    for name, cls in METHODS.items():
        options = {"verbose": 0} if issubclass(cls, ChannelPerturbation) else {}
        options.update({"drop": "absolute"} if name == "ablationcam" else {})
        layer = None if name == "guided-backprop" else "conv"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # all-zero maps of some methods on this model
                exp = cls(model, layer, **options)(TOKENS, targets=0)
        except ValueError as err:
            assert "meaningless for integer token ids" in str(err), name
            refusal = str(err)
            continue
        assert exp.heatmaps.shape == TOKENS.shape and np.isfinite(exp.heatmaps).all(), name
        works.append(cls.display_name)
    named = refusal.split("leaves the input as it is (")[1].split("), or explain")[0]
    assert sorted(named.replace(" and ", ", ").split(", ")) == sorted(works)
    assert {"CAM", "Eigen-Grad-CAM", "Grad-CAM element-wise", "Grad-CAM", "Ablation-CAM"} <= set(works)
    assert token_inputs(tiny()) == {}  # image models (also fed uint8 arrays) are not token models


def test_scorecam_masks_the_image_next_to_token_inputs():
    # an image + token-ids model: Score-CAM masks the image only, the ids are repeated as they are
    from keras_gradcam.methods.inputs import token_inputs
    from keras_gradcam.methods.smooth_gradcam_plusplus import SmoothGradCAMPlusPlus

    img, ids = keras.Input((6, 6, 1)), keras.Input((4,), dtype="int32")
    conv = keras.layers.Conv2D(3, 1, name="conv")
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.AveragePooling2D(2, name="pool")(conv(img)))
    e = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(5, 3, embeddings_initializer="zeros")(ids))
    dense = keras.layers.Dense(3, name="dense")
    model = keras.Model([img, ids], dense(keras.layers.Add()([h, e])))
    conv.set_weights([KERNEL, BIAS])
    dense.set_weights([DENSE, DENSE_B])
    assert list(token_inputs(model)) == [1]
    tokens = np.ones((3, 4), np.int32)
    exp = ScoreCAM(model, "pool", verbose=0)([X, tokens], targets=TARGETS)
    weights, _, _ = np_scorecam(X, TARGETS)  # zero embeddings: the image branch alone, by hand
    np.testing.assert_allclose(exp.extras["channel_weights"], weights, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="token ids"):  # noise would reach the ids too
        SmoothGradCAMPlusPlus(model, "pool")([X, tokens])


@pytest.mark.parametrize("head_only", [True, False])
def test_ablation_max_channels_ablates_the_top_std_channels(head_only):
    # conv kernel (0.5, -2, 0): channel 1 has 4x the spatial std of channel 0, channel 2 none, so
    # max_channels=1 must pick channel 1 (not the first one) and max_channels=2 channels 1 and 0
    kernel = np.array([0.5, -2.0, 0.0], np.float32)
    model = tiny()
    model.get_layer("conv").set_weights([kernel.reshape(1, 1, 1, 3), BIAS])
    a = (X * kernel + BIAS).reshape(3, 3, 2, 3, 2, 3).mean(axis=(2, 4))  # pooled (N, 3, 3, 3)
    # linear head: zeroing channel k lowers logit c by mean(A^k) * DENSE[k, c]: the absolute drop
    full = a.mean(axis=(1, 2)) * DENSE[:, 0]
    for m, kept in ((1, [1]), (2, [0, 1])):
        cam = AblationCAM(model, "pool", max_channels=m, drop="absolute", head_only=head_only, verbose=0)
        exp = cam(X, targets=0)
        expected = np.zeros_like(full)
        expected[:, kept] = full[:, kept]
        np.testing.assert_allclose(exp.extras["channel_weights"], expected, rtol=1e-4, atol=1e-6)
        layer_map = np.maximum((a * expected[:, None, None]).sum(-1), 0)
        np.testing.assert_allclose(exp.layer_heatmaps, layer_map, rtol=1e-4, atol=1e-6)
        assert cam.get_config()["max_channels"] == m
    with pytest.raises(ValueError, match="max_channels"):
        AblationCAM(model, "pool", max_channels=0)


def test_ablation_progress_bar_counts_the_ablated_passes(capsys):
    AblationCAM(tiny(), "pool", max_channels=2, batch_size=1, verbose=1)(X[:1], targets=0)
    captured = capsys.readouterr()
    out = captured.out + captured.err  # stdout or stderr, wherever the bar writes
    assert "2/2" in out and "pass" in out
