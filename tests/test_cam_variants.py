"""CAM, Grad-CAM element-wise and Eigen-Grad-CAM (METHODS.md 2.17-2.19), against numpy by hand.

Tiny models with hand-set weights: a 1x1 convolution on a 4x4 one-channel input, so the layer's
activations are ``A^0 = ReLU(x)`` and ``A^1 = ReLU(0.5 - x)``, then either global average pooling
and a Dense layer (CAM's architecture: its map is read from the Dense kernel) or flatten and a
Dense layer (where the gradient ``g`` at each position is the Dense weight of that position, so
the element-wise methods have non-constant gradients). Expected maps are the papers' formulas on
these numbers; each test also checks that the plausible wrong formula gives another answer.
"""

import keras
import numpy as np
import pytest
from models import conv_gap_model
from oracles import close, minmax, relu

import keras_gradcam as kg

K1 = np.array([1.0, -1.0])
B1 = np.array([0.0, 0.5])
X = np.random.default_rng(0).uniform(-1.0, 1.0, (3, 4, 4, 1)).astype(np.float32)
Z = 16  # 4 x 4 positions
W_GAP = np.array([[1.0, -2.0, 0.5], [0.5, 1.0, -1.0]])  # (K=2, C=3): mixed signs in classes 1 and 2
B_GAP = np.array([0.1, -0.2, 0.3])


def acts(x):
    """The conv layer's activations by hand: (N, 4, 4, 2)."""
    return relu(x.astype(np.float64) * K1 + B1)


def gap_model(head=W_GAP, activation="softmax", conv_activation="relu"):
    return conv_gap_model(K1.reshape(1, 1, 1, 2), B1, head, B_GAP, input_shape=(4, 4, 1),
                          conv_activation=conv_activation, activation=activation, gap_name="gap")


def differs(a, b, by=0.05):
    return np.abs(np.asarray(a) - np.asarray(b)).max() > by


# --- CAM ------------------------------------------------------------------------------------------
def test_cam_is_the_head_weighted_sum_by_hand():
    model = gap_model()
    a = acts(X)
    logits = a.mean(axis=(1, 2)) @ W_GAP + B_GAP
    top = logits.argmax(axis=1)
    m = np.einsum("nijk,nk->nij", a, W_GAP[:, top].T)  # M^c = sum_k W_kc A^k
    exp = kg.CAM(model, "conv")(X)
    np.testing.assert_array_equal(exp.targets, top)
    close(exp.layer_heatmaps, relu(m))
    close(exp.heatmaps, minmax(relu(m)), atol=1e-5)  # the 4x4 map is not resized for a 4x4 input
    # explicit classes, signed map (the paper's): per sample, and the bias is not part of it
    classes = np.array([1, 2, 1])
    signed = kg.CAM(model, "conv", relu=False)(X, targets=classes)
    m = np.einsum("nijk,nk->nij", a, W_GAP[:, classes].T)
    close(signed.layer_heatmaps, m)
    close(signed.heatmaps, minmax(m), atol=1e-5)
    assert (m < 0).any() and differs(minmax(m), minmax(relu(m)))  # relu=False is not a no-op here
    close(m.mean(axis=(1, 2)) + B_GAP[classes], logits[np.arange(3), classes])  # the map decomposes the score


@pytest.mark.filterwarnings("ignore:gradcam.*maps are all zero:RuntimeWarning")  # the counterfactual maps
def test_cam_equals_gradcam_on_a_gap_head():
    """Grad-CAM paper section 3: dS/dA^k_ij = W_kc / Z, so Grad-CAM's pre-ReLU map is M^c / Z."""
    head = np.random.default_rng(1).normal(size=(2, 3))  # every class has some positive and some negative evidence
    model = gap_model(head)
    classes = [0, 1, 2]
    cam = kg.CAM(model, "conv")(X, targets=classes)
    signed = kg.CAM(model, "conv", relu=False)(X, targets=classes)
    grad = kg.GradCAM(model, "conv")(X, targets=classes)
    negative = kg.GradCAM(model, "conv", counterfactual=True)(X, targets=classes)  # ReLU(-M/Z)
    close(cam.heatmaps, grad.heatmaps, atol=1e-5)
    close(cam.layer_heatmaps, Z * grad.layer_heatmaps, rtol=1e-4, atol=1e-5)
    close(signed.layer_heatmaps, Z * (grad.layer_heatmaps - negative.layer_heatmaps), rtol=1e-4, atol=1e-5)
    assert differs(cam.layer_heatmaps, grad.layer_heatmaps, by=1e-3)  # the factor Z is really there


