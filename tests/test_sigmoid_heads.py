"""Sigmoid heads (multi-label and one-unit binary classifiers), against numpy by hand.

The model: a 1x1 ReLU convolution (the explained layer, at input resolution so no resizing is
involved), global average pooling and a Dense head with a sigmoid. With ``A`` the layer's
activations, ``Z`` its number of positions and ``W`` the Dense kernel, the logit of class c is
``S_c = mean_ij(A) @ W[:, c] + b_c`` and ``dS_c / dA^k_ij = W[k, c] / Z``; the sigmoid multiplies
that gradient by ``sigma'(S_c) <= 1/4``, so explaining the output instead of the logit changes
every un-normalised map.
"""

from __future__ import annotations

import numpy as np
import pytest
from models import conv_gap_model
from oracles import close, relu, sigmoid

from keras_gradcam import metrics
from keras_gradcam.core.binary import two_classes
from keras_gradcam.methods.gradcam import GradCAM
from keras_gradcam.methods.gradcam_plusplus import GradCAMPlusPlus
from keras_gradcam.methods.guided import GuidedBackprop
from keras_gradcam.methods.scorecam import ScoreCAM

RNG = np.random.default_rng(7)
CONV_W = np.array([[[[1.0, -0.5, 0.8], [-0.4, 1.2, 0.6]]]], "float32")  # every channel varies over X
CONV_B = np.array([0.2, 0.3, -0.1], "float32")
X = RNG.uniform(0.0, 1.0, size=(3, 4, 4, 2)).astype("float32")


def model_with(dense_w, dense_b, activation="sigmoid"):
    return conv_gap_model(CONV_W, CONV_B, dense_w, dense_b, input_shape=(4, 4, 2), conv_activation="relu",
                          activation=activation)


def np_acts(x):
    return relu(np.einsum("bhwc,ck->bhwk", x, CONV_W[0, 0]) + CONV_B)


def np_logits(x, w, b):
    return np_acts(x).mean(axis=(1, 2)) @ w + b


def np_gradcam(x, w, t, scale=1.0):
    """Layer map of Grad-CAM for classes ``t``; ``scale`` (B,) multiplies the gradient."""
    a = np_acts(x)
    alpha = w[:, t].T / 16.0 * np.reshape(scale, (-1, 1))  # (B, K): mean of the constant gradient
    return relu(np.einsum("bhwk,bk->bhw", a, alpha))


# multi-label: three sigmoid units
W3 = np.array([[2.0, -1.0, 0.5], [-1.5, 2.5, 1.0], [1.0, 0.5, -2.0]], "float32")
B3 = np.array([0.5, -0.5, 1.0], "float32")
# binary: one sigmoid unit, explained as class 0 (negative, logit -s) and class 1 (positive, s)
W1 = np.array([[1.0], [-2.0], [0.5]], "float32")
B1 = np.array([0.55], "float32")


def test_default_explains_the_logit_before_the_sigmoid():
    model = model_with(W3, B3)
    t = np.array([0, 2, 1])
    exp = GradCAM(model, "conv")(X, targets=t)
    logits = np_logits(X, W3, B3)
    close(exp.scores, logits[np.arange(3), t], rtol=1e-5)
    close(exp.layer_heatmaps, np_gradcam(X, W3, t), rtol=1e-4)
    # the gradient of the output is smaller by sigma'(S) <= 1/4: a wrong head would not pass
    assert not np.allclose(exp.layer_heatmaps, np_gradcam(X, W3, t, scale=0.25), rtol=0.1)
    # the model is untouched: still a sigmoid, same outputs
    assert model.get_layer("head").activation.__name__ == "sigmoid"
    close(model(X, training=False), sigmoid(logits), rtol=1e-5)


def test_score_output_explains_the_sigmoid_as_it_is():
    model = model_with(W3, B3)
    t = np.array([1, 1, 0])
    exp = GradCAM(model, "conv", score="output")(X, targets=t)
    s = np_logits(X, W3, B3)[np.arange(3), t]
    close(exp.scores, sigmoid(s), rtol=1e-5)
    close(exp.layer_heatmaps, np_gradcam(X, W3, t, scale=sigmoid(s) * (1 - sigmoid(s))), rtol=1e-4)


def test_two_classes_of_a_binary_unit_by_hand():
    """The one place that turns a one-unit head into two classes: [-s, s] for logits, [1 - p, p] for probabilities."""
    close(two_classes(np.array([[0.5], [-2.0]], "float32")), [[-0.5, 0.5], [2.0, -2.0]])
    close(two_classes(np.array([[0.25], [1.0]], "float32"), probability=True), [[0.75, 0.25], [0.0, 1.0]])
    kernel = np.array([[1.5], [-0.5], [0.0]], "float32")  # a (channels, 1) head kernel: linear in the logit
    close(two_classes(kernel), [[-1.5, 1.5], [0.5, -0.5], [0.0, 0.0]])
    three = np.zeros((2, 3), "float32")
    assert two_classes(three) is three and two_classes(np.zeros((2, 1, 1))).shape == (2, 1, 1)  # not binary units


