"""User errors: ValueError / TypeError that say what was received and how to fix it."""

import keras
import numpy as np
import pytest

import keras_gradcam as kg

# the seven gradient methods of the core; methods registered later have their own test files
CORE = ("gradcam", "gradcam++", "smoothgradcam++", "xgradcam", "hirescam", "layercam", "integrated-gradcam")

X = np.random.default_rng(51).normal(size=(2, 4, 4, 1)).astype(np.float32)


@pytest.fixture(scope="module")
def model():
    inp = keras.Input((4, 4, 1))
    a = keras.layers.Conv2D(2, 1, activation="relu", name="conv")(inp)
    return keras.Model(inp, keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(a)))


@pytest.fixture(scope="module")
def cam(model):
    return kg.GradCAM(model, layer="conv")


def test_single_image_without_batch_axis(model, cam):
    with pytest.raises(ValueError, match="batch axis"):
        cam(X[0])
    with pytest.raises(ValueError, match="batch axis"):
        kg.explain(model, X[0], method="gradcam")


@pytest.mark.parametrize("shape", [(2, 5, 4, 1), (2, 4, 4, 3), (2, 4, 4), (2, 4, 4, 1, 1)])
def test_wrong_image_shape(shape, cam):
    with pytest.raises(ValueError, match="expects"):
        cam(np.zeros(shape, np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_images(bad, cam):
    x = X.copy()
    x[1, 2, 3, 0] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        cam(x)


def test_empty_and_non_numeric_images(cam):
    with pytest.raises(ValueError):
        cam(np.zeros((0, 4, 4, 1), np.float32))
    with pytest.raises(TypeError):
        cam(np.full((2, 4, 4, 1), "a"))


def test_integer_images_are_accepted(cam):
    exp = cam(np.arange(32).reshape(2, 4, 4, 1))
    assert exp.heatmaps.shape == (2, 4, 4)


@pytest.mark.parametrize("method", CORE)
def test_not_a_keras_model(method):
    with pytest.raises(TypeError, match="keras.Model"):
        kg.METHODS[method](lambda x: x)
    with pytest.raises(TypeError):
        kg.explain(lambda x: x, X, method=method)


def test_core_methods_are_registered():
    assert set(CORE) <= set(kg.METHODS)
    for name in CORE:
        assert kg.METHODS[name].name == name
        assert kg.get_method(name) is kg.METHODS[name]


def test_unknown_method_lists_the_known_ones(model):
    with pytest.raises(ValueError) as info:
        kg.explain(model, X, method="scorecam-deluxe")
    for name in kg.METHODS:
        assert name in str(info.value)


@pytest.mark.parametrize(
    "method, options",
    [
        ("smoothgradcam++", {"n_samples": 0}),
        ("smoothgradcam++", {"n_samples": -3}),
        ("smoothgradcam++", {"n_samples": 2.5}),
        ("smoothgradcam++", {"noise_level": -0.1}),
        ("smoothgradcam++", {"noise_level": float("nan")}),
        ("smoothgradcam++", {"numerator": "d3"}),
        ("integrated-gradcam", {"steps": 0}),
        ("integrated-gradcam", {"riemann": "x"}),
        ("gradcam++", {"alpha_norm": "x"}),
        ("layercam", {"fusion": "sum"}),
        ("gradcam", {"score": "probability"}),
        ("gradcam", {"batch_size": 0}),
        ("gradcam", {"output": 3}),
    ],
)
def test_bad_options_are_value_errors(method, options, model):
    with pytest.raises(ValueError):
        kg.METHODS[method](model, layer="conv", **options)
    if "batch_size" not in options:
        with pytest.raises(ValueError):
            kg.explain(model, X, method=method, layer="conv", **options)


def test_unknown_option_is_a_type_error(model):
    with pytest.raises(TypeError):
        kg.explain(model, X, method="gradcam", n_samples=3)