def test_cam_reads_the_head_weights_when_run():
    model = gap_model()
    cam = kg.CAM(model, "conv", relu=False)
    first = cam(X, targets=0)
    new = np.array([[-1.0, 0.0, 2.0], [3.0, 1.0, 0.0]])
    model.get_layer("head").set_weights([new, B_GAP])
    again = cam(X, targets=0)  # same compiled function, new weights
    close(again.layer_heatmaps, np.einsum("nijk,k->nij", acts(X), new[:, 0]))
    assert differs(again.layer_heatmaps, first.layer_heatmaps)


def test_cam_through_dropout_flatten_and_a_softmax_layer_and_nested():
    inp = keras.Input((4, 4, 1))
    h = keras.layers.Conv2D(2, 1, activation="relu", name="conv")(inp)
    h = keras.layers.Dropout(0.5)(h)
    h = keras.layers.GlobalAveragePooling2D(keepdims=True)(h)
    h = keras.layers.Flatten()(h)
    dense = keras.layers.Dense(3, name="head")
    model = keras.Model(inp, keras.layers.Softmax()(dense(h)))
    model.get_layer("conv").set_weights([K1.reshape(1, 1, 1, 2), B1])
    dense.set_weights([W_GAP, B_GAP])
    exp = kg.CAM(model, "conv", relu=False)(X, targets=1)
    close(exp.layer_heatmaps, np.einsum("nijk,k->nij", acts(X), W_GAP[:, 1]))
    nested = conv_gap_model(K1.reshape(1, 1, 1, 2), B1, W_GAP, B_GAP, input_shape=(4, 4, 1), conv_activation="relu",
                            nested=True)
    exp = kg.CAM(nested, "backbone/conv", relu=False)(X, targets=2)
    close(exp.layer_heatmaps, np.einsum("nijk,k->nij", acts(X), W_GAP[:, 2]))


def test_cam_on_a_binary_sigmoid_unit_explains_two_classes():
    w = np.array([[1.0], [-2.0]])
    model = conv_gap_model(K1.reshape(1, 1, 1, 2), B1, w, [0.0], input_shape=(4, 4, 1), conv_activation="relu",
                           activation="sigmoid")
    exp = kg.CAM(model, "conv", relu=False)(X, targets=[1, 0, 1])
    m = np.einsum("nijk,k->nij", acts(X), w[:, 0])
    close(exp.layer_heatmaps, m * np.array([1, -1, 1])[:, None, None])


def sequential(*middle):
    return keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(2, 1, name="conv"), *middle,
                             keras.layers.Dense(3, name="head")])


@pytest.mark.parametrize("middle, found", [
    ((keras.layers.Activation("relu", name="act"), keras.layers.GlobalAveragePooling2D(name="gap")),
     r"after it the model has Activation 'act' -> GlobalAveragePooling2D 'gap' -> Dense 'head'\. "
     r"CAM can explain the pooling's input instead: layer='act'\."),
    ((keras.layers.Flatten(name="flat"),), r"after it the model has Flatten 'flat' -> Dense 'head'\."),
    ((keras.layers.GlobalMaxPooling2D(name="gmp"),), r"GlobalMaxPooling2D 'gmp' -> Dense 'head'\."),
])
def test_cam_names_the_layers_after_an_unsupported_layer(middle, found):
    model = sequential(*middle)
    weights = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=r"^CAM needs layer 'conv' to be followed by global average pooling and a "
                                         r"Dense layer .*" + found + r" For any other head use method='gradcam'"):
        kg.CAM(model, "conv")
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_cam_refuses_a_relu_head_a_branch_callable_targets_and_counterfactual():
    with pytest.raises(ValueError, match=r"Dense 'head'"):
        kg.CAM(gap_model(activation="relu"), "conv")
    inp = keras.Input((4, 4, 1))
    conv = keras.layers.Conv2D(2, 1, name="conv")(inp)
    h = keras.layers.Add(name="add")([conv, keras.layers.Conv2D(2, 1, name="side")(inp)])
    model = keras.Model(inp, keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D(name="gap")(h)))
    with pytest.raises(ValueError, match=r"stops at an operation with several inputs: Add 'add' -> GlobalAveragePooling2D"):
        kg.CAM(model, "conv")
    assert kg.CAM(model, "add")(X).heatmaps.shape == (3, 4, 4)  # the pooling's input works
    with pytest.raises(ValueError, match=r"targets must be class indices .* For a ClassTarget pass its index"):
        kg.CAM(gap_model(), "conv")(X, targets=kg.ClassTarget(1))
    with pytest.raises(ValueError, match=r"counterfactual=True negates gradients, but CAM uses no gradients"):
        kg.CAM(gap_model(), "conv", counterfactual=True)
    with pytest.raises(TypeError, match=r"^relu must be "):
        kg.CAM(gap_model(), "conv", relu="no")


