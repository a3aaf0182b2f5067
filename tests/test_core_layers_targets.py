"""Choosing the layer (name, path, object, None) and the targets (int, sequence, array, errors)."""

import keras
import numpy as np
import pytest

import keras_gradcam as kg

X = np.random.default_rng(31).normal(size=(4, 6, 6, 1)).astype(np.float32)


@pytest.fixture(scope="module")
def model():
    """c1 (6x6) -> c2 (6x6) -> pool (3x3) -> flat -> dense (logits, no softmax)."""
    rng = np.random.default_rng(30)
    inp = keras.Input((6, 6, 1))
    a = keras.layers.Conv2D(2, 3, padding="same", activation="relu", name="c1")(inp)
    a = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="c2")(a)
    a = keras.layers.MaxPooling2D(2, name="pool")(a)
    out = keras.layers.Dense(3, name="dense")(keras.layers.Flatten(name="flat")(a))
    m = keras.Model(inp, out)
    for layer in m.layers:
        if layer.weights:
            layer.set_weights([rng.normal(scale=0.5, size=w.shape) for w in layer.get_weights()])
    return m


@pytest.fixture(scope="module")
def cam(model):
    return kg.GradCAM(model, layer="c2")


# --- layer selection ------------------------------------------------------------------------------
def test_layer_none_is_the_last_spatial_layer(model):
    auto = kg.GradCAM(model)(X, targets=0)
    named = kg.GradCAM(model, layer="pool")(X, targets=0)
    assert auto.layer == "pool" and auto.layer_heatmaps.shape == (4, 3, 3)
    np.testing.assert_array_equal(auto.heatmaps, named.heatmaps)


def test_layer_object_is_accepted(model, cam):
    exp = kg.GradCAM(model, layer=model.get_layer("c2"))(X, targets=1)
    assert exp.layer == "c2"
    np.testing.assert_allclose(exp.heatmaps, cam(X, targets=1).heatmaps, atol=1e-6)


def test_unknown_layer_name_lists_candidates(model):
    with pytest.raises(ValueError) as info:
        kg.GradCAM(model, layer="conv5_block3_out")
    message = str(info.value)
    assert "conv5_block3_out" in message
    for name in ("c1", "c2", "pool"):
        assert repr(name) in message


@pytest.mark.parametrize("name", ["dense", "flat"])
def test_non_spatial_layer_is_refused(model, name):
    with pytest.raises(ValueError, match="spatial"):
        kg.GradCAM(model, layer=name)
    with pytest.raises(ValueError, match="spatial"):
        kg.GradCAM(model, layer=model.get_layer(name))


def test_layer_of_wrong_type_is_a_type_error(model):
    with pytest.raises(TypeError):
        kg.GradCAM(model, layer=3)


def test_ambiguous_bare_name_in_two_nested_models():
    def branch(name):
        inp = keras.Input((4, 4, 1))
        return keras.Model(inp, keras.layers.Conv2D(2, 1, activation="relu", name="conv")(inp), name=name)

    inp = keras.Input((4, 4, 1))
    merged = keras.layers.Concatenate()([branch("left")(inp), branch("right")(inp)])
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(merged)))
    with pytest.raises(ValueError, match="ambiguous") as info:
        kg.GradCAM(model, layer="conv")
    assert "left/conv" in str(info.value) and "right/conv" in str(info.value)
    assert kg.GradCAM(model, layer="right/conv").layer == "right/conv"


# --- targets --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "targets",
    [2, np.int64(1), [0, 1, 2, 1], (2, 2, 0, 0), np.array([1, 0, 0, 2]), np.array([1, 0, 0, 2], np.int32)],
    ids=["int", "np-int", "list", "tuple", "array-int64", "array-int32"],
)
def test_target_forms(targets, model, cam):
    exp = cam(X, targets=targets)
    wanted = np.broadcast_to(np.asarray(targets), (4,))
    np.testing.assert_array_equal(exp.targets, wanted)
    logits = model.predict(X, verbose=0)
    np.testing.assert_allclose(exp.scores, logits[np.arange(4), wanted], rtol=1e-5, atol=1e-6)


def test_targets_none_is_the_top1_class(model, cam):
    exp = cam(X)
    logits = model.predict(X, verbose=0)
    np.testing.assert_array_equal(exp.targets, logits.argmax(-1))
    np.testing.assert_array_equal(exp.predictions, logits.argmax(-1))
    np.testing.assert_allclose(exp.scores, logits.max(-1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("targets", [3, [0, 3, 1, 2], np.array([0, 1, 2, 7])])
def test_out_of_range_target_names_the_valid_range(targets, cam):
    with pytest.raises(IndexError, match=r"0 \.\. 2"):
        cam(X, targets=targets)


@pytest.mark.parametrize("targets", [-1, [0, -2, 1, 1]])
def test_negative_target_is_an_index_error(targets, cam):
    with pytest.raises(IndexError):
        cam(X, targets=targets)


@pytest.mark.parametrize("targets", [[0, 1], [0, 1, 2, 1, 0], np.zeros(3, int)])
def test_wrong_number_of_targets(targets, cam):
    with pytest.raises(ValueError, match="4 samples"):
        cam(X, targets=targets)


@pytest.mark.parametrize("targets", [1.5, [0.0, 1.0, 2.0, 1.0], "cat", np.zeros((4, 1), int)])
def test_targets_of_wrong_type(targets, cam):
    with pytest.raises(TypeError):
        cam(X, targets=targets)