def test_binary_head_is_two_classes_negative_then_positive():
    """One sigmoid unit: class 1 scores the logit s, class 0 its negation -s; top-1 is the prediction."""
    model = model_with(W1, B1)
    s = np_logits(X, W1, B1)[:, 0]
    assert (s > 0).any() and (s < 0).any()  # both predictions occur
    top = GradCAM(model, "conv")(X)
    np.testing.assert_array_equal(top.targets, (s > 0).astype(int))
    close(top.scores, np.abs(s), rtol=1e-5)
    pos = GradCAM(model, "conv")(X, targets=1)
    close(pos.scores, s, rtol=1e-5)
    close(pos.layer_heatmaps, np_gradcam(X, W1, np.zeros(3, int)), rtol=1e-4)
    neg = GradCAM(model, "conv")(X, targets=0)
    close(neg.scores, -s, rtol=1e-5)
    close(neg.layer_heatmaps, np_gradcam(X, -W1, np.zeros(3, int)), rtol=1e-4)
    assert pos.layer_heatmaps.max() > 0 and neg.layer_heatmaps.max() > 0
    with pytest.raises(IndexError, match=r"0 \.\. 1"):
        GradCAM(model, "conv")(X, targets=2)
    # the output as it is: class scores 1 - p and p
    out = GradCAM(model, "conv", score="output")(X, targets=[0, 1, 0])
    close(out.scores, [1 - sigmoid(s[0]), sigmoid(s[1]), 1 - sigmoid(s[2])], rtol=1e-5)


@pytest.mark.parametrize("cls", [GradCAM, GradCAMPlusPlus])
def test_binary_counterfactual_of_one_class_is_the_other(cls):
    """The negative class's logit is -s, as for a head with W, b negated, and as negated gradients."""
    binary, flipped = model_with(W1, B1), model_with(-W1, -B1)
    negative = cls(binary, "conv")(X, targets=0)
    close(negative.layer_heatmaps, cls(flipped, "conv")(X, targets=1).layer_heatmaps, rtol=1e-4, atol=1e-6)
    counter = cls(binary, "conv", counterfactual=True)(X, targets=1)
    close(counter.layer_heatmaps, negative.layer_heatmaps, rtol=1e-4, atol=1e-6)


def test_scorecam_weights_a_binary_head_by_its_sigmoid():
    """Score-CAM's weight is the class probability of the masked input: p or 1 - p, not a 1-unit softmax (= 1)."""
    model = model_with(W1, B1)
    t = np.array([1, 0, 1])
    exp = ScoreCAM(model, "conv", verbose=0)(X, targets=t)
    a = np_acts(X)  # (B, 4, 4, 3), already at input resolution
    lo, hi = a.min(axis=(1, 2), keepdims=True), a.max(axis=(1, 2), keepdims=True)
    masks = (a - lo) / (hi - lo)
    assert (hi - lo).min() > 1e-3  # no constant channel: the reference needs no special case
    masked = X[:, None] * np.moveaxis(masks, -1, 1)[..., None]  # (B, K, 4, 4, 2)
    p = sigmoid(np_logits(masked.reshape(-1, 4, 4, 2), W1, B1)).reshape(3, 3)  # (B, K)
    probs = np.where(t[:, None] == 1, p, 1 - p)
    close(exp.layer_heatmaps, relu(np.einsum("bhwk,bk->bhw", a, probs)), rtol=1e-4)
    assert not np.allclose(exp.layer_heatmaps, relu(a.sum(axis=-1)), rtol=1e-2)  # softmax weights (all 1)


def test_average_drop_reads_the_sigmoid_probability():
    model = model_with(W1, B1)
    h = RNG.uniform(0.0, 1.0, size=(3, 4, 4)).astype("float32")
    p, po = sigmoid(np_logits(X, W1, B1))[:, 0], sigmoid(np_logits(X * h[..., None], W1, B1))[:, 0]
    y, o = np.where(p > 0.5, p, 1 - p), np.where(p > 0.5, po, 1 - po)  # the predicted class, on both
    close(metrics.average_drop(model, X, h, reduction=None), 100.0 * np.maximum(0.0, y - o) / y, rtol=1e-4)
    got = metrics.average_drop(model, X, h, targets=1, reduction=None)
    close(got, 100.0 * np.maximum(0.0, p - po) / p, rtol=1e-4)
    logit_space = metrics.average_drop(model, X, h, targets=1, score="logit", reduction=None)
    s, so = np_logits(X, W1, B1)[:, 0], np_logits(X * h[..., None], W1, B1)[:, 0]
    close(logit_space, np.where(s > 0, 100.0 * np.maximum(0.0, s - so) / np.where(s > 0, s, 1), np.nan), rtol=1e-4)


def test_guided_backprop_differentiates_the_logit_of_a_sigmoid_head():
    """On its copy of the model the sigmoid is removed: same attributions as a linear head."""
    sig, lin = model_with(W3, B3), model_with(W3, B3, activation=None)
    t = np.array([0, 1, 2])
    a_sig = GuidedBackprop(sig)(X, targets=t).attributions
    close(a_sig, GuidedBackprop(lin)(X, targets=t).attributions, rtol=1e-4, atol=1e-7)
    assert np.abs(a_sig).max() > 0
    assert sig.get_layer("head").activation.__name__ == "sigmoid"


def test_guided_backprop_binary_negative_class_is_the_flipped_head():
    binary, flipped = model_with(W1, B1), model_with(-W1, -B1)
    neg = GuidedBackprop(binary)(X, targets=0)
    close(neg.attributions, GuidedBackprop(flipped)(X, targets=1).attributions, rtol=1e-4, atol=1e-7)
    close(neg.scores, -np_logits(X, W1, B1)[:, 0], rtol=1e-5)