# --- element-wise methods on a flatten head: the gradient at (i, j, k) is the Dense weight there ---
W_FLAT = np.random.default_rng(5).normal(size=(32, 2))  # (4*4*2, C=2)
B_FLAT = np.array([0.2, -0.1])


def flat_model():
    inp = keras.Input((4, 4, 1))
    conv = keras.layers.Conv2D(2, 1, activation="relu", name="conv")
    dense = keras.layers.Dense(2, name="head")
    model = keras.Model(inp, dense(keras.layers.Flatten()(conv(inp))))
    conv.set_weights([K1.reshape(1, 1, 1, 2), B1])
    dense.set_weights([W_FLAT, B_FLAT])
    return model


def gradients(classes):
    """dS^c/dA for the flatten head: W_FLAT[:, c] reshaped to the layer's (4, 4, 2), per sample."""
    return np.stack([W_FLAT[:, c].reshape(4, 4, 2) for c in classes])


def test_gradcam_elementwise_rectifies_before_the_channel_sum():
    classes = [0, 1, 1]
    ga = gradients(classes) * acts(X)
    expected = relu(ga).sum(-1)  # sum_k ReLU(g^k A^k)
    exp = kg.GradCAMElementWise(flat_model(), "conv")(X, targets=classes)
    close(exp.layer_heatmaps, expected)
    close(exp.heatmaps, minmax(expected), atol=1e-5)
    hirescam = relu(ga.sum(-1))  # ReLU after the sum: the other method
    assert differs(minmax(expected), minmax(hirescam))
    close(kg.HiResCAM(flat_model(), "conv")(X, targets=classes).layer_heatmaps, hirescam)
    negative = kg.GradCAMElementWise(flat_model(), "conv", counterfactual=True)(X, targets=classes)
    close(negative.layer_heatmaps, relu(-ga).sum(-1))


def eigen(o, center=False):
    """First principal component of each sample's (positions x channels) matrix, numpy's SVD."""
    out = []
    for sample in o:
        m = sample.reshape(-1, sample.shape[-1])
        if center:
            m = m - m.mean(axis=0)
        _, _, vt = np.linalg.svd(m, full_matrices=False)
        p = m @ vt[0]
        p = -p if p[np.abs(p).argmax()] < 0 else p  # largest |entry| positive (Eigen-CAM's rule)
        out.append(p.reshape(sample.shape[:-1]))
    return np.stack(out)


@pytest.mark.parametrize("center", [False, True])
def test_eigengradcam_is_the_principal_component_of_g_times_a(center):
    classes = [0, 1, 0]
    ga = gradients(classes) * acts(X)
    expected = eigen(ga, center)
    exp = kg.EigenGradCAM(flat_model(), "conv", center=center)(X, targets=classes)
    close(exp.layer_heatmaps, expected, rtol=1e-4, atol=1e-5)
    close(exp.heatmaps, minmax(expected), atol=1e-4)
    assert (expected < 0).any()  # no ReLU by default: the signed projection is kept
    assert differs(minmax(expected), minmax(eigen(acts(X), center)))  # not Eigen-CAM of A
    other = kg.EigenGradCAM(flat_model(), "conv", center=center)(X, targets=[1, 0, 1])
    assert differs(other.heatmaps, exp.heatmaps)  # class-discriminative, unlike Eigen-CAM
    rectified = kg.EigenGradCAM(flat_model(), "conv", center=center, relu=True)(X, targets=classes)
    close(rectified.layer_heatmaps, relu(expected), rtol=1e-4, atol=1e-5)


def test_eigengradcam_refuses_counterfactual():
    with pytest.raises(ValueError, match=r"counterfactual=True .* same map for g\*A and -g\*A"):
        kg.EigenGradCAM(flat_model(), "conv", counterfactual=True)


@pytest.mark.parametrize("method", ["cam", "gradcam-elementwise", "eigengradcam"])
def test_batch_equals_one_by_one(method):
    model = gap_model()
    cam = kg.get_method(method)(model, "conv")
    whole = cam(X, targets=[0, 1, 2])
    for b in range(3):
        close(cam(X[b : b + 1], targets=[b]).heatmaps[0], whole.heatmaps[b], atol=1e-5)
