"""The user's model and Keras' global state are never changed, also after a call that raised
(STYLE.md: "Never change the user's model")."""

import keras
import numpy as np
import pytest

import keras_gradcam as kg

# the seven gradient methods of the core; methods registered later have their own test files
CORE = ("gradcam", "gradcam++", "smoothgradcam++", "xgradcam", "hirescam", "layercam", "integrated-gradcam")

OPTIONS = {"smoothgradcam++": {"n_samples": 2}, "integrated-gradcam": {"steps": 2}}
X = np.random.default_rng(41).normal(size=(2, 4, 4, 1)).astype(np.float32)


def build(head):
    """conv -> conv -> GAP -> Dense(softmax) ("activation") or Dense -> Softmax layer ("layer")."""
    rng = np.random.default_rng(40)
    inp = keras.Input((4, 4, 1))
    a = keras.layers.Conv2D(2, 1, activation="relu", name="conv")(inp)
    a = keras.layers.Conv2D(3, 1, activation="relu", name="conv2")(a)
    p = keras.layers.GlobalAveragePooling2D()(a)
    if head == "activation":
        out = keras.layers.Dense(3, activation="softmax", name="head")(p)
    else:
        out = keras.layers.Softmax(name="softmax")(keras.layers.Dense(3, name="head")(p))
    m = keras.Model(inp, out)
    for layer in m.layers:
        if layer.weights:
            layer.set_weights([rng.normal(size=w.shape) for w in layer.get_weights()])
    return m


def snapshot(model):
    layers = [model, *model.layers]
    return {
        "weights": [w.copy() for w in model.get_weights()],
        "trainable": [layer.trainable for layer in layers],
        "activation": [getattr(layer, "activation", None) for layer in layers],
        "call": [layer.call.__func__ for layer in layers],
        "dict_keys": [sorted(layer.__dict__) for layer in layers],
        "policy": [layer.dtype_policy.name for layer in layers],
        "config": (
            keras.config.image_data_format(),
            keras.config.floatx(),
            keras.config.epsilon(),
            keras.mixed_precision.global_policy().name,
        ),
        "output": np.asarray(model(X, training=False)),
    }


def assert_unchanged(model, before):
    after = snapshot(model)
    for a, b in zip(before["weights"], after["weights"]):
        np.testing.assert_array_equal(a, b)
    for key in ("trainable", "policy", "config"):
        assert after[key] == before[key], key
    for layer, a, b in zip([model, *model.layers], before["dict_keys"], after["dict_keys"]):
        assert a == b, f"{layer.name}: attributes added {sorted(set(b) - set(a))}, removed {sorted(set(a) - set(b))}"
    assert all(a is b for a, b in zip(before["activation"], after["activation"]))
    assert all(a is b for a, b in zip(before["call"], after["call"]))
    for layer in [model, *model.layers]:
        assert "call" not in layer.__dict__, f"{layer.name} keeps a patched call"
    np.testing.assert_array_equal(after["output"], before["output"])
    np.testing.assert_allclose(after["output"].sum(-1), 1.0, rtol=1e-5)  # still probabilities


@pytest.fixture(scope="module")
def dense_softmax_model():
    return build("activation")


@pytest.mark.parametrize("method", CORE)
def test_model_unchanged_by_every_method_and_by_errors(method, dense_softmax_model):
    model = dense_softmax_model
    before = snapshot(model)
    assert model.get_layer("head").activation.__name__ == "softmax"
    cam = kg.METHODS[method](model, layer="conv", **OPTIONS.get(method, {}))
    exp = cam(X, targets=1)
    assert np.isfinite(exp.heatmaps).all()
    assert not np.allclose(exp.scores, np.asarray(model(X))[:, 1])  # logits were explained
    assert_unchanged(model, before)

    with pytest.raises(IndexError):
        cam(X, targets=5)
    assert_unchanged(model, before)

    with pytest.raises(ValueError, match="one score per sample"):
        cam(X, targets=lambda out: out)  # (N, 3) instead of (N,)
    assert_unchanged(model, before)

    with pytest.raises(Exception, match="division by zero"):  # TF wraps it in a StagingError
        cam(X, targets=lambda out: 1 / 0)
    assert_unchanged(model, before)

    # and it still works after the errors
    np.testing.assert_array_equal(cam(X, targets=1).heatmaps, exp.heatmaps)
    assert model.get_layer("head").activation.__name__ == "softmax"


@pytest.mark.parametrize("method", ["gradcam", "smoothgradcam++"])
def test_model_with_softmax_layer_unchanged(method):
    model = build("layer")
    before = snapshot(model)
    cam = kg.METHODS[method](model, layer="conv2", **OPTIONS.get(method, {}))
    exp = cam(X, targets=0)
    logits = np.asarray(keras.Model(model.input, model.get_layer("head").output)(X))
    np.testing.assert_allclose(exp.scores, logits[:, 0], rtol=1e-5, atol=1e-6)  # the Softmax layer was bypassed
    assert_unchanged(model, before)
    with pytest.raises(ValueError):
        cam(X, targets=lambda out: out[:, :2])
    assert_unchanged(model, before)


def test_score_output_and_explain_leave_the_model_unchanged(dense_softmax_model):
    model = dense_softmax_model
    before = snapshot(model)
    kg.GradCAM(model, layer="conv", score="output")(X)
    kg.explain(model, X, method="layercam", layer=["conv", "conv2"])
    with pytest.raises(ValueError):
        kg.explain(model, X[0])  # no batch axis
    assert_unchanged(model, before)
