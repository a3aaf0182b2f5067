"""kg.GuidedTraining with its defaults against two kinds of shortcut: a cue on one class only, a per-class watermark.

The fast test takes one SGD step on a hand-set model that reads nothing but the cue (a corner
pixel): with the defaults the step lowers the cue's weights; with the penalty replaced by zero
(``weight=0``) or by the old one-class map (the label's logit Grad-CAM, no composites) it raises
them, as plain training does. The slow test trains a tiny CNN on synthetic shapes and checks the
accuracy on held-out images without the cue.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from models import shortcut_cnn

import keras_gradcam as kg
from keras_gradcam import datasets
from keras_gradcam.training.alignment import composites
from keras_gradcam.training.report import progress_warning

OLD = {"score": "logit", "counterfactual": False}  # the defaults before: the label's logit Grad-CAM only


def _cue_model(kind: str) -> keras.Model:
    """4x4 images, 2 channels; 1x1 identity conv "conv"; Flatten; Dense(2) that reads the top-left pixel only.

    ``one_class``: ``y_1 = 4 * ch0[0, 0]``, ``y_0 = 2`` (a bias): class 0 is told by the cue's absence.
    ``watermark``: ``y_k = 4 * ch_k[0, 0]``: the colour of the corner names the class.
    """
    inputs = keras.Input((4, 4, 2))
    a = keras.layers.Conv2D(2, 1, use_bias=False, name="conv")(inputs)
    out = keras.layers.Dense(2, name="head")(keras.layers.Flatten()(a))
    model = keras.Model(inputs, out)
    model.get_layer("conv").set_weights([np.eye(2, dtype="float32")[None, None]])
    kernel = np.zeros((32, 2), "float32")  # Flatten order: (row, column, channel); pixel (0, 0) is rows 0 and 1
    if kind == "one_class":
        kernel[0, 1] = 4.0
        bias = np.array([2.0, 0.0], "float32")
    else:
        kernel[0, 0], kernel[1, 1] = 4.0, 4.0
        bias = np.zeros(2, "float32")
    model.get_layer("head").set_weights([kernel, bias])
    return model


def _cue_batch(kind: str):
    """Eight annotated images, classes 0, 1, 0, 1, ...: a 2x2 object (value 0.5, both channels) and the cue.

    A batch of 8 makes ``8 // 4 = 2`` composites: class 0's object on class 1's background and the reverse.
    """
    x = np.zeros((2, 4, 4, 2), "float32")
    masks = np.zeros((2, 4, 4), "float32")
    x[0, 2:, 2:], masks[0, 2:, 2:] = 0.5, 1  # class 0, object bottom right
    x[1, 2:, :2], masks[1, 2:, :2] = 0.5, 1  # class 1, object bottom left
    if kind == "one_class":
        x[1, 0, 0, 0] = 1.0  # the cue on class 1 only
    else:
        x[0, 0, 0, 0], x[1, 0, 0, 1] = 1.0, 1.0  # the class's colour
    return np.tile(x, (4, 1, 1, 1)), np.tile(np.array([0, 1], "int32"), 4), np.tile(masks, (4, 1, 1))


def _cue_weights(model, kind: str) -> np.ndarray:
    """The head's weights from the cue pixel to the class(es) it names."""
    kernel = model.get_layer("head").get_weights()[0]
    return np.array([kernel[0, 1]]) if kind == "one_class" else np.array([kernel[0, 0], kernel[1, 1]])


@pytest.mark.parametrize("kind", ["one_class", "watermark"])
def test_one_step_moves_off_the_cue_only_with_the_new_penalty(kind):
    x, y, masks = _cue_batch(kind)
    moves = {}
    for name, options in {"defaults": {}, "zero": {"weight": 0.0}, "old map": OLD}.items():
        model = _cue_model(kind)
        before = _cue_weights(model, kind)
        guided = kg.GuidedTraining(model, layer="conv", **options)
        guided.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                       run_eagerly=True)  # one step: tracing would cost more than it saves
        guided.fit(tf.data.Dataset.from_tensors((x, y, masks)), epochs=1, verbose=0)
        moves[name] = _cue_weights(model, kind) - before
    # with the cue in charge, plain training (and the old map, blind here: a one-pixel map's share does not
    # change with its scale, and class 0's evidence is a bias) only strengthens it
    assert (moves["zero"] > 0).all() and (moves["old map"] > 0).all(), moves
    assert (moves["defaults"] < 0).all(), moves  # the composites: the cue now names the wrong class


