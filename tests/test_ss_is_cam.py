"""SS-CAM and IS-CAM against Score-CAM and against numbers computed independently with numpy."""

from __future__ import annotations

import keras
import numpy as np
import oracles
import pytest
import tensorflow as tf
from models import conv_gap_model

import keras_gradcam as kg
from keras_gradcam.methods.iscam import ISCAM
from keras_gradcam.methods.scorecam import ScoreCAM
from keras_gradcam.methods.sscam import SSCAM

# 1x1 conv (3 channels, the third constant) -> 2x2 average pooling (the explained layer, 3x3x3)
# -> global average pooling -> Dense(3). Every expected number below follows from these weights.
KERNEL = np.array([1.5, -1.0, 0.0], np.float32).reshape(1, 1, 1, 3)
BIAS = np.array([0.2, 0.4, 0.3], np.float32)
DENSE = np.array([[1.5, -1.0, 0.5], [0.8, 1.2, -1.5], [0.5, 0.2, 0.1]], np.float32)  # (channels, classes)
DENSE_B = np.array([0.1, -0.2, 0.0], np.float32)
X = np.random.default_rng(1).uniform(-1, 1, size=(3, 6, 6, 1)).astype(np.float32)
TARGETS = np.array([0, 1, 2])


def tiny() -> keras.Model:
    return conv_gap_model(KERNEL, BIAS, DENSE, DENSE_B, pool=2, head_name="dense")


def np_acts(x):
    """The pooled conv activations (N, 3, 3, 3)."""
    a = x * KERNEL[0, 0] + BIAS
    return a.reshape(len(x), 3, 2, 3, 2, 3).mean(axis=(2, 4))


def np_logits(x):
    return np_acts(x).mean(axis=(1, 2)) @ DENSE + DENSE_B


def up(maps):
    """Bilinear (half-pixel) upsampling 3x3 -> 6x6 by TensorFlow, as the library's one resizer."""
    return tf.image.resize(maps[..., None], (6, 6), method="bilinear").numpy()[..., 0]


def np_averaged_cam(x, targets, masks_of, variant):
    """Score-CAM with each channel's score averaged over the masks ``masks_of(k, H^k)`` gives."""
    return oracles.scorecam(x, np_acts(x), np_logits, targets, up, variant, masks_of, eps=1e-6)


def noise(seed, k, n, draws, std):
    """The documented draw: channel k, copy n, from the stateless seed (seed, k * draws + n)."""
    return std * tf.random.stateless_normal((6, 6), seed=tf.constant([seed, k * draws + n], tf.int64)).numpy()


