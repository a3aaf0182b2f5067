"""Neuron importance: Grad-CAM channel weights of a conv -> GAP -> Dense net are w_kc / Z by hand."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from models import conv_gap_model
from oracles import minmax

from keras_gradcam.neurons import NeuronImportance, neuron_importance, textual_explanation

# 1x1 conv with 5 channels -> 2x2 average pooling (the layer, 3x3x5, Z = 9) -> GAP -> Dense(3).
# The logit is y_c = sum_k DENSE[k, c] * mean_ij A^k_ij + b_c, so d y_c / d A^k_ij = DENSE[k, c] / Z and
# the Grad-CAM weight (the spatial mean of that gradient) is alpha_k = DENSE[k, c] / 9.
KERNEL = np.array([1.0, -1.0, 0.5, 2.0, -0.3], np.float32).reshape(1, 1, 1, 5)
BIAS = np.array([0.0, 0.5, 0.3, -0.2, 0.1], np.float32)
DENSE = np.array(
    [[2.0, -1.0, 0.5], [1.0, 1.5, -2.0], [-0.5, 0.2, 0.1], [0.25, -3.0, 1.0], [-1.5, 0.7, 0.0]], np.float32
)


@pytest.fixture(scope="module")
def model():
    return conv_gap_model(KERNEL, BIAS, DENSE, np.zeros(3, np.float32), pool=2, head_name="dense")


X = np.random.default_rng(0).uniform(-1, 1, size=(3, 6, 6, 1)).astype(np.float32)
TARGETS = np.array([0, 1, 2])
NAMES = {0: "stripes", 1: "water", 3: "fur", 4: "sky"}  # channel 2 has no concept


def pooled(x):
    a = x * KERNEL[0, 0] + BIAS
    return a.reshape(len(x), 3, 2, 3, 2, 5).mean(axis=(2, 4))


def test_weights_top_bottom_and_maps_by_hand(model):
    ni = neuron_importance(model, X, "pool", TARGETS, k=2)
    alpha = DENSE[:, TARGETS].T / 9.0  # (N, K)
    np.testing.assert_allclose(ni.weights, alpha, rtol=1e-5, atol=1e-7)
    order = np.argsort(-alpha, axis=1, kind="stable")
    np.testing.assert_array_equal(ni.top_channels, order[:, :2])
    np.testing.assert_array_equal(ni.bottom_channels, order[:, ::-1][:, :2])
    np.testing.assert_allclose(ni.top_weights, np.take_along_axis(alpha, order[:, :2], 1), rtol=1e-6)
    np.testing.assert_allclose(ni.bottom_weights, np.take_along_axis(alpha, order[:, ::-1][:, :2], 1), rtol=1e-6)
    acts = pooled(X)
    for i in range(len(X)):
        for j, c in enumerate(ni.top_channels[i]):
            # upsample (3 -> 6 misses interior extremes) then min-max
            expected = minmax(tf.image.resize(acts[i, :, :, c, None], (6, 6)).numpy()[None, ..., 0])[0]
            np.testing.assert_allclose(ni.top_maps[i, j], expected, atol=1e-5)
    assert ni.bottom_maps.shape == (3, 2, 6, 6) and isinstance(ni, NeuronImportance) and len(ni) == 3
    assert ni.targets.tolist() == TARGETS.tolist() and ni.layer == "pool" and ni.texts is None


def test_textual_explanations_name_the_important_concepts(model):
    classes = ["zebra", "lake", "cat"]
    ni = neuron_importance(model, X, "pool", TARGETS, k=2, channel_names=NAMES, class_names=classes, maps=False)
    # class 0 weights * 9: (2.0, 1.0, -0.5, 0.25, -1.5): named positives stripes > water > fur; negatives sky
    assert ni.texts[0] == "zebra: positively important: stripes, water; negatively important: sky"
    # class 1: (-1.0, 1.5, 0.2, -3.0, 0.7): positives water > sky (channel 2 unnamed); negatives fur < stripes
    assert ni.texts[1] == "lake: positively important: water, sky; negatively important: fur, stripes"
    # class 2: (0.5, -2.0, 0.1, 1.0, 0.0): sky's weight is 0, neither side
    assert ni.texts[2] == "cat: positively important: fur, stripes; negatively important: water"
    assert ni.top_maps is None and ni.bottom_maps is None


def test_counterfactual_negates_and_batch_equals_one_by_one(model):
    base = neuron_importance(model, X, "pool", TARGETS, k=3)
    cf = neuron_importance(model, X, "pool", TARGETS, k=3, counterfactual=True)
    np.testing.assert_allclose(cf.weights, -base.weights, rtol=1e-6)
    np.testing.assert_array_equal(cf.top_channels, base.bottom_channels)
    for i in range(len(X)):
        one = neuron_importance(model, X[i : i + 1], "pool", TARGETS[i : i + 1], k=3, batch_size=1)
        np.testing.assert_allclose(one.weights, base.weights[i : i + 1], rtol=1e-6)
        np.testing.assert_allclose(one.top_maps, base.top_maps[i : i + 1], atol=1e-6)


def test_textual_explanation_helper_and_errors(model):
    assert (
        textual_explanation([0.5, -0.2, 0.1], {0: "stripes", 1: "water"}, k=2, target=3)
        == "class 3: positively important: stripes; negatively important: water"
    )
    none = "the explained score: positively important: none; negatively important: none"
    assert textual_explanation([0.0, 0.0], {0: "a"}) == none
    with pytest.raises(TypeError, match="channel_names must be a dict"):
        neuron_importance(model, X, "pool", k=2, channel_names=["stripes"])
    with pytest.raises(ValueError, match="only 5 channels"):
        neuron_importance(model, X, "pool", k=6)
    with pytest.raises(ValueError, match="k must be a positive int"):
        textual_explanation([1.0], {0: "a"}, k=0)
