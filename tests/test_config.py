"""get_config / from_config round-trip for every registered method, and the argument checks.

Every method of ``kg.METHODS`` is built with non-default options, its config is sent through
JSON, and the explainer rebuilt by ``kg.get_method(config["method"]).from_config(model, config)``
must have the same config and explain the same batch identically.
"""

import inspect
import json

import keras
import numpy as np
import pytest

import keras_gradcam as kg
from keras_gradcam.core.engine import Explainer
from keras_gradcam.core.targets import check_range
from keras_gradcam.core.validate import ClassIndexError

X = np.random.default_rng(0).uniform(size=(3, 8, 8, 3)).astype(np.float32)


def tiny(name="tiny"):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inputs)
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="c2")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="head")(h), name=name)


@pytest.fixture(scope="module")
def model():
    return tiny()


NEURONS = np.ones((8, 8, 6), bool)
NEURONS[:4, :, 1] = False
BASELINE = np.random.default_rng(1).uniform(size=(8, 8, 3)).astype(np.float32)

# non-default options for each method; "layer" may be a callable of the model (a layer object)
OPTIONS = {
    "gradcam": {"layer": lambda m: m.get_layer("c2"), "counterfactual": True, "score": "output", "batch_size": 2},
    "gradcam++": {"layer": "c1", "alpha_norm": "positive", "aug_smooth": True, "relu": False},
    "smoothgradcam++": {
        "layer": "c2", "n_samples": 3, "noise_level": 0.2, "seed": 7, "numerator": "d1", "channels": [0, 2, 5], "neurons": NEURONS
    },
    "xgradcam": {"layer": "c2", "eps": 1e-3, "counterfactual": True},
    "hirescam": {"layer": "c1", "score": "output", "eigen_smooth": True},
    "layercam": {"layer": ["c1", lambda m: m.get_layer("c2")], "gamma": 1.5, "fusion": "mean"},
    "integrated-gradcam": {
        "layer": "c2",
        "steps": 4,
        "baseline": BASELINE,
        "riemann": "trapezoid",
        "relu_per_step": False,
        "subtract_baseline_activations": True,
    },
    "guided-backprop": {"non_relu": "keep", "counterfactual": True, "batch_size": 2},
    "guided-gradcam": {"layer": "c1", "non_relu": "keep"},
    "guided-gradcam++": {"layer": "c2", "alpha_norm": "all", "counterfactual": True},
    "scorecam": {"layer": "c2", "weights": "channel-softmax", "max_channels": 2, "verbose": 0, "batch_size": 5},
    "ablationcam": {"layer": "c1", "drop": "absolute", "head_only": False, "max_channels": 3, "verbose": 0},
    "eigencam": {"layer": "c2", "center": True, "relu": True},
    "cam": {"layer": "c2", "relu": False, "score": "output", "batch_size": 2},
    "gradcam-elementwise": {"layer": "c1", "counterfactual": True},
    "eigengradcam": {"layer": "c1", "center": True, "relu": True, "batch_size": 2},
    "sscam": {
        "layer": "c2", "n_samples": 2, "noise_std": 0.5, "seed": 3, "weights": "probability", "max_channels": 2,
        "verbose": 0, "batch_size": 5,
    },
    "iscam": {"layer": "c1", "n_steps": 3, "path": "cumulative", "weights": "probability", "verbose": 0},
}


def build(model, method):
    options = dict(OPTIONS[method])
    layer = options.pop("layer", None)
    if callable(layer):
        layer = layer(model)
    elif isinstance(layer, list):
        layer = [spec(model) if callable(spec) else spec for spec in layer]
    return kg.METHODS[method](model, layer, **options)


def plain(value):
    """``value`` as get_config writes it: arrays and tuples as lists."""
    return json.loads(json.dumps(np.asarray(value).tolist() if isinstance(value, np.ndarray) else value))


