"""``kg.audit``: the flagged region, consistency and causal check, pinned on hand-set models.

The fast tests use two tiny models whose logits are worked out by hand: ``corner_model`` reads
only the top-left 4x4 patch (class 0 = mean red there, class 1 = mean green), ``everywhere_model``
the whole image. With HiResCAM (gradient times activation, element-wise) the first model's maps
are non-zero only in the corner, the second's only where the colour is, so the expected
frequencies, regions and accuracies after painting follow by hand. The slow tests train the
small CNN on cues made with ``keras_gradcam.datasets`` and check the audit finds them.
"""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gradcam as kg
from keras_gradcam import datasets
from keras_gradcam.audit.analysis import Keeper, consistency, describe_region, flagged_region, top_regions
from keras_gradcam.audit.causal import paint
from tests.models import trained_audit_cnn

SIZE = 16
SCALE = 100.0  # head weight: confident softmax probabilities


def _model(crop: bool) -> keras.Model:
    """1x1 conv picking (R, G) -> [crop to the top-left 4x4] -> mean -> Dense(SCALE * identity)."""
    inp = keras.Input((SIZE, SIZE, 3))
    conv = keras.layers.Conv2D(2, 1, use_bias=False, name="conv")
    h = conv(inp)
    if crop:
        h = keras.layers.Cropping2D(((0, SIZE - 4), (0, SIZE - 4)))(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    dense = keras.layers.Dense(2, use_bias=False, name="head")
    model = keras.Model(inp, keras.layers.Softmax()(dense(h)))
    conv.set_weights([np.array([[[[1, 0], [0, 1], [0, 0]]]], np.float32)])
    dense.set_weights([SCALE * np.eye(2, dtype=np.float32)])
    return model


def corner_data(n=12, seed=0):
    """Images with a grey-blue background, the 4x4 corner red (class 0) or green (class 1)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    x = np.zeros((n, SIZE, SIZE, 3), np.float32)
    x[..., 0], x[..., 1], x[..., 2] = 0.1, 0.3, 0.5
    x[labels == 0, :4, :4] = (1.0, 0.0, 0.0)
    x[labels == 1, :4, :4] = (0.0, 1.0, 0.0)
    # objects elsewhere (the masks): a 3x3 blue square, never in the corner, no red or green
    masks = np.zeros((n, SIZE, SIZE), bool)
    for i in range(n):
        y0, x0 = rng.integers(6, SIZE - 3, 2)
        masks[i, y0 : y0 + 3, x0 : x0 + 3] = True
    x[masks] = (0.0, 0.0, 1.0)
    return x, labels, masks


def moving_data(n=20, seed=0):
    """Black images with one 3x3 square, red (class 0) or green (class 1), at a random place."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    x = np.zeros((n, SIZE, SIZE, 3), np.float32)
    masks = np.zeros((n, SIZE, SIZE), bool)
    corners = rng.integers(0, SIZE - 3, (n, 2))
    for i, (y0, x0) in enumerate(corners):
        masks[i, y0 : y0 + 3, x0 : x0 + 3] = True
        x[i, y0 : y0 + 3, x0 : x0 + 3, labels[i]] = 1.0
    return x, labels, masks


@pytest.fixture(scope="module")
def corner_model():
    return _model(crop=True)


@pytest.fixture(scope="module")
def everywhere_model():
    return _model(crop=False)


# -- the maths on hand-made maps -----------------------------------------------------------------
def test_top_regions_keep_the_k_largest_pixels_and_nothing_of_a_zero_map():
    h = np.zeros((2, 4, 5), np.float32)
    h[0] = np.arange(20).reshape(4, 5)  # k = round(0.1 * 20) = 2: the values 19 and 18
    r = top_regions(h, 0.1)
    assert r[0].sum() == 2 and r[0, 3, 4] and r[0, 3, 3]
    assert not r[1].any()


def test_frequency_region_and_consistency_by_hand():
    f = np.zeros((4, 4))
    f[0, 0], f[0, 1], f[2, 2] = 0.9, 0.6, 0.3
    s = flagged_region(f, 0.5)
    assert s.sum() == 2 and s[0, 0] and s[0, 1]
    assert consistency(f, s) == pytest.approx(1.5 / 1.8)
    assert consistency(np.zeros((3, 3)), np.zeros((3, 3), bool)) == 0.0


def test_describe_region_names_the_grid_cell_and_the_area():
    r = np.zeros((10, 10), bool)
    r[7:10, 7:10] = True
    assert describe_region(r) == "the bottom-right 9 %"
    r = np.zeros((10, 10), bool)
    r[4:6, 4:6] = True
    assert describe_region(r) == "the centre 4 %"
    r = np.zeros((10, 10), bool)
    r[0, 2:8] = True
    assert describe_region(r) == "the top 6 %"
    r = np.zeros((10, 10), bool)
    r[0, :], r[-1, :], r[:, 0] = True, True, True  # three sides of a frame (28 pixels): its centroid is not where it is
    assert describe_region(r) == "the border 28 %"
    r = np.zeros((10, 10), bool)
    r[4:6, :2], r[4:6, -2:] = True, True  # two pieces of a frame, on opposite sides
    assert describe_region(r) == "the left and right edges 8 %"


def test_keeper_keeps_the_smallest_keys_over_batches():
    k = Keeper(3)
    k.offer(np.array([5.0, 1.0]), index=np.array([0, 1]))
    k.offer(np.array([3.0, 0.0, 9.0]), index=np.array([2, 3, 4]))
    assert k.items["index"].tolist() == [3, 1, 2]


def test_paint_mean_colour_only_inside_the_region_and_the_input_unchanged():
    x = np.ones((1, 3, 3, 3), np.float32)
    region = np.zeros((1, 3, 3), bool)
    region[0, 0, 0] = True
    out = paint(x, region, "mean", np.array([0.1, 0.2, 0.3]))
    assert np.allclose(out[0, 0, 0], [0.1, 0.2, 0.3]) and np.all(out[0, 1:] == 1) and np.all(x == 1)


# -- the audit on hand-set models ----------------------------------------------------------------
def test_corner_cue_is_flagged_with_its_region_and_the_accuracy_after_painting(corner_model):
    x, y, _ = corner_data()
    report = kg.audit(corner_model, x, y, class_names=["red", "green"], method="hirescam", layer="conv", batch_size=5)
    corner = np.zeros((SIZE, SIZE), bool)
    corner[:4, :4] = True
    # maps are g * A, non-zero only in the corner: each image's top region is the 16 corner pixels
    for c in (0, 1):
        assert np.array_equal(report.regions[c], corner)
        assert report.classes[c].flagged and report.classes[c].consistency == pytest.approx(1.0)
        assert report.classes[c].region == "the top-left 6 %"  # 16 / 256 = 6.25 %
        assert report.classes[c].accuracy == 1.0
    # painting the corner with the mean colour: both classes then see the same (R, G), by hand
    mean = x.reshape(-1, 3).mean(0)
    predicted = int(mean[1] > mean[0])
    assert report.classes[predicted].accuracy_after == 1.0
    assert report.classes[1 - predicted].accuracy_after == 0.0
    assert "accuracy 100 % -> 0 % when the top-left 6 % of the image is covered" in str(report)


def test_evidence_that_moves_with_the_object_is_not_flagged(everywhere_model):
    x, y, masks = moving_data()
    report = kg.audit(everywhere_model, x, y, method="hirescam", layer="conv", batch_size=8)
    assert report.flagged == [] and not report.regions.any()
    # the map of image i is its square (value 1) and 0 elsewhere, so F is the squares' coverage
    for c in (0, 1):
        expected = masks[y == c].mean(0)
        assert np.allclose(report.frequencies[c], expected)
        assert np.allclose(report.mean_heatmaps[c], expected, atol=1e-6)
        assert report.classes[c].accuracy_after is None
    assert "evidence moves from image to image; not flagged" in str(report)


def test_masks_find_the_images_right_for_the_wrong_reason(corner_model):
    x, y, masks = corner_data()
    report = kg.audit(corner_model, x, y, masks=masks, method="hirescam", layer="conv")
    # every image is classified right (softmax of a 6.25 logit gap: p > 0.99) by the corner alone:
    # no energy on the object, the maximum off it
    for c in report.classes:
        assert c.energy == 0.0 and c.pointing == 0.0 and c.wrong_reason == 6
    assert report.per_image["wrong_reason"].all()
    assert report.examples[0]["wrong"]["index"].tolist() == [0, 2, 4, 6]  # ties kept in order, 4 shown


def test_default_pointing_tolerance_is_15_224ths_of_the_shorter_side():
    """On 16 x 32 images the default tolerance is 15 * 16 / 224 = 1.07 px (the shorter side), not
    15 * 32 / 224 = 2.14 px: an object pixel at d^2 = 2 from the map's maximum is a miss."""
    inp = keras.Input((SIZE, 2 * SIZE, 3))
    conv = keras.layers.Conv2D(2, 1, use_bias=False, name="conv")
    h = keras.layers.Cropping2D(((0, SIZE - 4), (0, 2 * SIZE - 4)))(conv(inp))
    dense = keras.layers.Dense(2, use_bias=False)
    model = keras.Model(inp, keras.layers.Softmax()(dense(keras.layers.GlobalAveragePooling2D()(h))))
    conv.set_weights([np.array([[[[1, 0], [0, 1], [0, 0]]]], np.float32)])
    dense.set_weights([SCALE * np.eye(2, dtype=np.float32)])
    y = np.arange(8) % 2
    x = np.zeros((8, SIZE, 2 * SIZE, 3), np.float32)
    x[y == 0, :4, :4, 0] = 1.0  # a red corner: class 0; green: class 1
    x[y == 1, :4, :4, 1] = 1.0
    masks = np.zeros((8, SIZE, 2 * SIZE), bool)
    masks[:, 1, 1] = True  # the HiResCAM map is flat on the corner: its maximum is (0, 0), d^2 = 2
    report = kg.audit(model, x, y, masks=masks, method="hirescam", layer="conv")
    assert report.thresholds["tolerance"] == pytest.approx(15 * 16 / 224)
    assert [c.pointing for c in report.classes] == [0.0, 0.0]
    report = kg.audit(model, x, y, masks=masks, method="hirescam", layer="conv", tolerance=2)
    assert [c.pointing for c in report.classes] == [1.0, 1.0]  # d^2 = 2 < 4
    with pytest.raises(ValueError, match="tolerance must be a finite number >= 0; got -1.0"):
        kg.audit(model, x, y, masks=masks, method="hirescam", layer="conv", tolerance=-1)


def test_without_labels_classes_are_the_predictions(corner_model):
    x, y, _ = corner_data()
    report = kg.audit(corner_model, x, method="hirescam", layer="conv")
    assert np.array_equal(report.per_image["label"], y)  # the prediction, which is right here
    assert "predictions kept 100 %" in str(report)


def test_a_dataset_gives_what_the_arrays_give(corner_model):
    import tensorflow as tf

    x, y, masks = corner_data()
    a = kg.audit(corner_model, x, y, masks=masks, method="hirescam", layer="conv", batch_size=4)
    for ds in (tf.data.Dataset.from_tensor_slices((x, y, masks)),
               tf.data.Dataset.from_tensor_slices((x, y, masks)).batch(5)):
        b = kg.audit(corner_model, ds, method="hirescam", layer="conv", batch_size=4)
        assert a.to_dict()["classes"] == b.to_dict()["classes"]
        assert np.allclose(a.frequencies, b.frequencies)


def test_save_writes_a_self_contained_page_and_a_summary(corner_model, tmp_path):
    x, y, masks = corner_data()
    report = kg.audit(corner_model, x, y, masks=masks, class_names=["red", "green"], method="hirescam", layer="conv")
    page = report.save(str(tmp_path / "audit"))
    text = open(page, encoding="utf-8").read()
    assert text.count("data:image/png;base64,") >= 8
    assert "http://" not in text and "https://" not in text and "<script" not in text
    assert "the top-left 6 %" in text and "right for the wrong reason" in text
    summary = json.loads((tmp_path / "audit" / "summary.json").read_text())
    assert summary["flagged"] == ["red", "green"] and summary["images"] == 12
    assert summary["classes"][0]["region"] == "the top-left 6 %"
    assert sorted(os.listdir(tmp_path / "audit")) == ["index.html", "summary.json"]  # no .partial left


def test_the_model_is_not_changed(corner_model):
    before = [w.copy() for w in corner_model.get_weights()]
    x, y, _ = corner_data()
    kg.audit(corner_model, x, y, method="hirescam", layer="conv", fill="blur")
    assert all(np.array_equal(a, b) for a, b in zip(before, corner_model.get_weights()))


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"labels": np.zeros(3)}, ValueError, "labels must be an array with 1 axes and 12 samples"),
        ({"labels": np.full(12, 5)}, ValueError, "labels must be class indices 0 .. 1"),
        ({"class_names": ["a"]}, ValueError, "class_names has 1 names but the model has 2 classes"),
        ({"top": 10}, ValueError, "Write 10 % as 0.1"),
        ({"fill": "black"}, ValueError, "fill must be 'mean'"),
        ({"method": "nope"}, ValueError, "nope"),
        ({"batch_size": "8"}, TypeError, "batch_size"),
    ],
)
def test_bad_arguments_say_what_was_received_and_what_to_do(corner_model, kwargs, error, words):
    x, y, _ = corner_data()
    args = {"labels": y, "method": "hirescam", "layer": "conv", **kwargs}
    with pytest.raises(error, match=words):
        kg.audit(corner_model, x, **args)


