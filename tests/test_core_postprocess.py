"""Post-processing (METHODS.md section 1.5): ReLU -> bilinear resize (half-pixel) -> per-sample min-max.

References are tf.image.resize(method="bilinear") and maps computed by hand in numpy.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gradcam as kg

# the seven gradient methods of the core; methods registered later have their own test files
CORE = ("gradcam", "gradcam++", "smoothgradcam++", "xgradcam", "hirescam", "layercam", "integrated-gradcam")
from oracles import minmax, relu

from keras_gradcam.core.postprocess import normalize, resize

FAST_OPTIONS = {"smoothgradcam++": {"n_samples": 2}, "integrated-gradcam": {"steps": 2}}


def tf_bilinear(maps, size):
    return tf.image.resize(np.asarray(maps, np.float32)[..., None], size, method="bilinear").numpy()[..., 0]


@pytest.mark.parametrize(
    "shape, size",
    [((2, 3, 5), (17, 11)), ((1, 7, 7), (224, 224)), ((2, 9, 6), (4, 5)), ((1, 4, 4), (4, 4)), ((1, 1, 3), (5, 6))],
)
def test_resize_is_tf_image_resize_bilinear(shape, size):
    maps = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    out = resize(tf.constant(maps), size).numpy()
    assert out.shape == (shape[0],) + size
    np.testing.assert_allclose(out, tf_bilinear(maps, size), atol=1e-5)


def test_resize_1d_is_linear_with_half_pixel_centres():
    maps = np.random.default_rng(2).normal(size=(2, 5)).astype(np.float32)
    out = resize(tf.constant(maps), (13,)).numpy()
    ref = tf.image.resize(maps[:, :, None, None], (13, 1), method="bilinear").numpy()[:, :, 0, 0]
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_normalize_per_sample_min_max_and_constant_maps_become_zeros():
    maps = np.stack([np.arange(12.0).reshape(3, 4) + 5, np.full((3, 4), 2.5), np.zeros((3, 4))]).astype(np.float32)
    out = normalize(tf.constant(maps)).numpy()
    np.testing.assert_allclose(out[0], (maps[0] - 5) / 11, atol=1e-6)
    assert out[0].max() == 1.0 and out[0].min() == 0.0
    np.testing.assert_array_equal(out[1:], 0.0)


# --- end to end: a 3x5 layer explained on 17x11 images -------------------------------------------
def _conv_valid(x, kernel, bias):
    """Valid 2-D correlation, by hand: x (N, H, W, 1), kernel (kh, kw, 1, K)."""
    kh, kw = kernel.shape[:2]
    n, h, w, _ = x.shape
    out = np.zeros((n, h - kh + 1, w - kw + 1, kernel.shape[-1]))
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            patch = x[:, i : i + kh, j : j + kw, 0].astype(np.float64)
            out[:, i, j] = np.einsum("nab,abk->nk", patch, kernel[:, :, 0]) + bias
    return out


def test_heatmaps_are_relu_resize_then_minmax_17x11():
    rng = np.random.default_rng(5)
    kernel = rng.normal(size=(15, 7, 1, 2)) * 0.2
    bias = np.array([0.1, 0.2])
    dense_w = np.array([[1.0, -0.7, 0.2], [-0.6, 0.9, 0.3]])
    dense_b = np.array([0.0, 0.1, 0.2])
    inp = keras.Input((17, 11, 1))
    a = keras.layers.Conv2D(2, (15, 7), activation="relu", name="conv")(inp)
    out = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(a))
    model = keras.Model(inp, out)
    model.get_layer("conv").set_weights([kernel, bias])
    model.layers[-1].set_weights([dense_w, dense_b])

    x = rng.normal(size=(3, 17, 11, 1)).astype(np.float32)
    acts = relu(_conv_valid(x, kernel, bias))  # (3, 3, 5, 2)
    layer_map = relu(np.einsum("nijk,k->nij", acts, dense_w[:, 0] / 15))
    assert (layer_map > 0).any()
    expected = minmax(tf_bilinear(layer_map, (17, 11)))

    exp = kg.GradCAM(model, layer="conv")(x, targets=0)
    assert exp.layer_heatmaps.shape == (3, 3, 5) and exp.heatmaps.shape == (3, 17, 11)
    np.testing.assert_allclose(exp.layer_heatmaps, layer_map, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(exp.heatmaps, expected, atol=1e-5)
    # normalising after the resize: exactly 1 at the maximum, 0 at the minimum
    assert exp.heatmaps.dtype == np.float32
    np.testing.assert_array_equal(exp.heatmaps.max(axis=(1, 2)), 1.0)
    np.testing.assert_array_equal(exp.heatmaps.min(axis=(1, 2)), 0.0)


def test_heatmaps_7x7_layer_to_224():
    rng = np.random.default_rng(6)
    kernel = rng.normal(size=(32, 32, 1, 2)) * 0.05
    bias = np.array([0.05, 0.0])
    dense_w = np.array([[0.8, -0.5, 0.1], [0.4, 0.7, -0.2]])
    inp = keras.Input((224, 224, 1))
    a = keras.layers.Conv2D(2, 32, strides=32, activation="relu", name="conv")(inp)
    out = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(a))
    model = keras.Model(inp, out)
    model.get_layer("conv").set_weights([kernel, bias])
    model.layers[-1].set_weights([dense_w, np.zeros(3)])

    x = rng.normal(size=(2, 224, 224, 1)).astype(np.float32)
    blocks = x[..., 0].astype(np.float64).reshape(2, 7, 32, 7, 32)
    acts = relu(np.einsum("niajb,abk->nijk", blocks, kernel[:, :, 0]) + bias)
    layer_map = relu(np.einsum("nijk,k->nij", acts, dense_w[:, 1] / 49))
    assert (layer_map > 0).any() and (layer_map == 0).any()

    exp = kg.GradCAM(model, layer="conv")(x, targets=1)
    np.testing.assert_allclose(exp.layer_heatmaps, layer_map, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(exp.heatmaps, minmax(tf_bilinear(layer_map, (224, 224))), atol=1e-5)
    assert exp.heatmaps.shape == (2, 224, 224)
    np.testing.assert_array_equal(exp.heatmaps.max(axis=(1, 2)), 1.0)
    assert exp.heatmaps.min() >= 0.0


# --- all-zero gradients: zeros, never NaN --------------------------------------------------------
@pytest.fixture(scope="module")
def zero_class_model():
    """Class 2's Dense weights and the whole conv path are such that d S_2 / d A = 0 everywhere."""
    inp = keras.Input((4, 4, 1))
    a = keras.layers.Conv2D(2, 1, activation="relu", name="conv")(inp)
    out = keras.layers.Dense(3, activation="softmax", name="head")(keras.layers.GlobalAveragePooling2D()(a))
    model = keras.Model(inp, out)
    model.get_layer("conv").set_weights([np.array([1.0, -1.0]).reshape(1, 1, 1, 2), np.array([0.0, 0.5])])
    model.get_layer("head").set_weights([np.array([[1.0, -2.0, 0.0], [0.5, 1.0, 0.0]]), np.array([0.1, -0.2, 0.3])])
    return model


