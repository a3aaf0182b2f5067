"""Model structures: nested sub-models, unbuilt Sequential, Conv1D/Conv3D, channels_first,
multi-input, multi-output, callable targets, mixed precision, frozen backbones.

Expected maps are computed in numpy from the hand-set weights, or taken from an equivalent flat,
channels-last, float32 model whose correctness is checked by hand elsewhere.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from oracles import close, minmax, relu, same_explanation

import keras_gradcam as kg


def same(a, b, atol=1e-5):
    same_explanation(a, b, atol=atol, detail_atol=1e-6, labels=False)


RNG = np.random.default_rng(21)
K_IN = RNG.normal(scale=0.7, size=(3, 3, 1, 2))  # inner: 3x3 conv, 2 channels
B_IN = np.array([0.1, -0.05])
K_IN2 = RNG.normal(scale=0.8, size=(1, 1, 2, 3))  # inner2: 1x1 conv, 3 channels
B_IN2 = np.array([0.05, 0.1, 0.0])
W_OUT = RNG.normal(size=(3, 3))
B_OUT = np.array([0.1, 0.0, -0.1])
X6 = RNG.normal(size=(3, 6, 6, 1)).astype(np.float32)


def backbone(trainable=True):
    inp = keras.Input((6, 6, 1))
    a = keras.layers.Conv2D(2, 3, padding="same", activation="relu", name="inner")(inp)
    a = keras.layers.Conv2D(3, 1, activation="relu", name="inner2")(a)
    bb = keras.Model(inp, a, name="backbone")
    bb.get_layer("inner").set_weights([K_IN, B_IN])
    bb.get_layer("inner2").set_weights([K_IN2, B_IN2])
    bb.trainable = trainable
    return bb


def head_layers():
    dense = keras.layers.Dense(3, activation="softmax", name="head")
    return [keras.layers.GlobalAveragePooling2D(name="gap"), dense]


def set_head(model):
    model.get_layer("head").set_weights([W_OUT, B_OUT])
    return model


def flat_model():
    inp = keras.Input((6, 6, 1))
    a = keras.layers.Conv2D(2, 3, padding="same", activation="relu", name="inner")(inp)
    a = keras.layers.Conv2D(3, 1, activation="relu", name="inner2")(a)
    for layer in head_layers():
        a = layer(a)
    m = keras.Model(inp, a)
    m.get_layer("inner").set_weights([K_IN, B_IN])
    m.get_layer("inner2").set_weights([K_IN2, B_IN2])
    return set_head(m)


def nested_functional(trainable=True):
    inp = keras.Input((6, 6, 1))
    a = backbone(trainable)(inp)
    for layer in head_layers():
        a = layer(a)
    return set_head(keras.Model(inp, a))


def nested_sequential():
    return set_head(keras.Sequential([keras.Input((6, 6, 1)), backbone(), *head_layers()]))


@pytest.fixture(scope="module")
def flat_reference():
    m = flat_model()
    return {
        "inner": kg.GradCAMPlusPlus(m, layer="inner")(X6, targets=1),
        "inner2": kg.GradCAMPlusPlus(m, layer="inner2")(X6, targets=1),
    }


@pytest.mark.parametrize("build", [nested_functional, nested_sequential], ids=["functional", "sequential"])
def test_nested_backbone_equals_flat_model(build, flat_reference):
    model = build()
    exp = kg.GradCAMPlusPlus(model, layer="backbone/inner")(X6, targets=1)
    assert exp.layer == "backbone/inner"
    same(exp, flat_reference["inner"])
    assert exp.layer_heatmaps.max() > 0
    # layer=None: the last spatial layer, inside the nested model
    last = kg.GradCAMPlusPlus(model)(X6, targets=1)
    assert last.layer == "backbone/inner2"
    same(last, flat_reference["inner2"])


def test_frozen_backbone_still_gets_gradients(flat_reference):
    model = nested_functional(trainable=False)
    assert not model.get_layer("backbone").trainable
    exp = kg.GradCAMPlusPlus(model, layer="backbone/inner")(X6, targets=1)
    assert np.abs(exp.layer_heatmaps).max() > 0
    same(exp, flat_reference["inner"])
    assert not model.get_layer("backbone").trainable
    assert all(not w.trainable for w in model.get_layer("backbone").weights)


def test_frozen_flat_layers_still_get_gradients():
    model = flat_model()
    for layer in model.layers:
        layer.trainable = False
    reference = flat_model()
    same(kg.GradCAM(model, layer="inner")(X6, targets=1), kg.GradCAM(reference, layer="inner")(X6, targets=1))
    assert not any(layer.trainable for layer in model.layers)


def test_unbuilt_sequential_is_built_and_explained():
    model = keras.Sequential(
        [keras.layers.Conv2D(2, 1, activation="relu", name="conv"), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)]
    )
    assert not model.built
    x = np.random.default_rng(4).normal(size=(2, 4, 4, 3)).astype(np.float32)
    exp = kg.GradCAM(model, layer="conv")(x, targets=1)
    kernel, bias = model.get_layer("conv").get_weights()
    w, b = model.layers[-1].get_weights()
    acts = relu(x.astype(np.float64) @ kernel[0, 0] + bias)
    expected = relu(acts @ (w[:, 1] / 16))
    close(exp.layer_heatmaps, expected)
    close(exp.scores, acts.mean(axis=(1, 2)) @ w[:, 1] + b[1], rtol=1e-5)
    # layer=None also works on a fresh unbuilt model
    fresh = keras.Sequential([keras.layers.Conv2D(2, 1, name="c"), keras.layers.Flatten(), keras.layers.Dense(2)])
    assert kg.explain(fresh, x, method="gradcam").layer == "c"


def test_conv1d_maps_have_the_time_axis():
    rng = np.random.default_rng(8)
    kernel, bias = rng.normal(size=(2, 2, 3)), np.array([0.1, 0.0, -0.1])
    w = rng.normal(size=(3, 3))
    inp = keras.Input((8, 2))
    a = keras.layers.Conv1D(3, 2, strides=2, activation="relu", name="conv")(inp)
    model = keras.Model(inp, keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling1D()(a)))
    model.get_layer("conv").set_weights([kernel, bias])
    model.get_layer("head").set_weights([w, np.zeros(3)])
    x = rng.normal(size=(3, 8, 2)).astype(np.float32)

    pairs = x.astype(np.float64).reshape(3, 4, 2, 2)  # (n, t, tap, channel)
    acts = relu(np.einsum("ntac,ack->ntk", pairs, kernel) + bias)
    layer_map = relu(acts @ (w[:, 2] / 4))
    up = tf.image.resize(layer_map[:, :, None, None].astype(np.float32), (8, 1), method="bilinear").numpy()[..., 0, 0]

    exp = kg.GradCAM(model, layer="conv")(x, targets=2)
    assert exp.heatmaps.shape == (3, 8) and exp.layer_heatmaps.shape == (3, 4)
    close(exp.layer_heatmaps, layer_map)
    close(exp.heatmaps, minmax(up), atol=1e-5)


def test_conv3d_maps_have_depth_height_width():
    rng = np.random.default_rng(9)
    kernel, bias = rng.normal(scale=0.5, size=(2, 2, 2, 1, 2)), np.array([0.1, 0.05])
    w = rng.normal(size=(2, 3))
    inp = keras.Input((4, 4, 4, 1))
    a = keras.layers.Conv3D(2, 2, strides=2, activation="relu", name="conv")(inp)
    model = keras.Model(inp, keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling3D()(a)))
    model.get_layer("conv").set_weights([kernel, bias])
    model.get_layer("head").set_weights([w, np.zeros(3)])
    x = rng.normal(size=(2, 4, 4, 4, 1)).astype(np.float32)

    blocks = x[..., 0].astype(np.float64).reshape(2, 2, 2, 2, 2, 2, 2)  # n, d, a, h, b, w, c
    acts = relu(np.einsum("ndahbwc,abck->ndhwk", blocks, kernel[..., 0, :]) + bias)
    c = 0
    layer_map = relu(acts @ (w[:, c] / 8))
    assert np.ptp(layer_map) > 0
    # trilinear = linear along each axis in turn (half-pixel centres)
    hw = tf.image.resize(layer_map.reshape(4, 2, 2, 1).astype(np.float32), (4, 4), method="bilinear").numpy()
    d = tf.image.resize(hw.reshape(2, 2, 16, 1), (4, 16), method="bilinear").numpy().reshape(2, 4, 4, 4)

    exp = kg.GradCAM(model, layer="conv")(x, targets=c)
    assert exp.heatmaps.shape == (2, 4, 4, 4) and exp.layer_heatmaps.shape == (2, 2, 2, 2)
    close(exp.layer_heatmaps, layer_map)
    close(exp.heatmaps, minmax(d), atol=1e-5)


def test_channels_first_conv_matches_channels_last(needs_channels_first):
    rng = np.random.default_rng(10)
    kernel, bias = rng.normal(size=(2, 2, 2, 3)), np.array([0.1, -0.1, 0.2])
    w = rng.normal(size=(3, 3))

    def build(fmt):
        inp = keras.Input((2, 4, 6) if fmt == "channels_first" else (4, 6, 2))
        a = keras.layers.Conv2D(3, 2, strides=2, activation="relu", data_format=fmt, name="conv")(inp)
        p = keras.layers.GlobalAveragePooling2D(data_format=fmt)(a)
        m = keras.Model(inp, keras.layers.Dense(3, name="head")(p))
        m.get_layer("conv").set_weights([kernel, bias])
        m.get_layer("head").set_weights([w, np.zeros(3)])
        return m

    x_last = rng.normal(size=(3, 4, 6, 2)).astype(np.float32)
    x_first = np.ascontiguousarray(x_last.transpose(0, 3, 1, 2))
    blocks = x_last.astype(np.float64).reshape(3, 2, 2, 3, 2, 2)  # n, i, a, j, b, c
    acts = relu(np.einsum("niajbc,abck->nijk", blocks, kernel) + bias)  # (3, 2, 3, 3)
    layer_map = relu(acts @ (w[:, 1] / 6))
    assert np.ptp(layer_map) > 0

    first = kg.GradCAM(build("channels_first"), layer="conv")(x_first, targets=1)
    last = kg.GradCAM(build("channels_last"), layer="conv")(x_last, targets=1)
    assert first.heatmaps.shape == (3, 4, 6) and first.layer_heatmaps.shape == (3, 2, 3)
    close(first.layer_heatmaps, layer_map)
    same(first, last)


# --- multi-input / multi-output -------------------------------------------------------------------
K_MI = np.array([0.9, -0.7])
B_MI = np.array([0.0, 0.4])
V_MI = np.array([[0.5, -0.3], [0.2, 0.8]])
W_MI = np.array([[1.0, -0.5, 0.2], [-0.8, 0.6, 0.4], [0.3, 0.3, -0.2], [0.1, -0.4, 0.5]])
B_MI3 = np.array([0.0, 0.1, 0.2])


def multi_input_model(as_dict):
    img, vec = keras.Input((4, 4, 1), name="img"), keras.Input((2,), name="vec")
    a = keras.layers.Conv2D(2, 1, activation="relu", name="conv")(img)
    v = keras.layers.Dense(2, name="vdense")(vec)
    h = keras.layers.Concatenate()([keras.layers.GlobalAveragePooling2D()(a), v])
    out = keras.layers.Dense(3, activation="softmax", name="head")(h)
    m = keras.Model({"img": img, "vec": vec} if as_dict else [img, vec], out)
    m.get_layer("conv").set_weights([K_MI.reshape(1, 1, 1, 2), B_MI])
    m.get_layer("vdense").set_weights([V_MI, np.zeros(2)])
    m.get_layer("head").set_weights([W_MI, B_MI3])
    return m


XI = np.random.default_rng(13).uniform(-1, 1, (3, 4, 4, 1)).astype(np.float32)
XV = np.random.default_rng(14).normal(size=(3, 2)).astype(np.float32)


def multi_input_expected(c):
    acts = relu(XI.astype(np.float64) * K_MI + B_MI)
    logits = np.concatenate([acts.mean(axis=(1, 2)), XV @ V_MI], axis=1) @ W_MI + B_MI3
    return relu(acts @ (W_MI[:2, c] / 16)), logits[:, c]


@pytest.mark.parametrize("kind", ["list", "dict", "dict-other-key-order"])
def test_multi_input_models(kind):
    model = multi_input_model(as_dict=kind != "list")
    # Keras matches dict inputs by name, whatever the key order
    images = {"list": [XI, XV], "dict": {"img": XI, "vec": XV}, "dict-other-key-order": {"vec": XV, "img": XI}}[kind]
    exp = kg.GradCAM(model, layer="conv")(images, targets=0)
    layer_map, scores = multi_input_expected(0)
    assert exp.heatmaps.shape == (3, 4, 4)
    close(exp.layer_heatmaps, layer_map)
    close(exp.scores, scores)


@pytest.fixture(scope="module")
def multi_output_model():
    inp = keras.Input((4, 4, 1))
    a = keras.layers.Conv2D(2, 1, activation="relu", name="conv")(inp)
    p = keras.layers.GlobalAveragePooling2D()(a)
    cls = keras.layers.Dense(3, activation="softmax", name="cls")(p)
    aux = keras.layers.Dense(2, name="aux")(p)
    m = keras.Model(inp, [cls, aux])
    m.get_layer("conv").set_weights([K_MI.reshape(1, 1, 1, 2), B_MI])
    m.get_layer("cls").set_weights([W_MI[:2], B_MI3])
    m.get_layer("aux").set_weights([V_MI, np.array([0.1, -0.1])])
    return m


def test_multi_output_needs_output_or_a_callable(multi_output_model):
    with pytest.raises(ValueError, match="output="):
        kg.GradCAM(multi_output_model, layer="conv")(XI)
    acts = relu(XI.astype(np.float64) * K_MI + B_MI)
    pooled = acts.mean(axis=(1, 2))

    aux = kg.GradCAM(multi_output_model, layer="conv", output=1)(XI, targets=1)
    close(aux.layer_heatmaps, relu(acts @ (V_MI[:, 1] / 16)))
    close(aux.scores, pooled @ V_MI[:, 1] - 0.1)

    cls = kg.GradCAM(multi_output_model, layer="conv", output="cls")(XI, targets=0)
    close(cls.layer_heatmaps, relu(acts @ (W_MI[:2, 0] / 16)))
    close(cls.scores, pooled @ W_MI[:2, 0] + B_MI3[0])  # the logit, softmax stripped

    diff = kg.GradCAM(multi_output_model, layer="conv")(XI, targets=lambda out: out[1][:, 1] - out[1][:, 0])
    assert diff.targets is None
    close(diff.layer_heatmaps, relu(acts @ ((V_MI[:, 1] - V_MI[:, 0]) / 16)))
    close(diff.scores, pooled @ (V_MI[:, 1] - V_MI[:, 0]) - 0.2)


def test_callable_target_on_a_single_output():
    inp = keras.Input((4, 4, 1))
    a = keras.layers.Conv2D(2, 1, activation="relu", name="conv")(inp)
    model = keras.Model(inp, keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D()(a)))
    model.get_layer("conv").set_weights([K_MI.reshape(1, 1, 1, 2), B_MI])
    model.get_layer("head").set_weights([W_MI[:2], B_MI3])
    acts = relu(XI.astype(np.float64) * K_MI + B_MI)
    logits = acts.mean(axis=(1, 2)) @ W_MI[:2] + B_MI3
    exp = kg.GradCAM(model, layer="conv")(XI, targets=lambda out: out[:, 1] - out[:, 0])
    assert exp.targets is None
    np.testing.assert_array_equal(exp.predictions, logits.argmax(-1))
    expected = relu(acts @ ((W_MI[:2, 1] - W_MI[:2, 0]) / 16))
    assert (expected > 0).any()
    close(exp.layer_heatmaps, expected)
    close(exp.scores, logits[:, 1] - logits[:, 0])


# --- mixed precision ------------------------------------------------------------------------------
@pytest.fixture
def restore_policy():
    before = keras.mixed_precision.global_policy().name
    yield
    keras.mixed_precision.set_global_policy(before)
    assert keras.mixed_precision.global_policy().name == before


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_mixed_float16_model(method, restore_policy):
    def build():
        inp = keras.Input((6, 6, 1))
        a = keras.layers.Conv2D(2, 3, padding="same", activation="relu", name="inner")(inp)
        a = keras.layers.Conv2D(3, 1, activation="relu", name="inner2")(a)
        p = keras.layers.GlobalAveragePooling2D()(a)
        out = keras.layers.Dense(3, activation="softmax", dtype="float32", name="head")(p)
        m = keras.Model(inp, out)
        m.get_layer("inner").set_weights([K_IN, B_IN])
        m.get_layer("inner2").set_weights([K_IN2, B_IN2])
        return set_head(m)

    reference = kg.METHODS[method](build(), layer="inner")(X6, targets=1)
    try:
        keras.mixed_precision.set_global_policy("mixed_float16")
        half = build()
        assert half.get_layer("inner").compute_dtype == "float16"
        exp = kg.METHODS[method](half, layer="inner")(X6, targets=1)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert exp.heatmaps.dtype == np.float32 and exp.layer_heatmaps.dtype == np.float32
    assert np.isfinite(exp.heatmaps).all() and np.isfinite(exp.scores).all()
    assert reference.layer_heatmaps.max() > 0
    np.testing.assert_allclose(exp.heatmaps, reference.heatmaps, atol=2e-2)
    np.testing.assert_allclose(exp.scores, reference.scores, rtol=1e-2, atol=1e-2)