def test_text_labels_are_mapped_to_classes_by_name(corner_model):
    """Class names as labels (str arrays, or bytes from a tf.data.Dataset) give the audit of the class indices."""
    x, y, _ = corner_data()
    names = np.array(["red", "green"])[y]
    args = {"method": "hirescam", "layer": "conv", "batch_size": 5}
    ref = kg.audit(corner_model, x, y, class_names=["red", "green"], **args)
    for data, labels in ((x, names), (tf.data.Dataset.from_tensor_slices((x, names)).batch(5), None)):
        report = kg.audit(corner_model, data, labels, class_names=["red", "green"], **args)
        np.testing.assert_array_equal(report.per_image["label"], y)
        assert [c.images for c in report.classes] == [c.images for c in ref.classes] == [6, 6]
    # the order of class_names decides the index: "green" first makes green class 0
    swapped = kg.audit(corner_model, x, names, class_names=["green", "red"], **args)
    np.testing.assert_array_equal(swapped.per_image["label"], 1 - y)
    with pytest.raises(ValueError, match="the labels are text \\(\\['red', 'green'\\]\\), but no class_names= was given"):
        kg.audit(corner_model, x, names, **args)
    with pytest.raises(ValueError, match="labels \\['green'\\] are not in class_names \\['red', 'blue'\\]"):
        kg.audit(corner_model, x, names, class_names=["red", "blue"], **args)


