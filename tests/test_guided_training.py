"""kg.GuidedTraining: the alignment loss by hand, its gradient by finite differences, bit-identity."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gradcam as kg
from keras_gradcam.training.alignment import alignment_loss


def _pool_model():
    """x (4, 4, 1) -> identity 1x1 conv -> 2x2 average pool ("pool", 2x2) -> flatten -> Dense(2).

    Class 0's kernel is [1, 2, 3, 4] over the pooled positions, class 1's is zero, so
    d logit_0 / d A = [[1, 2], [3, 4]], w = 2.5 and the map is 2.5 * A (A >= 0).
    """
    inputs = keras.Input((4, 4, 1))
    a = keras.layers.Conv2D(1, 1, use_bias=False, name="conv")(inputs)
    a = keras.layers.AveragePooling2D(2, name="pool")(a)
    out = keras.layers.Dense(2, name="head")(keras.layers.Flatten()(a))
    model = keras.Model(inputs, out)
    model.get_layer("conv").set_weights([np.ones((1, 1, 1, 1), "float32")])
    kernel = np.zeros((4, 2), "float32")
    kernel[:, 0] = [1, 2, 3, 4]
    model.get_layer("head").set_weights([kernel, np.zeros(2, "float32")])
    return model


def _blocks(values):
    """A (4, 4, 1) image constant on each 2x2 block, blocks [[a, b], [c, d]]."""
    return np.kron(np.asarray(values, "float32"), np.ones((2, 2), "float32"))[..., None]


def test_alignment_loss_matches_hand_computation():
    model = _pool_model()
    guided = kg.GuidedTraining(model, layer="pool")
    x = np.stack([_blocks([[1, 2], [3, 4]])] * 4)
    y = np.zeros(4, "int32")
    inside = np.ones((4, 4), "float32")  # every block with evidence ... except none: all ones = no annotation
    top_left = np.zeros((4, 4), "float32")
    top_left[:2, :2] = 1  # resizes to [[1, 0], [0, 0]] exactly (2x2 block means)
    half = np.zeros((4, 4), "float32")
    half[:2, 0] = 1  # resizes to [[0.5, 0], [0, 0]]
    # map M = 2.5 * [[1, 2], [3, 4]], sum 25
    cases = {
        "top-left block": (top_left, (2.5 * (2 + 3 + 4)) / 25),  # 0.9
        "half of it": (half, (2.5 * 1 * 0.5 + 2.5 * 9) / 25),  # 0.95
    }
    for name, (mask, expected) in cases.items():
        _, loss = guided.forward(x[:1], y[:1], mask[None])
        np.testing.assert_allclose(float(loss), expected, rtol=1e-6, err_msg=name)
    # a map entirely inside the mask: evidence only in the top-left block
    x_in = _blocks([[5, 0], [0, 0]])[None]
    _, loss = guided.forward(x_in, y[:1], top_left[None])
    assert float(loss) == 0.0
    # the mean runs over annotated samples only: an all-ones and an all-zeros mask are left out
    batch_masks = np.stack([top_left, inside, np.zeros((4, 4), "float32"), half])
    _, loss = guided.forward(x, y, batch_masks)
    np.testing.assert_allclose(float(loss), (0.9 + 0.95) / 2, rtol=1e-6)
    # nothing annotated: zero; and a label whose logit ignores the layer (class 1): zero map, zero loss
    _, loss = guided.forward(x[:2], y[:2], np.stack([inside, np.zeros((4, 4), "float32")]))
    assert float(loss) == 0.0
    _, loss = guided.forward(x[:1], np.ones(1, "int32"), top_left[None])
    assert float(loss) == 0.0


def test_alignment_loss_at_input_resolution_through_a_softmax_head():
    """Layer at input resolution, softmax head looked through to its logit: M = x / 4 for class 0."""
    inputs = keras.Input((2, 2, 1))
    a = keras.layers.Conv2D(1, 1, use_bias=False, name="conv")(inputs)
    out = keras.layers.Dense(2, activation="softmax", name="head")(keras.layers.GlobalAveragePooling2D()(a))
    model = keras.Model(inputs, out)
    model.get_layer("conv").set_weights([np.ones((1, 1, 1, 1), "float32")])
    model.get_layer("head").set_weights([np.array([[1.0, -1.0]], "float32"), np.zeros(2, "float32")])
    guided = kg.GuidedTraining(model, layer="conv")
    x = np.array([[1, 0], [0, 3]], "float32")[None, ..., None]
    mask = np.array([[1, 0], [0, 0]], "float32")[None]
    _, loss = guided.forward(x, np.zeros(1, "int32"), mask)
    np.testing.assert_allclose(float(loss), 3 / 4, rtol=1e-6)  # (3/4 outside) / (4/4 in all)
    _, loss = guided.forward(x, np.zeros(1, "int32"), np.array([[1, 0], [0, 1]], "float32")[None])
    assert float(loss) == 0.0


def _float64_model():
    rng = np.random.default_rng(3)
    inputs = keras.Input((4, 4, 1), dtype="float64")
    a = keras.layers.Conv2D(2, 3, padding="same", activation="tanh", name="conv", dtype="float64")(inputs)
    out = keras.layers.Dense(3, name="head", dtype="float64")(keras.layers.Flatten(dtype="float64")(a))
    model = keras.Model(inputs, out)
    model.set_weights([rng.normal(size=w.shape) for w in model.get_weights()])
    return model


def test_training_gradient_matches_central_finite_difference():
    """One SGD(lr=1) step moves each weight by d(total)/dw; compare with a float64 central difference."""
    model = _float64_model()
    rng = np.random.default_rng(4)
    x = rng.random((3, 4, 4, 1))
    y = np.array([0, 1, 2], "int32")
    masks = np.zeros((3, 4, 4))
    masks[:, :2, :] = 1
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype="float64")
    probe = kg.GuidedTraining(model, layer="conv", weight=2.0)

    def total():  # the task loss plus weight * (the map term + the composites' cross-entropy)
        y_pred, align = probe.forward(x, y, masks)
        return float(ce(y, y_pred)) + 2.0 * (float(align) + float(probe.counterfactual_loss(x, y, masks)))

    picks = [(0, (1, 2, 0, 1)), (2, (5, 1)), (2, (17, 2))]  # conv kernel, head kernel (2nd-order path)
    weights = model.get_weights()
    expected = []
    for index, position in picks:
        h = 1e-6
        values = []
        for sign in (1, -1):
            moved = [w.copy() for w in weights]
            moved[index][position] += sign * h
            model.set_weights(moved)
            values.append(total())
        expected.append((values[0] - values[1]) / (2 * h))
    model.set_weights(weights)
    _, align = probe.forward(x, y, masks)
    assert 0.05 < float(align) < 0.95  # the alignment term is really in play

    guided = kg.GuidedTraining(model, layer="conv", weight=2.0)
    guided.compile(optimizer=keras.optimizers.SGD(1.0), loss=ce)
    guided.fit(tf.data.Dataset.from_tensors((x, y, masks)), epochs=1, verbose=0)
    after = model.get_weights()
    got = [weights[i][p] - after[i][p] for i, p in picks]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-8)


def _cnn(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    a = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    out = keras.layers.Dense(3, activation="softmax", name="head")(keras.layers.GlobalAveragePooling2D()(a))
    return keras.Model(inputs, out)


def _data(n=12):
    rng = np.random.default_rng(1)
    x = rng.random((n, 8, 8, 1)).astype("float32")
    y = (np.arange(n) % 3).astype("int32")
    masks = np.zeros((n, 8, 8), "float32")
    masks[:, :4, :4] = 1
    return x, y, masks


def _fit(model, data, guided=None, epochs=2):
    trainer = model if guided is None else kg.GuidedTraining(model, **guided)
    trainer.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    trainer.fit(tf.data.Dataset.from_tensor_slices(data).batch(4), epochs=epochs, verbose=0, shuffle=False)
    return trainer


def _twins():
    plain = _cnn()
    twin = keras.models.clone_model(plain)
    twin.set_weights(plain.get_weights())
    return plain, twin


def test_weight_zero_is_bit_identical_to_plain_fit():
    x, y, masks = _data()
    plain, twin = _twins()
    _fit(plain, (x, y))
    trainer = _fit(twin, (x, y, masks), guided={"weight": 0.0})
    assert trainer.get_metrics_result()["alignment_loss"] > 0  # the term was computed, with weight 0
    for a, b in zip(plain.get_weights(), twin.get_weights()):
        assert np.array_equal(a, b)
    # and a nonzero weight does change training
    _, third = _twins()
    _fit(third, (x, y, masks), guided={"weight": 1.0})
    assert not all(np.array_equal(a, b) for a, b in zip(plain.get_weights(), third.get_weights()))


@pytest.mark.parametrize("counterfactual", [False, True])
@pytest.mark.parametrize("kind", ["empty", "full", "absent"])
def test_no_masks_is_plain_training(kind, counterfactual):
    """Without composites, bit-identical; with them (an empty batch of composites joins the forward
    pass), the same up to float rounding."""
    x, y, masks = _data()
    plain, twin = _twins()
    _fit(plain, (x, y))
    if kind == "absent":
        data = (x, y)
    else:
        data = (x, y, np.zeros_like(masks) if kind == "empty" else np.ones_like(masks))
    trainer = _fit(twin, data, guided={"weight": 1.0, "counterfactual": counterfactual})
    assert trainer.get_metrics_result()["alignment_loss"] == 0
    for a, b in zip(plain.get_weights(), twin.get_weights()):
        if counterfactual:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        else:
            assert np.array_equal(a, b)


def test_trains_the_users_model_in_place_and_it_saves_unchanged(tmp_path):
    x, y, masks = _data()
    model = _cnn()
    config = model.get_config()
    before = [w.numpy().copy() for w in model.weights]
    attributes = {
        layer.name: (layer.__dict__.get("call"), getattr(layer, "activation", None)) for layer in model.layers
    }
    guided = _fit(model, (x, y, masks), guided={"weight": 1.0}, epochs=1)
    assert {id(v) for v in guided.trainable_variables} == {id(v) for v in model.trainable_variables}
    assert not all(np.array_equal(a, w.numpy()) for a, w in zip(before, model.weights))
    for layer in model.layers:  # every temporary wrapper was removed
        assert layer.__dict__.get("call") is attributes[layer.name][0]
        assert getattr(layer, "activation", None) is attributes[layer.name][1]
    np.testing.assert_allclose(guided.predict(x, verbose=0), model.predict(x, verbose=0), rtol=0, atol=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert model.get_config() == config  # the architecture is unchanged by guided training
    assert json.loads(loaded.to_json())["config"] == json.loads(json.dumps(config))  # (tuples read back as lists)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    logs = guided.evaluate(x, y, verbose=0, return_dict=True)
    assert set(logs) >= {"loss", "alignment_loss"}


def test_bad_arguments_name_what_was_received():
    model = _cnn()
    with pytest.raises(TypeError, match="model must be a keras.Model"):
        kg.GuidedTraining("model")
    with pytest.raises(ValueError, match="weight must be a finite number >= 0; got -1.0"):
        kg.GuidedTraining(model, weight=-1)
    with pytest.raises(ValueError, match="method must be one of 'gradcam', 'input_gradient'; got 'gradcam\\+\\+'"):
        kg.GuidedTraining(model, method="gradcam++")
    guided = kg.GuidedTraining(model)
    with pytest.raises(ValueError, match=r"masks must have shape .* got shape \(2, 8\)"):
        guided.forward(np.zeros((2, 8, 8, 1), "float32"), np.zeros(2, "int32"), np.zeros((2, 8), "float32"))
    with pytest.raises(ValueError, match="expects batches \\(x, y\\) or \\(x, y, masks\\)"):
        guided.train_step((1, 2, 3, 4))


def _two_region_model():
    """x (4, 4, 2) -> identity 1x1 conv -> 2x2 average pool -> Dense(2): y_0 = sum A^0, y_1 = -sum A^1.

    Channel 0 is evidence FOR class 0; channel 1 is evidence AGAINST class 1 (the shortcut a
    logit map cannot see: it lowers the other class instead of raising the label's).
    """
    inputs = keras.Input((4, 4, 2))
    a = keras.layers.Conv2D(2, 1, use_bias=False, name="conv")(inputs)
    a = keras.layers.AveragePooling2D(2, name="pool")(a)
    out = keras.layers.Dense(2, use_bias=False, name="head")(keras.layers.Flatten()(a))
    model = keras.Model(inputs, out)
    model.get_layer("conv").set_weights([np.eye(2, dtype="float32")[None, None]])
    kernel = np.zeros((8, 2), "float32")  # Flatten order (i, j, k) -> 4 i + 2 j + k
    kernel[0::2, 0] = 1
    kernel[1::2, 1] = -1
    model.get_layer("head").set_weights([kernel])
    return model


@pytest.mark.parametrize(
    "score, expected",
    [
        ("logit", 0.0),  # map A^0 = [[1, 0], [0, 0]]: all inside the top-left mask
        ("contrast", 0.5),  # y_0 - y_1: w = [1, 1], map A^0 + A^1 = [[1, 0], [0, 1]]
        ("log_prob", 0.5),  # log p_0: w = [p_1, p_1], the same map times p_1
    ],
)
def test_scores_that_see_evidence_against_the_other_class(score, expected):
    x = np.zeros((1, 4, 4, 2), "float32")
    x[0, :2, :2, 0] = 1  # channel 0 in the top-left block
    x[0, 2:, 2:, 1] = 1  # channel 1 in the bottom-right block
    mask = np.zeros((1, 4, 4), "float32")
    mask[0, :2, :2] = 1
    guided = kg.GuidedTraining(_two_region_model(), layer="pool", score=score)
    _, loss = guided.forward(x, np.zeros(1, "int32"), mask)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6, atol=1e-7)


def _hint_numpy(maps, masks, flags, eps=1e-8):
    """HINT's pairwise ranking penalty, written out with loops over the cell pairs."""
    values = []
    for m, h, flag in zip(maps, masks, flags):
        if not flag:
            continue
        g = m.ravel() / (m.mean() + eps)
        h = h.ravel()
        hinges = [max(0.0, g[b] - g[a]) for a in range(g.size) for b in range(g.size) if h[a] > h[b]]
        values.append(np.mean(hinges) if hinges else 0.0)
    return float(np.mean(values)) if values else 0.0


def test_hint_ranking_loss_matches_numpy():

    # hand values: a map inside the mask ranks right (0); a uniform map has no pair ranked wrong (0)
    inside = np.array([[[3.0, 0.0], [0.0, 0.0]]])
    top_left = np.array([[[1.0, 0.0], [0.0, 0.0]]])
    assert float(alignment_loss(tf.constant(inside), tf.constant(top_left), tf.constant([True]), "hint")) == 0
    uniform = np.ones((1, 2, 2))
    assert float(alignment_loss(tf.constant(uniform), tf.constant(top_left), tf.constant([True]), "hint")) == 0
    # [[1, 2], [3, 4]]: g = [[0.4, 0.8], [1.2, 1.6]]; pairs (top-left, b): (0.4 + 0.8 + 1.2) / 3 = 0.8
    ramp = np.array([[[1.0, 2.0], [3.0, 4.0]]])
    np.testing.assert_allclose(
        float(alignment_loss(tf.constant(ramp), tf.constant(top_left), tf.constant([True]), "hint")), 0.8, rtol=1e-7
    )
    # random maps, soft masks (three levels rank three groups of cells), one sample not annotated
    rng = np.random.default_rng(0)
    maps = rng.random((3, 3, 3))
    masks = rng.choice([0.0, 0.5, 1.0], size=(3, 3, 3))
    flags = np.array([True, False, True])
    got = float(alignment_loss(tf.constant(maps), tf.constant(masks), tf.constant(flags), "hint"))
    np.testing.assert_allclose(got, _hint_numpy(maps, masks, flags), rtol=1e-12)
    assert got > 0


def test_bad_loss_and_score_name_the_choices():
    model = _cnn()
    with pytest.raises(ValueError, match="loss must be one of 'rrr', 'hint'; got 'gain'"):
        kg.GuidedTraining(model, loss="gain")
    with pytest.raises(ValueError, match="score must be one of 'logit', 'contrast', 'log_prob', 'sum_log_prob'; got 'prob'"):
        kg.GuidedTraining(model, score="prob")