def constructor_options(cls) -> set:
    """The keyword arguments the constructors along ``cls``'s MRO accept (but the model)."""
    names = set()
    for klass in cls.__mro__:
        if issubclass(klass, Explainer) and "__init__" in vars(klass):
            params = inspect.signature(vars(klass)["__init__"]).parameters.values()
            names |= {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return names - {"self", "model"}


def test_every_method_has_options():
    assert set(OPTIONS) == set(kg.METHODS)


@pytest.mark.filterwarnings("ignore:.*maps are all zero:RuntimeWarning")
@pytest.mark.parametrize("method", sorted(kg.METHODS))
def test_config_round_trip(method, model):
    cam = build(model, method)
    config = cam.get_config()
    assert config["method"] == method
    assert json.loads(json.dumps(config)) == config  # JSON-serialisable, unchanged by JSON

    # every constructor option is in the config, the non-default ones as they were given
    omitted = {"layer"} if method == "guided-backprop" else set()
    if not cam.gradients:
        omitted.add("counterfactual")
    omitted |= {"aug_smooth", "eigen_smooth", "relu"} - cam.supports  # shared options a method does not take
    assert set(config) - {"method"} == constructor_options(type(cam)) - omitted
    for name, value in OPTIONS[method].items():
        if name != "layer":
            assert config[name] == plain(value), name
    if isinstance(OPTIONS[method].get("layer"), str):
        assert config["layer"] == OPTIONS[method]["layer"]

    rebuilt = kg.get_method(config["method"]).from_config(model, json.loads(json.dumps(config)))
    assert type(rebuilt) is type(cam)
    assert rebuilt.get_config() == config
    assert rebuilt.layer == cam.layer

    first, again = cam(X), rebuilt(X)
    np.testing.assert_array_equal(again.heatmaps, first.heatmaps)
    np.testing.assert_array_equal(again.layer_heatmaps, first.layer_heatmaps)
    np.testing.assert_array_equal(again.targets, first.targets)
    if first.attributions is not None:
        np.testing.assert_array_equal(again.attributions, first.attributions)
    for key, value in first.extras.items():
        np.testing.assert_array_equal(again.extras[key], value)


def test_layer_objects_are_written_as_paths():
    inner = tiny("backbone")
    inputs = keras.Input((8, 8, 3))
    outer = keras.Model(inputs, inner(inputs), name="outer")
    cam = kg.GradCAM(outer, inner.get_layer("c1"))
    assert cam.get_config()["layer"] == "backbone/c1"
    rebuilt = kg.GradCAM.from_config(outer, cam.get_config())
    assert rebuilt.layer == "backbone/c1"
    np.testing.assert_array_equal(rebuilt(X).heatmaps, cam(X).heatmaps)


def test_layer_object_of_an_unbuilt_model_is_written_by_name():
    model = keras.Sequential([keras.layers.Conv2D(2, 3, name="conv"), keras.layers.GlobalAveragePooling2D()])
    model.build((None, 8, 8, 3))
    assert kg.GradCAM(model, model.get_layer("conv")).get_config()["layer"] == "conv"


def test_from_config_of_another_method_says_how(model):
    config = kg.LayerCAM(model, "c2").get_config()
    with pytest.raises(ValueError, match=r"config is for method 'layercam'.*get_method\(config\['method'\]\)"):
        kg.GradCAM.from_config(model, config)
    assert isinstance(kg.get_method(config["method"]).from_config(model, config), kg.LayerCAM)


def test_from_config_without_method_uses_the_class(model):
    config = kg.GradCAM(model, "c1", batch_size=4).get_config()
    del config["method"]
    assert kg.GradCAM.from_config(model, config).get_config()["batch_size"] == 4


def test_scalar_baseline_stays_a_number(model):
    assert kg.IntegratedGradCAM(model, "c2", baseline=0.5).get_config()["baseline"] == 0.5


# -- argument checks: one message style, one exception policy -------------------------------------
BAD = [
    ("gradcam", "batch_size", 0, ValueError),
    ("gradcam", "batch_size", "8", TypeError),
    ("gradcam", "score", "probability", ValueError),
    ("gradcam", "counterfactual", "yes", TypeError),
    ("gradcam++", "alpha_norm", "x", ValueError),
    ("smoothgradcam++", "n_samples", 0, ValueError),
    ("smoothgradcam++", "n_samples", 2.5, ValueError),
    ("smoothgradcam++", "n_samples", None, TypeError),
    ("smoothgradcam++", "noise_level", -0.1, ValueError),
    ("smoothgradcam++", "noise_level", float("nan"), ValueError),
    ("smoothgradcam++", "noise_level", "0.1", TypeError),
    ("smoothgradcam++", "seed", 1.5, ValueError),
    ("smoothgradcam++", "numerator", "d3", ValueError),
    ("xgradcam", "eps", -1.0, ValueError),
    ("layercam", "fusion", "sum", ValueError),
    ("layercam", "gamma", 0.0, ValueError),
    ("integrated-gradcam", "steps", 0, ValueError),
    ("integrated-gradcam", "riemann", "midpoint", ValueError),
    ("integrated-gradcam", "relu_per_step", 1, TypeError),
    ("guided-backprop", "non_relu", "ignore", ValueError),
    ("guided-gradcam", "non_relu", "ignore", ValueError),
    ("scorecam", "weights", "softmax", ValueError),
    ("scorecam", "max_channels", 0, ValueError),
    ("scorecam", "verbose", 3, ValueError),
    ("ablationcam", "drop", "ratio", ValueError),
    ("ablationcam", "head_only", "no", TypeError),
    ("eigencam", "center", None, TypeError),
]


@pytest.mark.parametrize("method, name, value, error", BAD)
def test_bad_option_names_the_argument(method, name, value, error, model):
    layer = None if method == "guided-backprop" else "c2"
    with pytest.raises(error, match=rf"^{name} must be ") as info:
        kg.METHODS[method](model, layer, **{name: value})
    assert f"; got {value!r}" in str(info.value)


@pytest.mark.parametrize("method", ["scorecam", "ablationcam", "eigencam"])
def test_gradient_free_methods_refuse_counterfactual(method, model):
    with pytest.raises(ValueError, match="uses no gradients"):
        kg.METHODS[method](model, "c2", counterfactual=True)


def test_out_of_range_class_is_an_index_and_a_value_error(model):
    with pytest.raises(ClassIndexError, match=r"out of range.*0 \.\. 2"):
        check_range(np.array([0, 3]), 3)
    cam = kg.GradCAM(model, "c2")
    for targets in (3, [0, -1, 1]):
        with pytest.raises(IndexError):
            cam(X, targets=targets)
        with pytest.raises(ValueError):
            cam(X, targets=targets)


def test_neuron_importance_checks_k(model):
    with pytest.raises(ValueError, match="k must be a positive int; got 0"):
        kg.neuron_importance(model, X, "c2", k=0)
    with pytest.raises(TypeError, match="maps must be True or False"):
        kg.neuron_importance(model, X, "c2", maps="yes")
