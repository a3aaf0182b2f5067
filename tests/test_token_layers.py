"""Token layers (vision transformers): a (batch, tokens, channels) output explained on its patch grid.

The tiny token model: an 8x8 one-channel image, a patch embedding Conv2D (4x4 patches, stride 4,
so a 2x2 grid), the patches as 4 tokens, a class token prepended (5 tokens), one attention block
(MultiHeadAttention plus residual) and a head. Its weights are set by hand, so each expected map
below is worked out in numpy from the Grad-CAM formula on the 2x2 grid.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from models import CLS, HEAD, images_with_bright_patch, patch_embedding, token_model

import keras_gradcam as kg
from keras_gradcam.core.layers import list_layers, resolve_layer


def test_list_layers_shows_the_grid_of_token_layers():
    infos = {i.path: i for i in list_layers(token_model())}
    assert infos["tokens"].grid == (2, 2) and infos["tokens"].prefix_tokens == 0
    assert infos["with_cls"].grid == (2, 2) and infos["with_cls"].prefix_tokens == 1
    assert infos["block"].grid == (2, 2) and infos["block"].prefix_tokens == 1
    assert infos["patch"].grid is None and infos["patch"].spatial_shape == (2, 2)
    assert infos["block"].standard_shape == (None, 2, 2, 2)


def test_gradcam_on_the_grid_matches_the_hand_computation():
    # identity block (attention output projection 0), mean head: the score of class c is
    # sum_k HEAD[k, c] * mean over the 5 tokens of token_k, so d score / d token = HEAD[:, c] / 5 at every token
    model = token_model()
    x = images_with_bright_patch(1, 0)
    acts = patch_embedding(x)  # the block's patch tokens on the grid
    c = 1
    alpha = HEAD[:, c] / 5.0  # mean over the grid of a constant gradient
    expected = np.maximum((acts * alpha).sum(-1), 0.0)
    exp = kg.GradCAM(model, layer="block")(x, targets=c)
    np.testing.assert_allclose(exp.layer_heatmaps, expected, rtol=1e-5, atol=1e-6)
    assert exp.heatmaps.shape == (2, 8, 8)


def test_the_peak_lands_on_the_patch_that_carries_the_evidence():
    model = token_model()
    for row, col in [(0, 0), (0, 1), (1, 0), (1, 1)]:
        exp = kg.GradCAM(model, layer="block")(images_with_bright_patch(row, col), targets=0)
        peaks = exp.layer_heatmaps.reshape(2, -1).argmax(axis=1)
        assert (peaks == 2 * row + col).all(), (row, col, exp.layer_heatmaps)


def test_gradcam_through_attention_matches_an_independent_tape():
    # seeded attention: the reference activations and gradients come from a keras sub-model and a
    # plain tape, reshaped in numpy (class token dropped, row-major 2x2), then Grad-CAM's formula
    model = token_model(head="cls", attention_scale=1.0)
    x = images_with_bright_patch(0, 1, n=3)
    for layer in ("with_cls", "tokens"):
        inner = keras.Model(model.inputs, [model.get_layer(layer).output, model.output])
        with tf.GradientTape() as tape:
            a, out = inner(x)
            score = tf.reduce_sum(out[:, 0])
        g = tape.gradient(score, a).numpy()
        a = a.numpy()
        prefix = 1 if layer == "with_cls" else 0
        a, g = (v[:, prefix:].reshape(3, 2, 2, 2) for v in (a, g))
        expected = np.maximum((a * g.mean(axis=(1, 2), keepdims=True)).sum(-1), 0.0)
        assert (expected.reshape(3, -1).max(axis=1) > 0).all()  # seed 5: a map to compare, not zeros
        exp = kg.GradCAM(model, layer=layer)(x, targets=0)
        np.testing.assert_allclose(exp.layer_heatmaps, expected, rtol=1e-4, atol=1e-6)


def test_default_layer_is_the_input_of_the_last_attention():
    # after the last attention every op is per token: a class-token head gives the patches no gradient there
    model = token_model(head="cls", attention_scale=1.0)
    assert resolve_layer(model, None).path == "with_cls"
    exp = kg.GradCAM(model)(images_with_bright_patch(1, 1), targets=0)
    assert exp.layer == "with_cls" and exp.layer_heatmaps.shape == (2, 2, 2)
    block = kg.GradCAM(model, layer="block")
    with pytest.warns(RuntimeWarning, match="gradient at the layer is exactly zero"):
        block(images_with_bright_patch(1, 1), targets=0)


def test_explicit_grid_prefix_and_reshape_give_the_inferred_maps():
    model = token_model(head="cls", attention_scale=1.0)
    x = images_with_bright_patch(1, 0)
    inferred = kg.GradCAM(model, layer="with_cls")(x).layer_heatmaps
    assert (inferred.reshape(2, -1).max(axis=1) > 0).all()
    for options in (
        {"grid": (2, 2), "prefix_tokens": 1},
        {"grid": (2, 2)},
        {"prefix_tokens": 1},
        {"reshape": lambda t: tf.reshape(t[:, 1:], (-1, 2, 2, 2))},
    ):
        exp = kg.explain(model, x, method="gradcam", layer="with_cls", **options)
        np.testing.assert_allclose(exp.layer_heatmaps, inferred, rtol=1e-6, err_msg=str(options))
    # a transposed grid is a different map: the reshape is honoured
    cols_first = kg.GradCAM(model, layer="with_cls", reshape=lambda t: tf.transpose(tf.reshape(t[:, 1:], (-1, 2, 2, 2)), [0, 2, 1, 3]))
    np.testing.assert_allclose(cols_first(x).layer_heatmaps, inferred.transpose(0, 2, 1), rtol=1e-6)


def test_config_round_trip_keeps_the_token_options():
    model = token_model()
    cam = kg.GradCAM(model, layer="with_cls", grid=(2, 2), prefix_tokens=1)
    config = cam.get_config()
    assert config["grid"] == [2, 2] and config["prefix_tokens"] == 1
    same = kg.get_method(config["method"]).from_config(model, config)
    assert same.layers[0].grid == (2, 2) and same.layers[0].prefix_tokens == 1
    plain = kg.GradCAM(model, layer="with_cls").get_config()
    assert plain["grid"] is None and plain["prefix_tokens"] is None and plain["reshape"] is None


@pytest.mark.parametrize(
    "options, error, words",
    [
        ({"grid": (3, 2)}, ValueError, ["grid=(3, 2)", "outputs 5"]),
        ({"grid": (2, 2), "prefix_tokens": 2}, ValueError, ["prefix_tokens=2", "outputs 5"]),
        ({"prefix_tokens": 2}, ValueError, ["leaves 3 patch tokens", "grid=(rows, cols)"]),
        ({"grid": (2,)}, TypeError, ["grid must be", "(rows, cols)"]),
        ({"prefix_tokens": -1}, ValueError, ["prefix_tokens"]),
        ({"reshape": "flat"}, TypeError, ["reshape must be", "str"]),
        ({"reshape": lambda t: t, "grid": (2, 2)}, ValueError, ["either reshape= or grid="]),
        ({"reshape": lambda t: t[:, 1:]}, ValueError, ["(batch, rows, cols, channels)", "(1, 4, 2)"]),
    ],
)
def test_wrong_token_options_say_what_fits(options, error, words):
    with pytest.raises(error) as info:
        kg.GradCAM(token_model(), layer="with_cls", **options)
    for w in words:
        assert w in str(info.value)


def test_grid_on_a_feature_map_says_it_is_for_token_layers():
    with pytest.raises(ValueError, match=r"apply to token layers.*\(None, 2, 2, 2\)"):
        kg.GradCAM(token_model(), layer="patch", grid=(2, 2))


class Patchify(keras.layers.Layer):
    """Cut a (batch, 8, 8, 1) image into `count` tokens inside one layer (the graph shows no patch map)."""

    def __init__(self, count, **kwargs):
        super().__init__(**kwargs)
        self.count = count

    def call(self, x):
        flat = keras.ops.reshape(x, (-1, 64))
        return keras.ops.stack([flat[:, i : i + 4] for i in range(self.count)], axis=1)


def patchify_model(count):
    inp = keras.Input((8, 8, 1))
    x = Patchify(count, name="patches")(inp)
    x = keras.layers.Dense(3, name="embed")(x)
    return keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(x)))


def test_a_layer_that_cuts_patches_itself_gets_the_square_grid():
    infos = {i.path: i for i in list_layers(patchify_model(17))}
    assert infos["embed"].grid == (4, 4) and infos["embed"].prefix_tokens == 1  # 17 = 1 + 4x4
    exp = kg.GradCAM(patchify_model(16), layer="embed")(np.ones((1, 8, 8, 1), np.float32))
    assert exp.layer_heatmaps.shape == (1, 4, 4) and exp.heatmaps.shape == (1, 8, 8)


def test_a_grid_that_cannot_be_told_asks_for_grid_and_prefix_tokens():
    model = patchify_model(6)  # neither 6 nor 5 is a square: no grid of the square image fits
    with pytest.raises(ValueError) as info:
        kg.GradCAM(model, layer="embed")
    text = str(info.value)
    assert "'embed'" in text and "6 or 5 cells" in text and "grid=(rows, cols)" in text and "prefix_tokens=" in text
    assert "reshape=" in text
    exp = kg.GradCAM(model, layer="embed", grid=(2, 3), prefix_tokens=0)(np.ones((1, 8, 8, 1), np.float32))
    assert exp.layer_heatmaps.shape == (1, 2, 3)


def test_conv1d_and_row_sequences_stay_one_dimensional():
    # a time series: no image input, so no token layer
    inp = keras.Input((12, 3))
    x = keras.layers.Conv1D(4, 3, name="conv1d")(inp)
    series = keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(x)))
    assert all(i.grid is None for i in list_layers(series))
    exp = kg.GradCAM(series)(np.ones((2, 12, 3), np.float32))
    assert exp.layer == "conv1d" and exp.heatmaps.shape == (2, 12)
    # a CRNN: a CNN map read as a sequence over its columns (16 steps of an 8x16 map) is no grid
    inp = keras.Input((8, 16, 1))
    x = keras.layers.Conv2D(2, 3, padding="same", name="conv")(inp)
    x = keras.layers.Permute((2, 1, 3))(x)
    x = keras.layers.Reshape((16, 16), name="columns")(x)
    x = keras.layers.Conv1D(4, 3, padding="same", name="seq")(x)
    crnn = keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(x)))
    info = resolve_layer(crnn, "seq")
    assert info.grid is None and info.spatial_shape == (16,)
    exp = kg.GradCAM(crnn, layer="seq")(np.ones((1, 8, 16, 1), np.float32))
    assert exp.layer_heatmaps.shape == (1, 16)


def test_eigencam_and_scorecam_run_on_the_grid():
    model = token_model(head="cls", attention_scale=1.0)
    x = images_with_bright_patch(0, 0)
    for method in ("eigencam", "scorecam"):
        exp = kg.explain(model, x, method=method, layer="with_cls", **({"verbose": 0} if method == "scorecam" else {}))
        assert exp.layer_heatmaps.shape == (2, 2, 2) and exp.heatmaps.shape == (2, 8, 8)
        assert np.isfinite(exp.heatmaps).all()


def test_eigencam_is_the_first_principal_component_of_the_grid():
    model = token_model()
    x = images_with_bright_patch(1, 1)
    o = patch_embedding(x).reshape(2, 4, 2)
    expected = []
    for sample in o:
        v = np.linalg.svd(sample, full_matrices=False)[2][0]
        m = sample @ v
        expected.append(m if m[np.abs(m).argmax()] > 0 else -m)
    exp = kg.EigenCAM(model, layer="block")(x)
    np.testing.assert_allclose(exp.layer_heatmaps, np.reshape(expected, (2, 2, 2)), rtol=1e-4, atol=1e-5)


def test_ablationcam_zeroes_the_channel_on_the_patch_tokens_only():
    # identity block, mean head: y_c = sum_k HEAD[k, c] * (CLS_k + sum over patches of A_k) / 5; zeroing
    # channel k on the patch tokens (not the class token) drops y_c by HEAD[k, c] * sum_patches(A_k) / 5
    model = token_model()
    x = images_with_bright_patch(0, 1)
    a = patch_embedding(x).reshape(2, 4, 2)
    c = 0
    y = ((CLS[None] + a.sum(axis=1)) / 5.0) @ HEAD[:, c]
    drop = HEAD[:, c][None] * a.sum(axis=1) / 5.0
    cam = kg.AblationCAM(model, layer="block", verbose=0)
    assert not cam.uses_head  # the prefix tokens are not in the grid a head model would be fed
    exp = cam(x, targets=c)
    np.testing.assert_allclose(exp.extras["channel_weights"], drop / y[:, None], rtol=1e-4)
    expected = np.maximum((patch_embedding(x) * (drop / y[:, None])[:, None, None]).sum(-1), 0.0)
    np.testing.assert_allclose(exp.layer_heatmaps, expected, rtol=1e-4, atol=1e-6)


def test_the_model_is_unchanged():
    model = token_model(head="cls", attention_scale=1.0)
    before = [w.copy() for w in model.get_weights()]
    calls = {layer.name: layer.call for layer in model.layers}
    kg.GradCAM(model, reshape=lambda t: tf.reshape(t[:, 1:], (-1, 2, 2, 2)))(images_with_bright_patch(0, 0))
    kg.AblationCAM(model, layer="with_cls", verbose=0)(images_with_bright_patch(0, 0))
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert all(layer.call == calls[layer.name] for layer in model.layers)