def test_data_of_the_wrong_kind(corner_model):
    with pytest.raises(TypeError, match="tf.data.Dataset; got list"):
        kg.audit(corner_model, [np.zeros((SIZE, SIZE, 3))], method="hirescam", layer="conv")


# -- trained on cues made with keras_gradcam.datasets ---------------------------------------------
def with_cue(ds: datasets.SyntheticShapes, cue: str) -> np.ndarray:
    """The images of ``ds`` regenerated with ``cue`` on every image (same seed: same objects)."""
    return datasets.make_shapes(**{**ds.config, "spurious_rate": 1.0, "cue": cue}).images


def border(ds: datasets.SyntheticShapes) -> np.ndarray:
    """The images with a 2 px frame (at 32 px) in the class's cue colour: ``cue="border"``."""
    return with_cue(ds, "border")


def background(ds: datasets.SyntheticShapes) -> np.ndarray:
    """The images with their background tinted 40 % towards the class's cue colour: ``cue="background"``."""
    return with_cue(ds, "background")


@pytest.mark.slow
def test_trained_corner_watermark_is_flagged_and_covering_it_drops_the_accuracy():
    train = datasets.make_shapes(n=900, image_size=32, spurious_rate=1.0, seed=0)
    test = datasets.make_shapes(n=300, image_size=32, spurious_rate=1.0, seed=1)
    report = kg.audit(trained_audit_cnn(train.images, train.labels), test.images, test.labels, layer="last_conv")
    y0, x0, y1, x1 = datasets.cue_region(32)
    for c in report.classes:
        assert c.flagged and "top-left" in c.region and c.accuracy > 0.9
        assert report.regions[c.index, y0:y1, x0:x1].mean() > 0.5  # the region covers the watermark
    # covered with the mean colour, the corner reads as one class's watermark: the others collapse
    after = sorted(c.accuracy_after for c in report.classes)
    assert after[1] < 0.1 and np.mean(after) < 0.5