def check(exp, expected):
    weights, layer_map, heat = expected
    np.testing.assert_allclose(exp.extras["channel_weights"], weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(exp.layer_heatmaps, layer_map, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(exp.heatmaps, heat, atol=1e-4)  # min-max of a float32 map amplifies rounding


# -- the reductions to Score-CAM ---------------------------------------------------------------------


@pytest.mark.parametrize("weights", ["probability", "channel-softmax"])
def test_sscam_one_sample_without_noise_is_scorecam(weights):
    model = tiny()
    ref = ScoreCAM(model, "pool", weights=weights, verbose=0)(X, targets=TARGETS)
    got = SSCAM(model, "pool", n_samples=1, noise_std=0.0, weights=weights, verbose=0)(X, targets=TARGETS)
    np.testing.assert_array_equal(got.extras["channel_weights"], ref.extras["channel_weights"])
    np.testing.assert_array_equal(got.heatmaps, ref.heatmaps)
    assert got.method == "sscam"


@pytest.mark.parametrize("path", ["linear", "cumulative"])
@pytest.mark.parametrize("weights", ["probability", "channel-softmax"])
def test_iscam_one_step_is_scorecam(path, weights):
    # c_1 = 1/1 on both paths
    model = tiny()
    ref = ScoreCAM(model, "pool", weights=weights, verbose=0)(X, targets=TARGETS)
    got = ISCAM(model, "pool", n_steps=1, path=path, weights=weights, verbose=0)(X, targets=TARGETS)
    np.testing.assert_array_equal(got.extras["channel_weights"], ref.extras["channel_weights"])
    np.testing.assert_array_equal(got.heatmaps, ref.heatmaps)


# -- by hand -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("weights", ["channel-softmax", "probability"])
def test_sscam_by_hand(weights):
    n, std, seed = 3, 0.5, 4

    def masks(k, h):
        return [h + noise(seed, k, i, n, std)[None] for i in range(n)]

    exp = SSCAM(tiny(), "pool", n_samples=n, noise_std=std, seed=seed, weights=weights, verbose=0)(X, targets=TARGETS)
    expected = np_averaged_cam(X, TARGETS, masks, weights)
    assert expected[0][:, 2].max() == 0 and expected[0][:, :2].min() > 0  # constant channel 2 skipped
    check(exp, expected)
    # the noise matters: Score-CAM's weights are different
    plain = np_averaged_cam(X, TARGETS, lambda k, h: [h], weights)[0]
    assert np.abs(plain - expected[0]).max() > 1e-3


def test_sscam_max_channels_draws_the_noise_of_the_kept_channel():
    n, std, seed = 2, 0.5, 1
    exp = SSCAM(tiny(), "pool", n_samples=n, noise_std=std, seed=seed, weights="probability", max_channels=1,
                verbose=0)(X, targets=TARGETS)
    full, _, _ = np_averaged_cam(X, TARGETS, lambda k, h: [h + noise(seed, k, i, n, std)[None] for i in range(n)],
                                 "probability")
    best = np_acts(X).std(axis=(1, 2)).argmax(axis=1)
    expected = np.zeros_like(full)
    expected[np.arange(3), best] = full[np.arange(3), best]
    np.testing.assert_allclose(exp.extras["channel_weights"], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("path", ["linear", "cumulative"])
def test_iscam_by_hand(path):
    n = 3
    coefficients = [1 / 3, 2 / 3, 1.0] if path == "linear" else [1 / 3, 1.0, 2.0]  # cumulative: sum_{j<=i} j/3
    exp = ISCAM(tiny(), "pool", n_steps=n, path=path, verbose=0)(X, targets=TARGETS)
    expected = np_averaged_cam(X, TARGETS, lambda k, h: [c * h for c in coefficients], "channel-softmax")
    check(exp, expected)
    plain = np_averaged_cam(X, TARGETS, lambda k, h: [h], "channel-softmax")[0]
    assert np.abs(plain - expected[0]).max() > 1e-3


# -- seeding, batching, options ----------------------------------------------------------------------


def test_sscam_same_seed_same_maps_other_seed_other_maps():
    model = tiny()
    a = SSCAM(model, "pool", n_samples=2, noise_std=1.0, seed=5, verbose=0)(X, targets=TARGETS)
    b = SSCAM(model, "pool", n_samples=2, noise_std=1.0, seed=5, verbose=0)(X, targets=TARGETS)
    c = SSCAM(model, "pool", n_samples=2, noise_std=1.0, seed=6, verbose=0)(X, targets=TARGETS)
    np.testing.assert_array_equal(a.heatmaps, b.heatmaps)
    assert np.abs(a.extras["channel_weights"] - c.extras["channel_weights"]).max() > 1e-4


@pytest.mark.parametrize("cls, options", [(SSCAM, {"n_samples": 3, "noise_std": 0.7}), (ISCAM, {"n_steps": 3})])
def test_batch_equals_one_by_one_whatever_the_batch_size(cls, options):
    # 3 channels x 3 copies = 9 images per sample: batch_size=4 splits a channel's copies over passes
    model = tiny()
    cam = cls(model, "pool", batch_size=4, verbose=0, **options)
    full = cam(X, targets=TARGETS)
    wide = cam(X, targets=TARGETS, batch_size=64)
    np.testing.assert_allclose(wide.heatmaps, full.heatmaps, atol=1e-6)
    np.testing.assert_allclose(wide.extras["channel_weights"], full.extras["channel_weights"], rtol=1e-6, atol=1e-7)
    for i in range(len(X)):
        one = cam(X[i : i + 1], targets=TARGETS[i : i + 1])
        np.testing.assert_allclose(one.heatmaps, full.heatmaps[i : i + 1], atol=1e-6)
        np.testing.assert_allclose(
            one.extras["channel_weights"], full.extras["channel_weights"][i : i + 1], rtol=1e-6, atol=1e-7
        )


def test_explain_by_name_and_options_are_checked():
    model = tiny()
    assert kg.explain(model, X[:1], method="sscam", layer="pool", n_samples=2, verbose=0).method == "sscam"
    assert kg.explain(model, X[:1], method="iscam", layer="pool", n_steps=2, verbose=0).method == "iscam"
    with pytest.raises(ValueError, match=r"n_samples must be a positive int.*got 0"):
        SSCAM(model, "pool", n_samples=0)
    with pytest.raises(ValueError, match=r"noise_std must be a finite number >= 0.*got -1"):
        SSCAM(model, "pool", noise_std=-1)
    with pytest.raises(TypeError, match="seed must be an int"):
        SSCAM(model, "pool", seed="a")
    with pytest.raises(ValueError, match=r"n_steps must be a positive int.*got 0"):
        ISCAM(model, "pool", n_steps=0)
    with pytest.raises(ValueError, match=r"path must be 'linear'.*got 'log'"):
        ISCAM(model, "pool", path="log")
    with pytest.raises(ValueError, match="weights must be one of"):
        ISCAM(model, "pool", weights="softmax")
    with pytest.raises(ValueError, match="counterfactual"):
        SSCAM(model, "pool", counterfactual=True)