@pytest.mark.parametrize("method", CORE)
def test_zero_gradients_give_zero_maps_without_nan(method, zero_class_model):
    x = np.random.default_rng(0).uniform(-1, 1, (2, 4, 4, 1)).astype(np.float32)
    exp = kg.METHODS[method](zero_class_model, layer="conv", **FAST_OPTIONS.get(method, {}))(x, targets=2)
    assert np.isfinite(exp.heatmaps).all() and np.isfinite(exp.layer_heatmaps).all()
    np.testing.assert_array_equal(exp.heatmaps, 0.0)
    np.testing.assert_array_equal(exp.layer_heatmaps, 0.0)
    assert np.isfinite(exp.scores).all()
    np.testing.assert_allclose(exp.scores, 0.3, rtol=1e-6)  # the logit of class 2 is its bias


def test_constant_positive_map_normalises_to_zeros():
    inp = keras.Input((4, 4, 1))
    a = keras.layers.Conv2D(2, 1, activation="relu", name="conv")(inp)
    out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(a))
    model = keras.Model(inp, out)
    model.get_layer("conv").set_weights([np.zeros((1, 1, 1, 2)), np.array([1.0, 2.0])])  # A constant
    model.layers[-1].set_weights([np.array([[1.0, 0.0], [1.0, 0.0]]), np.zeros(2)])
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 1)).astype(np.float32)
    exp = kg.GradCAM(model, layer="conv")(x, targets=0)
    np.testing.assert_allclose(exp.layer_heatmaps, 3.0 / 16, rtol=1e-6)  # (1 + 2) / Z everywhere
    np.testing.assert_array_equal(exp.heatmaps, 0.0)
