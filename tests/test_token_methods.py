"""Every registered method on token layers (vision transformers), and what the perturbation methods perturb.

Two models: the functional ViT of ``tests/models.py`` (``vit_model``: a 16x16 image, 4x4 patches,
a class token, one pre-norm block, a class-token head) for "every method runs on a token layer",
and the hand-set token model (``token_model``: a 2x2 grid of patches, a large constant class
token, one attention block) for the hand computations. Those recompute each perturbed score by
running the model's own layers on a perturbed copy of the tokens or of the image, so the
expectations never come from the explainers.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from models import CLS, HEAD, images_with_bright_patch, patch_embedding, token_model, vit_model
from oracles import minmax, softmax

import keras_gradcam as kg

OPTIONS = {
    "smoothgradcam++": {"n_samples": 2},
    "integrated-gradcam": {"steps": 2},
    "scorecam": {"verbose": 0},
    "ablationcam": {"verbose": 0},
    "sscam": {"n_samples": 2, "verbose": 0},
    "iscam": {"n_steps": 2, "verbose": 0},
}
GUIDED = ("guided-backprop", "guided-gradcam", "guided-gradcam++")


@pytest.fixture(scope="module")
def vit():
    return vit_model(depth=1, seed=3)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((2, 16, 16, 3)).astype(np.float32)


@pytest.mark.filterwarnings("ignore:.*maps are all zero:RuntimeWarning")
@pytest.mark.parametrize("name", sorted(kg.METHODS))
def test_every_method_on_a_token_layer(name, vit, images):
    before = [w.copy() for w in vit.get_weights()]
    try:
        run_on_the_token_layer(name, vit, images)
    finally:  # the user's model is never changed, also where a method refuses it
        assert all(np.array_equal(a, b) for a, b in zip(before, vit.get_weights()))


def run_on_the_token_layer(name, vit, images):
    if name == "cam":  # CAM reads a GAP -> Dense head; this one reads the class token
        with pytest.raises(ValueError, match="global average pooling and a Dense") as info:
            kg.explain(vit, images, method=name)
        assert "GetItem" in str(info.value) and "method='gradcam'" in str(info.value)
        return
    options = dict(OPTIONS.get(name, {}))
    if name in GUIDED:  # guided backpropagation is defined for ReLUs; the MLP's GELU is refused, or kept
        with pytest.raises(ValueError, match="non_relu='keep'") as info:
            kg.explain(vit, images, method=name)
        assert "block0_mlp1" in str(info.value) and "gelu" in str(info.value)
        options["non_relu"] = "keep"
    exp = kg.explain(vit, images, method=name, **options)
    assert exp.heatmaps.shape == (2, 16, 16) and np.isfinite(exp.heatmaps).all()
    assert exp.heatmaps.min() >= 0 and exp.heatmaps.max() <= 1
    if name == "guided-backprop":  # input level: no layer, attributions like the image
        assert exp.layer == "input" and exp.attributions.shape == (2, 16, 16, 3)
        return
    assert exp.layer == "block0_norm1"  # the default: the input of the last attention, a token layer
    assert exp.layer_heatmaps.shape == (2, 4, 4) and np.isfinite(exp.layer_heatmaps).all()
    if name in ("guided-gradcam", "guided-gradcam++"):
        assert exp.attributions.shape == (2, 16, 16, 3)


def test_cam_on_a_token_layer_read_by_a_pooling_head():
    # mean head: logit_c = sum_k HEAD[k, c] * mean over the 5 tokens of A_k (identity block). CAM's map on
    # the grid is sum_k HEAD[k, c] A_k at each patch: the class token's share is an offset, like the bias.
    model = token_model(head="mean")
    x = images_with_bright_patch(0, 1)
    for c, relu in ((0, True), (1, False)):
        expected = patch_embedding(x) @ HEAD[:, c]
        exp = kg.CAM(model, layer="block", relu=relu)(x, targets=c)
        np.testing.assert_allclose(exp.layer_heatmaps, np.maximum(expected, 0.0) if relu else expected, rtol=1e-5, atol=1e-6)
        assert np.abs(expected).max() > 0.5


# -- the perturbation methods: what a token layer's perturbation acts on ----------------------------


def head_after_with_cls(model, tokens):
    """The model after its "with_cls" layer, run by its own layers on ``tokens`` (n, 5, 2): the logits."""
    x = model.get_layer("block")([tokens, model.get_layer("attn")(tokens, tokens)])
    return keras.ops.convert_to_numpy(model.get_layer("logits")(x[:, 0]))


def with_cls_tokens(model, x):
    return keras.ops.convert_to_numpy(keras.Model(model.inputs, model.get_layer("with_cls").output)([x]))


@pytest.fixture(scope="module")
def seeded():
    """The hand-set token model with a seeded attention (so the class token mixes with the patches)."""
    return token_model(head="cls", attention_scale=1.0)


@pytest.mark.filterwarnings("ignore:.*maps are all zero:RuntimeWarning")  # channel 1's weight is negative here
def test_ablationcam_zeroes_a_channel_of_the_patch_tokens_through_attention(seeded):
    x = images_with_bright_patch(1, 0, n=3)
    c = 0
    tokens = with_cls_tokens(seeded, x)
    np.testing.assert_allclose(tokens[:, 0], np.broadcast_to(CLS, (3, 2)))  # the class token, untouched below
    y = head_after_with_cls(seeded, tokens)[:, c]
    drops, everywhere = [], []
    for k in range(2):
        ablated = tokens.copy()
        ablated[:, 1:, k] = 0.0  # channel k of the patch tokens only
        drops.append((y - head_after_with_cls(seeded, ablated)[:, c]) / y)
        ablated[:, 0, k] = 0.0  # the rule it must not follow: the class token zeroed too
        everywhere.append((y - head_after_with_cls(seeded, ablated)[:, c]) / y)
    weights, wrong = np.stack(drops, axis=1), np.stack(everywhere, axis=1)
    assert np.abs(weights - wrong).max() > 0.1  # the two rules give different weights on this model
    cam = kg.AblationCAM(seeded, layer="with_cls", verbose=0)
    exp = cam(x, targets=c)
    assert not cam.uses_head
    np.testing.assert_allclose(exp.extras["channel_weights"], weights, rtol=1e-4, atol=1e-6)
    grid = tokens[:, 1:].reshape(3, 2, 2, 2)
    expected = np.maximum((grid * weights[:, None, None]).sum(-1), 0.0)
    np.testing.assert_allclose(exp.layer_heatmaps, expected, rtol=1e-4, atol=1e-6)


def up(maps, size=(8, 8)):
    """Bilinear (half-pixel) upsampling by TensorFlow: (N, h, w) -> (N, *size)."""
    return tf.image.resize(maps[..., None], size, method="bilinear").numpy()[..., 0]


def masked_scores(model, x, grid, c, scales=(1.0,), noise=None):
    """(n, K, copies) target logits of the image masked by each patch-grid channel's upsampled, min-max mask.

    ``scales`` multiply the mask (IS-CAM's path); ``noise[k][j]`` (8, 8) is added to copy ``j`` (SS-CAM).
    """
    n, k_count = len(x), grid.shape[-1]
    out = np.zeros((n, k_count, len(scales) if noise is None else len(noise[0])))
    for k in range(k_count):
        mask = minmax(up(grid[..., k]))
        for j in range(out.shape[2]):
            m = mask * scales[j] if noise is None else mask + noise[k][j]
            out[:, k, j] = keras.ops.convert_to_numpy(model(x * m[..., None]))[np.arange(n), c]
    return out


def test_scorecam_masks_the_image_with_the_patch_grid(seeded):
    x = images_with_bright_patch(0, 1, n=3)
    c = np.array([0, 1, 0])
    grid = with_cls_tokens(seeded, x)[:, 1:].reshape(3, 2, 2, 2)  # the class token is no part of any mask
    np.testing.assert_allclose(grid, patch_embedding(x), rtol=1e-5)
    weights = np.zeros((3, 2))
    for k in range(2):
        mask = minmax(up(grid[..., k]))
        weights[:, k] = softmax(keras.ops.convert_to_numpy(seeded(x * mask[..., None])))[np.arange(3), c]
    exp = kg.ScoreCAM(seeded, layer="with_cls", verbose=0)(x, targets=c)
    np.testing.assert_allclose(exp.extras["channel_weights"], weights, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(exp.layer_heatmaps, np.maximum((grid * weights[:, None, None]).sum(-1), 0.0), rtol=1e-4, atol=1e-6)


def test_iscam_averages_the_patch_grid_masks_along_the_path(seeded):
    x = images_with_bright_patch(1, 1, n=2)
    c = np.array([1, 0])
    grid = with_cls_tokens(seeded, x)[:, 1:].reshape(2, 2, 2, 2)
    steps = 3
    scores = masked_scores(seeded, x, grid, c, scales=[i / steps for i in range(1, steps + 1)]).mean(axis=2)
    weights = softmax(scores, axis=1)
    exp = kg.ISCAM(seeded, layer="with_cls", n_steps=steps, verbose=0)(x, targets=c)
    np.testing.assert_allclose(exp.extras["channel_weights"], weights, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(exp.layer_heatmaps, np.maximum((grid * weights[:, None, None]).sum(-1), 0.0), rtol=1e-4, atol=1e-6)


def test_sscam_adds_its_seeded_noise_to_the_patch_grid_masks(seeded):
    # the documented draw: copy n of channel k is stateless_normal(size, seed=(seed, k * n_samples + n))
    x = images_with_bright_patch(0, 0, n=2)
    c = np.array([0, 1])
    grid = with_cls_tokens(seeded, x)[:, 1:].reshape(2, 2, 2, 2)
    draws, std, seed = 2, 0.3, 7
    noise = [
        [std * tf.random.stateless_normal((8, 8), seed=tf.constant([seed, k * draws + j], tf.int64)).numpy() for j in range(draws)]
        for k in range(2)
    ]
    weights = softmax(masked_scores(seeded, x, grid, c, noise=noise).mean(axis=2), axis=1)
    exp = kg.SSCAM(seeded, layer="with_cls", n_samples=draws, noise_std=std, seed=seed, verbose=0)(x, targets=c)
    np.testing.assert_allclose(exp.extras["channel_weights"], weights, rtol=1e-4, atol=1e-6)


def test_eigencam_on_the_grid_leaves_the_class_token_out(seeded):
    # dim images: the class token (5, -3) outweighs the patches, so an SVD that kept it would find its direction
    x = 0.1 * np.random.default_rng(2).random((2, 8, 8, 1)).astype(np.float32)
    tokens = with_cls_tokens(seeded, x)
    expected = []
    for sample in tokens:
        v = np.linalg.svd(sample[1:], full_matrices=False)[2][0]
        with_class_token = np.linalg.svd(sample, full_matrices=False)[2][0]
        assert abs(v @ with_class_token) < 0.95  # the two rules give different maps
        m = sample[1:] @ v
        expected.append(m if m[np.abs(m).argmax()] > 0 else -m)
    exp = kg.EigenCAM(seeded, layer="with_cls")(x)
    np.testing.assert_allclose(exp.layer_heatmaps, np.reshape(expected, (2, 2, 2)), rtol=1e-4, atol=1e-5)