@pytest.mark.slow  # six trainings of a tiny CNN: 6 min on 2 cores shared with other jobs (load ~12)
@pytest.mark.parametrize("kind", ["one_class", "watermark"])
def test_guided_defaults_remove_the_shortcut_on_shapes(kind):
    """3 classes, 600 training images of 32x32 with the cue, masks on 10 %, 15 epochs (the robustness table's seed 0)."""
    classes = ("circle", "cross", "triangle")
    cue = {"one_class": {"cue_classes": (1,)}, "watermark": {}}[kind]
    biased = datasets.make_shapes(n=600, image_size=32, classes=classes, spurious_rate=1.0, seed=0,
                                  size_range=(0.4, 0.6), **cue)
    held_out = datasets.make_shapes(n=300, image_size=32, classes=classes, seed=100, size_range=(0.4, 0.6))
    chosen = np.zeros(600, bool)
    chosen[np.random.default_rng(0).choice(600, 60, replace=False)] = True
    masks = (biased.masks & chosen[:, None, None]).astype("float32")
    accuracy = {}
    for name, options in {"defaults": {}, "zero": {"weight": 0.0}, "old map": OLD}.items():
        keras.utils.set_random_seed(0)
        model = shortcut_cnn(32, 3)
        guided = kg.GuidedTraining(model, **options)
        guided.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy")
        ds = tf.data.Dataset.from_tensor_slices((biased.images, biased.labels, masks)).shuffle(600, seed=0).batch(32)
        guided.fit(ds, epochs=15, verbose=0)
        accuracy[name] = float((model.predict(held_out.images, verbose=0).argmax(1) == held_out.labels).mean())
    assert accuracy["defaults"] >= 0.8, accuracy  # a clean model: 97 %
    assert accuracy["zero"] < 0.7 and accuracy["old map"] < 0.75, accuracy


def test_composites_by_hand():
    """Object of ``a`` on the background of the previous annotated ``b``, ``b``'s object filled with its background's mean."""
    x = np.zeros((3, 2, 2, 1), "float32")
    x[0, ..., 0] = [[1, 2], [3, 4]]
    x[1, ..., 0] = [[9, 9], [9, 9]]  # not annotated: never used
    x[2, ..., 0] = [[5, 6], [7, 8]]
    masks = np.zeros((3, 2, 2), "float32")
    masks[0] = [[1, 0], [0, 0]]  # a = 0: object at the top left
    masks[2] = [[0, 0], [0, 1]]  # a = 2: object at the bottom right; its background 5, 6, 7 has mean 6
    got, index = composites(tf.constant(x), tf.constant(masks), tf.constant([True, False, True]))
    assert index.numpy().tolist() == [0, 2]
    # composite 0: object of 0 (1) on 2's background, 2's object (bottom right) filled with 6
    # composite 1: object of 2 (8) on 0's background (2, 3; 0's object at the top left filled with mean(2, 3, 4) = 3)
    np.testing.assert_allclose(got.numpy()[..., 0], [[[1, 6], [7, 6]], [[3, 2], [3, 8]]])
    first, index = composites(tf.constant(x), tf.constant(masks), tf.constant([True, False, True]), limit=1)
    assert index.numpy().tolist() == [0]  # its partner is still sample 2
    np.testing.assert_allclose(first.numpy()[..., 0], [[[1, 6], [7, 6]]])


def test_fit_warns_when_the_alignment_does_not_improve():
    x, y, masks = _cue_batch("watermark")
    model = _cue_model("watermark")
    guided = kg.GuidedTraining(model, layer="conv")
    guided.compile(optimizer=keras.optimizers.SGD(0.0), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.warns(UserWarning, match=r"over 2 epochs the alignment loss went from 1 to 1 \(it should fall\) and the "
                      r"share of the aligned map inside the masks, on the annotated images, went from 0% to 0% .*Try: "
                      r"more epochs"):
        guided.fit(tf.data.Dataset.from_tensors((x, y, masks)).repeat(2), epochs=2, verbose=0)


def test_progress_warning_only_when_it_did_not_improve():
    improved = {"alignment_loss": [0.6, 0.3], "evidence_inside": [0.2, 0.5]}
    assert progress_warning(improved, 1.0) is None
    assert progress_warning({"alignment_loss": [0.6, 0.59], "evidence_inside": [0.2, 0.5]}, 1.0).count("went from") == 1
    assert "from 50% to 40%" in progress_warning({"alignment_loss": [0.6, 0.3], "evidence_inside": [0.5, 0.4]}, 1.0)
    assert progress_warning({"alignment_loss": [0.6, 0.6], "evidence_inside": [0.2, 0.2]}, 0.0) is None  # weight 0
    assert progress_warning({"alignment_loss": [0.0, 0.0], "evidence_inside": [0.0, 0.0]}, 1.0) is None  # no masks
    assert progress_warning({"alignment_loss": [0.6], "evidence_inside": [0.2]}, 1.0) is None  # one epoch
