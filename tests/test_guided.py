"""Guided backpropagation and Guided Grad-CAM(++): gates checked by hand, the user's model untouched."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from oracles import relu

from keras_gradcam.methods.guided import GuidedBackprop, GuidedGradCAM, GuidedGradCAMPlusPlus
from keras_gradcam.methods.guided_model import guided_clone, guided_relu

# -- tiny nets with hand-set weights ----------------------------------------------------------------


def one_relu_net(softmax: bool = False) -> keras.Model:
    """x (2,) -> Dense(2, relu) -> Dense(2); kernels are (in, out)."""
    inp = keras.Input((2,))
    h = keras.layers.Dense(2, activation="relu", name="hidden")(inp)
    out = keras.layers.Dense(2, activation="softmax" if softmax else None, name="logits")(h)
    model = keras.Model(inp, out)
    model.get_layer("hidden").set_weights([np.array([[1.0, 2.0], [-1.0, 1.0]]), np.zeros(2)])
    model.get_layer("logits").set_weights([np.array([[1.0, 0.0], [-1.0, 1.0]]), np.zeros(2)])
    return model


RNG = np.random.default_rng(7)
W = [RNG.normal(size=s).astype("float32") for s in [(4, 5), (5,), (5, 5), (5,), (5, 5), (5,), (5, 3), (3,)]]


def three_forms_net() -> keras.Model:
    """ReLU as a Dense activation, as keras.layers.ReLU and as Activation("relu")."""
    inp = keras.Input((4,))
    h = keras.layers.Dense(5, activation="relu", name="d1")(inp)
    h = keras.layers.ReLU(name="r2")(keras.layers.Dense(5, name="d2")(h))
    h = keras.layers.Activation("relu", name="a3")(keras.layers.Dense(5, name="d3")(h))
    out = keras.layers.Dense(3, name="d4")(h)
    model = keras.Model(inp, out)
    model.set_weights(W)
    return model


def three_forms_backprop(x: np.ndarray, c: np.ndarray, guided: bool, sign: float = 1.0, weights=None) -> np.ndarray:
    """Backpropagation of sign * logit_c by hand; guided adds the 1[incoming > 0] gate."""
    w1, b1, w2, b2, w3, b3, w4, _ = W if weights is None else weights
    z1 = x @ w1 + b1
    z2 = relu(z1) @ w2 + b2
    z3 = relu(z2) @ w3 + b3
    r = sign * w4[:, c].T  # (N, 5): d(sign * y_c) / d relu(z3)
    for z, w in ((z3, w3), (z2, w2), (z1, w1)):
        g = r * (z > 0)
        if guided:
            g = g * (r > 0)
        r = g @ w.T
    return r


def small_cnn(flat_weights=None) -> keras.Model:
    inp = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)
    h = keras.layers.ReLU(name="r1")(keras.layers.Conv2D(5, 3, padding="same", name="c2")(h))
    h = keras.layers.MaxPooling2D(name="pool")(h)
    h = keras.layers.Activation("relu", name="a3")(keras.layers.Conv2D(6, 3, padding="same", name="c3")(h))
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = keras.layers.Dense(3, activation="softmax", name="head")(h)
    model = keras.Model(inp, out, name="small_cnn")
    if flat_weights is not None:
        model.set_weights(flat_weights)
    return model


def nested_cnn(weights) -> keras.Model:
    """The same network as small_cnn, with its convolutions in a nested Functional backbone."""
    inp = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)
    h = keras.layers.ReLU(name="r1")(keras.layers.Conv2D(5, 3, padding="same", name="c2")(h))
    h = keras.layers.MaxPooling2D(name="pool")(h)
    h = keras.layers.Activation("relu", name="a3")(keras.layers.Conv2D(6, 3, padding="same", name="c3")(h))
    backbone = keras.Model(inp, h, name="backbone")
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            backbone,
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.set_weights(weights)
    return model


@pytest.fixture(scope="module")
def cnn():
    keras.utils.set_random_seed(1)
    return small_cnn()


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(3).normal(size=(3, 8, 8, 3)).astype("float32")


def input_gradient(model, x, c, logits_layer=None):
    """Plain d logit_c / d x with a tape, as an independent reference."""
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = model(x, training=False)
        y = tf.reduce_sum(tf.gather(out, c, batch_dims=1))
    return tape.gradient(y, x).numpy()


# -- the guided rule --------------------------------------------------------------------------------


def test_guided_relu_gates_on_input_and_incoming_gradient():
    x = tf.constant([-1.0, 2.0, 3.0, 0.5])
    upstream = tf.constant([1.0, 1.0, -1.0, 2.0])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(guided_relu(x) * upstream)
    # x <= 0 blocks the first, a negative incoming gradient the third
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), [0.0, 1.0, 0.0, 2.0])
    np.testing.assert_array_equal(guided_relu(x).numpy(), [0.0, 2.0, 3.0, 0.5])


def test_one_relu_net_by_hand():
    # x = (2, 1): hidden pre-activations z = x @ W1 = (2 - 1, 4 + 1) = (1, 5), both positive.
    # d logit_0 / d hidden = W2[:, 0] = (1, -1); the guided gate drops the negative one: (1, 0);
    # back to the input: W1 @ (1, 0) = (1, -1). Plain backprop: W1 @ (1, -1) = (1 - 2, -1 - 1) = (-1, -2).
    model = one_relu_net()
    x = np.array([[2.0, 1.0]], np.float32)
    exp = GuidedBackprop(model)(x, targets=0)
    np.testing.assert_allclose(exp.attributions, [[1.0, -1.0]], atol=1e-6)
    np.testing.assert_allclose(input_gradient(model, x, [0]), [[-1.0, -2.0]], atol=1e-6)
    np.testing.assert_allclose(exp.scores, [1.0 - 5.0], atol=1e-6)  # logit_0 = z1 - z2
    np.testing.assert_allclose(exp.layer_heatmaps, [[1.0, 1.0]], atol=1e-6)  # |attributions|
    np.testing.assert_allclose(exp.heatmaps, [[0.0, 0.0]], atol=1e-6)  # a constant map normalises to zeros
    # counterfactual: back-propagate -logit_0, (-1, 1) -> gate (0, 1) -> W1 @ (0, 1) = (2, 1)
    cf = GuidedBackprop(model, counterfactual=True)(x, targets=0)
    np.testing.assert_allclose(cf.attributions, [[2.0, 1.0]], atol=1e-6)
    np.testing.assert_allclose(cf.scores, exp.scores, atol=1e-6)
    assert cf.targets.tolist() == [0]


def test_three_relu_forms_against_hand_backprop():
    model = three_forms_net()
    x = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    c = np.array([0, 1, 2, 0, 1, 2])
    exp = GuidedBackprop(model)(x, targets=c)
    expected = three_forms_backprop(x, c, guided=True)
    plain = three_forms_backprop(x, c, guided=False)
    assert np.abs(expected - plain).max() > 0.1  # the test separates guided from plain gradients
    np.testing.assert_allclose(plain, input_gradient(model, x, c), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(exp.attributions, expected, rtol=1e-4, atol=1e-5)
    assert exp.attributions.shape == x.shape and exp.layer == "input"
    cf = GuidedBackprop(model, counterfactual=True)(x, targets=c)
    np.testing.assert_allclose(cf.attributions, three_forms_backprop(x, c, True, -1.0), rtol=1e-4, atol=1e-5)


def test_clone_replaces_every_relu_and_keeps_the_forward():
    model = three_forms_net()
    clone = guided_clone(model)
    assert clone is not model
    assert clone.get_layer("d1").activation is guided_relu
    assert clone.get_layer("a3").activation is guided_relu
    assert "call" in clone.get_layer("r2").__dict__
    assert model.get_layer("d1").activation is not guided_relu and "call" not in model.get_layer("r2").__dict__
    x = np.random.default_rng(1).normal(size=(4, 4)).astype("float32")
    np.testing.assert_allclose(clone(x), model(x), rtol=1e-6)


def test_ops_relu_node_is_replaced():
    inp = keras.Input((4,))
    h = keras.ops.relu(keras.layers.Dense(5, name="d1")(inp))
    h = keras.layers.ReLU(name="r2")(keras.layers.Dense(5, name="d2")(h))
    h = keras.layers.Activation("relu", name="a3")(keras.layers.Dense(5, name="d3")(h))
    model = keras.Model(inp, keras.layers.Dense(3, name="d4")(h))
    model.set_weights(W)
    x = np.random.default_rng(2).normal(size=(3, 4)).astype("float32")
    c = np.array([2, 1, 0])
    exp = GuidedBackprop(model)(x, targets=c)
    np.testing.assert_allclose(exp.attributions, three_forms_backprop(x, c, guided=True), rtol=1e-4, atol=1e-5)


class OwnReLU(keras.layers.Layer):
    """A custom layer that computes its ReLU in ``call``: no attribute to guide."""

    def call(self, x):
        return keras.ops.relu(x)


def test_relu_inside_a_custom_layer_call_is_refused_not_left_plain():
    """The traced graph still holds one plain ReLU after the edits: a ValueError naming how to fix it."""
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(3)(OwnReLU()(keras.layers.Dense(5, activation="relu")(inp))))
    with pytest.raises(ValueError, match=r"1 ReLU\(s\) of model .* could not be replaced.*keras\.layers\.ReLU\(\)"):
        GuidedBackprop(model)


# -- never touch the user's model -------------------------------------------------------------------


def _snapshot(model):
    state = {}
    for layer in model._flatten_layers(include_self=True, recursive=True):
        state[id(layer)] = {k: id(v) for k, v in layer.__dict__.items()}
    return [w.copy() for w in model.get_weights()], state


def test_user_model_unchanged_after_calls_and_errors(images):
    model = small_cnn()
    model(images)  # first call before the snapshot (Keras sets call-time flags once)
    weights, state = _snapshot(model)
    before = model(images).numpy()
    GuidedGradCAM(model, "c3")(images)
    GuidedBackprop(model, counterfactual=True)(images)
    with pytest.raises(IndexError, match="out of range"):
        GuidedBackprop(model)(images, targets=7)
    weights2, state2 = _snapshot(model)
    assert state2 == state
    for a, b in zip(weights, weights2):
        np.testing.assert_array_equal(a, b)
    assert model.get_layer("head").activation.__name__ == "softmax"
    assert model.get_layer("c1").activation.__name__ == "relu"
    np.testing.assert_array_equal(model(images).numpy(), before)


# -- models without ReLUs ---------------------------------------------------------------------------


def test_other_rectifiers_raise_with_their_names():
    inp = keras.Input((4,))
    h = keras.layers.Dense(5, activation="silu", name="swishy")(inp)
    h = keras.layers.Dense(5, activation="gelu", name="geluish")(h)
    h = keras.layers.LeakyReLU(name="leaky")(h)
    model = keras.Model(inp, keras.layers.Dense(2)(h))
    with pytest.raises(ValueError, match="swishy.*geluish.*leaky|non_relu='keep'") as err:
        GuidedBackprop(model)
    for name in ("swishy", "geluish", "leaky", "non_relu='keep'"):
        assert name in str(err.value)
    with pytest.raises(ValueError, match="non_relu must be one of"):
        GuidedBackprop(model, non_relu="ignore")


def test_no_relu_network_gives_the_plain_input_gradient():
    keras.utils.set_random_seed(4)
    inp = keras.Input((4,))
    h = keras.layers.Dense(6, activation="silu")(inp)
    h = keras.layers.Dense(6, activation="tanh")(h)
    model = keras.Model(inp, keras.layers.Dense(3)(h))
    x = np.random.default_rng(5).normal(size=(4, 4)).astype("float32")
    with pytest.warns(UserWarning, match="no ReLU"):
        gb = GuidedBackprop(model, non_relu="keep")
    exp = gb(x, targets=[0, 1, 2, 1])
    np.testing.assert_allclose(exp.attributions, input_gradient(model, x, [0, 1, 2, 1]), rtol=1e-5, atol=1e-6)


# -- nested models, softmax heads, batching --------------------------------------------------------


def test_nested_backbone_and_softmax_head_match_the_flat_logit_model(cnn, images):
    nested = nested_cnn(cnn.get_weights())
    flat = GuidedBackprop(cnn)(images, targets=[0, 1, 2])
    inner = GuidedBackprop(nested)(images, targets=[0, 1, 2])
    np.testing.assert_allclose(inner.attributions, flat.attributions, rtol=1e-4, atol=1e-6)
    clone = guided_clone(nested)
    assert clone.layers[0].get_layer("c1").activation is guided_relu  # inside the nested backbone
    # the softmax head is explained as logits: same as a copy of the model without it
    logits_model = small_cnn(cnn.get_weights())
    logits_model.get_layer("head").activation = keras.activations.linear
    reference = GuidedBackprop(logits_model)(images, targets=[0, 1, 2])
    np.testing.assert_allclose(flat.attributions, reference.attributions, rtol=1e-5, atol=1e-7)
    assert np.abs(flat.attributions).max() > 0
    on_probs = GuidedBackprop(cnn, score="output")(images, targets=[0, 1, 2])
    assert not np.allclose(on_probs.attributions, flat.attributions)


def test_batch_equals_one_by_one(cnn, images):
    gb = GuidedBackprop(cnn, batch_size=2)
    ggc = GuidedGradCAM(cnn, "c3", batch_size=2)
    full_gb, full_ggc = gb(images), ggc(images)
    for i in range(len(images)):
        one = images[i : i + 1]
        np.testing.assert_allclose(gb(one).attributions, full_gb.attributions[i : i + 1], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(ggc(one).attributions, full_ggc.attributions[i : i + 1], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(ggc(one).heatmaps, full_ggc.heatmaps[i : i + 1], atol=1e-6)


# -- Guided Grad-CAM(++) ----------------------------------------------------------------------------


# x (4, 4, 1) -> "c": Conv2D(2, 2x2, stride 2, ReLU, no bias) -> A (2, 2, 2) -> GAP -> Dense(2, no bias).
# d y_c / d A_k(i, j) = V[k, c] / 4 everywhere, so every number below follows from the weights.
CONV = np.zeros((2, 2, 1, 2))
CONV[:, :, 0, 0] = [[1.0, 0.0], [0.0, 1.0]]
CONV[:, :, 0, 1] = [[0.0, 1.0], [-1.0, 0.0]]
HEAD = np.array([[1.0, -0.5], [-1.0, 2.0]])  # (channels, classes): each class has one positive channel
UP = np.array([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]])  # bilinear 2 -> 4, half-pixel centres


def strided_net() -> keras.Model:
    inp = keras.Input((4, 4, 1))
    a = keras.layers.Conv2D(2, 2, strides=2, activation="relu", use_bias=False, name="c")(inp)
    out = keras.layers.Dense(2, use_bias=False, name="head")(keras.layers.GlobalAveragePooling2D()(a))
    model = keras.Model(inp, out)
    model.get_layer("c").set_weights([CONV.astype("float32")])
    model.get_layer("head").set_weights([HEAD.astype("float32")])
    return model


def guided_cam_by_hand(x, targets, plusplus, counterfactual):
    """Guided backpropagation, the upsampled normalised map and their product, from the weights."""
    sign = -1.0 if counterfactual else 1.0
    blocks = x[..., 0].reshape(len(x), 2, 2, 2, 2)  # (n, i, p, j, q): pixel (2i + p, 2j + q)
    z = np.einsum("nipjq,pqk->nijk", blocks, CONV[:, :, 0])  # (n, 2, 2, 2) pre-activations
    acts = relu(z)
    g = sign * HEAD[:, targets].T / 4  # (n, K): the (negated) gradient, the same at every position
    if plusplus:  # with a constant gradient the map is ReLU(w_k A^k) of the one positive channel, w_k > 0
        layer_map = np.where(g[:, None, None] > 0, acts, 0.0).sum(-1)
    else:
        layer_map = relu((acts * g[:, None, None]).sum(-1))
    up = np.einsum("ai,nij,bj->nab", UP, layer_map, UP)
    heat = (up - up.min(axis=(1, 2), keepdims=True)) / np.ptp(up, axis=(1, 2), keepdims=True)
    r = g[:, None, None] * (z > 0) * (g[:, None, None] > 0)  # the guided gates: ReLU input and gradient
    gb = np.einsum("nijk,pqk->nipjq", r, CONV[:, :, 0]).reshape(len(x), 4, 4, 1)
    return gb, heat


@pytest.mark.parametrize("guided_cls", [GuidedGradCAM, GuidedGradCAMPlusPlus])
@pytest.mark.parametrize("counterfactual", [False, True])
def test_guided_cam_by_hand(guided_cls, counterfactual):
    x = np.random.default_rng(1).uniform(-0.5, 1.0, size=(3, 4, 4, 1)).astype("float32")
    targets = [0, 1, 0]
    exp = guided_cls(strided_net(), "c", counterfactual=counterfactual)(x, targets=targets)
    gb, heat = guided_cam_by_hand(x, np.array(targets), guided_cls is GuidedGradCAMPlusPlus, counterfactual)
    assert (np.abs(gb).max(axis=(1, 2, 3)) > 0).all() and np.isfinite(heat).all()  # no degenerate image
    np.testing.assert_allclose(exp.heatmaps, heat, atol=1e-6)
    np.testing.assert_allclose(exp.extras["guided_backprop"], gb, atol=1e-6)
    np.testing.assert_allclose(exp.attributions, gb * heat[..., None], atol=1e-6)
    assert exp.attributions.shape == x.shape and exp.method == guided_cls.name
    assert exp.targets.tolist() == targets


def test_errors_name_the_fix(cnn):
    with pytest.raises(ValueError, match="reads no layer"):
        GuidedBackprop(cnn, "c3")
    a, b = keras.Input((4,)), keras.Input((4,))
    two = keras.Model([a, b], keras.layers.Dense(2)(keras.layers.Concatenate()([a, b])))
    with pytest.raises(ValueError, match="one input"):
        GuidedBackprop(two)


# -- live weights: the guided pass reads the model's current variables ------------------------------


def test_guided_backprop_follows_set_weights_by_hand():
    import keras_gradcam as kg

    model = three_forms_net()
    x = np.random.default_rng(11).normal(size=(5, 4)).astype("float32")
    c = np.array([0, 1, 2, 0, 1])
    gb = GuidedBackprop(model)
    first = gb(x, targets=c).attributions
    via_explain = kg.explain(model, x, method="guided-backprop", targets=c).attributions
    np.testing.assert_allclose(first, three_forms_backprop(x, c, guided=True), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(via_explain, first, rtol=1e-6)
    w2 = [v * -1.5 + 0.1 for v in W]  # other signs, so other gates
    model.set_weights(w2)
    expected = three_forms_backprop(x, c, guided=True, weights=w2)
    assert np.abs(expected - first).max() > 0.1  # the test separates the two weight sets
    np.testing.assert_allclose(gb(x, targets=c).attributions, expected, rtol=1e-4, atol=1e-5)
    again = kg.explain(model, x, method="guided-backprop", targets=c).attributions  # the cached explainer
    np.testing.assert_allclose(again, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cls", [GuidedBackprop, GuidedGradCAM, GuidedGradCAMPlusPlus])
def test_guided_methods_follow_an_optimizer_step(images, cls):
    keras.utils.set_random_seed(2)
    model = small_cnn()
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="categorical_crossentropy")
    explainer = cls(model) if cls is GuidedBackprop else cls(model, "c3")
    before = explainer(images, targets=[0, 1, 2]).attributions
    old = [w.copy() for w in model.get_weights()]
    model.train_on_batch(images, np.eye(3, dtype="float32")[[2, 0, 1]])
    assert any(np.abs(a - b).max() > 1e-3 for a, b in zip(old, model.get_weights()))
    after = explainer(images, targets=[0, 1, 2]).attributions
    fresh = (cls(model) if cls is GuidedBackprop else cls(model, "c3"))(images, targets=[0, 1, 2]).attributions
    assert np.abs(fresh - before).max() > 1e-4 * np.abs(before).max()
    np.testing.assert_allclose(after, fresh, rtol=1e-5, atol=1e-7)


def test_guided_callback_follows_training(tmp_path, images):
    from keras_gradcam.callback import GradCAMCallback

    keras.utils.set_random_seed(3)
    model = small_cnn()
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="categorical_crossentropy")
    y = np.eye(3, dtype="float32")[[2, 0, 1]]
    cb = GradCAMCallback(images, tmp_path, method="guided-backprop", targets=[0, 1, 2])
    model.fit(images, y, epochs=1, verbose=0, callbacks=[cb])
    first = cb.explainer(images, targets=[0, 1, 2]).attributions
    model.fit(images, y, epochs=2, verbose=0, callbacks=[cb])  # the same explainer, reused
    fresh = GuidedBackprop(model)(images, targets=[0, 1, 2]).attributions
    assert np.abs(fresh - first).max() > 1e-4 * np.abs(first).max()
    np.testing.assert_allclose(cb.explainer(images, targets=[0, 1, 2]).attributions, fresh, rtol=1e-5, atol=1e-7)


def test_guided_runs_on_the_users_variables_and_leaves_them(images):
    model = small_cnn()
    model(images)
    weights, state = _snapshot(model)
    gb = GuidedBackprop(model)
    gb(images)
    # no copy: the compiled function captures the model's own variables, nothing else
    captured = {id(v) for v in gb._fns[next(iter(gb._fns))].get_concrete_function().graph.variables}
    assert captured and captured <= {id(v.value) for v in model.weights}
    with pytest.raises(ValueError, match="one score per sample"):  # raised while tracing, ReLUs guided
        gb(images, targets=lambda out: out)
    weights2, state2 = _snapshot(model)
    assert state2 == state
    for a, b in zip(weights, weights2):
        np.testing.assert_array_equal(a, b)
    assert model.get_layer("c1").activation.__name__ == "relu" and "call" not in model.get_layer("r1").__dict__


# -- integer token inputs ---------------------------------------------------------------------------


def token_model(dtype="int32") -> keras.Model:
    inp = keras.Input((10,), dtype=dtype)
    h = keras.layers.Embedding(20, 4, name="emb")(inp)
    h = keras.layers.Conv1D(3, 3, padding="same", activation="relu", name="conv")(h)
    h = keras.layers.GlobalAveragePooling1D()(h)
    return keras.Model(inp, keras.layers.Dense(2)(h))


@pytest.mark.parametrize("make", [lambda m: GuidedBackprop(m), lambda m: GuidedGradCAM(m, "conv"),
                                  lambda m: GuidedGradCAMPlusPlus(m, "conv")])
@pytest.mark.parametrize("dtype", ["int32", "float32"])
def test_guided_refuses_token_inputs(make, dtype):
    # on today's code the attributions are all 0: the gradient stops at the embedding lookup
    model = token_model(dtype)
    with pytest.raises(ValueError, match="token ids") as err:
        make(model)
    assert "'emb'" in str(err.value) and "Grad-CAM, Grad-CAM++" in str(err.value)


def test_an_all_zero_map_names_the_score_when_the_score_has_no_gradient():
    """tf.argmax has no gradient: the warning names the score, not the guided ReLUs; a score whose gradient
    the guided ReLUs stop (negative evidence only) still names the ReLUs."""
    inp = keras.Input((4, 4, 1))
    conv = keras.layers.Conv2D(1, 1, activation="relu", use_bias=False)
    head = keras.layers.Dense(2, use_bias=False)
    model = keras.Model(inp, head(keras.layers.GlobalAveragePooling2D()(conv(inp))))
    conv.set_weights([np.ones((1, 1, 1, 1), np.float32)])
    head.set_weights([np.array([[1.0, 2.0]], np.float32)])
    x = np.linspace(0.1, 1.0, 32, dtype=np.float32).reshape(2, 4, 4, 1)  # positive: every ReLU is open
    explainer = GuidedBackprop(model)
    argmax = lambda out: tf.cast(tf.argmax(out, axis=-1), tf.float32)  # noqa: E731
    with pytest.warns(RuntimeWarning, match=r"2 of 2 maps are all zero because.*non-differentiable score such as "
                      r"tf\.argmax") as caught:
        exp = explainer(x, targets=argmax)
    assert exp.attributions.max() == 0 and not any("guided ReLUs" in str(w.message) for w in caught)
    # d(-y0)/d(relu output) = -1/16 < 0: the guided ReLUs pass no negative gradient, so they are the cause
    with pytest.warns(RuntimeWarning, match=r"2 of 2 maps are all zero: no gradient reaches the input through the "
                      r"guided ReLUs") as caught:
        exp = explainer(x, targets=lambda out: -out[:, 0])
    assert exp.attributions.max() == 0 and not any("argmax" in str(w.message) for w in caught)