@pytest.mark.slow
def test_trained_border_is_flagged_as_the_border_and_the_maps_miss_the_objects():
    train = datasets.make_shapes(n=900, image_size=32, seed=0)
    test = datasets.make_shapes(n=300, image_size=32, seed=1)
    model = trained_audit_cnn(border(train), train.labels)
    report = kg.audit(model, border(test), test.labels, masks=test.masks, layer="last_conv")
    band = np.ones((32, 32), bool)
    band[4:-4, 4:-4] = False
    for c in report.classes:
        assert c.flagged and c.accuracy > 0.9
        assert (report.regions[c.index] & band).sum() > 0.5 * report.regions[c.index].sum()
        assert c.energy < 0.15 and c.wrong_reason > 0.8 * c.images
    # the frame is read all round: covering the flagged part of it leaves enough of the colour
    # (an honest limit of the causal check, said in docs/audit.md), so no drop is asserted here


@pytest.mark.slow
def test_trained_background_colour_is_caught_by_the_masks_and_a_clean_model_raises_no_alarm():
    train = datasets.make_shapes(n=900, image_size=32, seed=0)
    test = datasets.make_shapes(n=300, image_size=32, seed=1)
    biased = kg.audit(trained_audit_cnn(background(train), train.labels), background(test), test.labels, masks=test.masks,
                      layer="last_conv")
    # the background is everywhere around the object, so its place moves: found by the masks only
    for c in biased.classes:
        assert c.accuracy > 0.9 and c.energy < 0.15 and c.wrong_reason > 0.5 * c.images
    clean = kg.audit(trained_audit_cnn(train.images, train.labels, epochs=6), test.images, test.labels, masks=test.masks,
                     layer="last_conv")
    assert clean.flagged == []
    for c in clean.classes:
        assert c.wrong_reason < 0.1 * c.images and c.energy > biased.classes[c.index].energy
