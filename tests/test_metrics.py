"""Metrics pinned to values worked out by hand on tiny arrays and tiny hand-set models."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from scipy import stats

import keras_gradcam as kg
from keras_gradcam import metrics as M
from keras_gradcam.metrics.occlusion import occlusion_grid
from keras_gradcam.metrics.sanity import redraw
from keras_gradcam.metrics.stats import label_components, rise_kernel


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, np.float64)))


# ---------------------------------------------------------------------------------------------
# Tiny models with hand-set weights
# ---------------------------------------------------------------------------------------------
def linear_model(weights, bias=0.0, size=(2, 2)) -> keras.Model:
    """``logit_0 = sum_p w_p x_p + b`` (row-major pixels), ``logit_1 = 0``, softmax head.

    So ``p_0 = sigmoid(logit_0)`` and every perturbation's score is known by hand.
    """
    h, w = size
    inp = keras.Input((h, w, 1))
    flat = keras.layers.Flatten()(inp)
    out = keras.layers.Dense(2, activation="softmax", name="head")(flat)
    model = keras.Model(inp, out)
    kernel = np.zeros((h * w, 2), np.float32)
    kernel[:, 0] = np.asarray(weights, np.float32).ravel()
    model.get_layer("head").set_weights([kernel, np.array([bias, 0.0], np.float32)])
    return model


@pytest.fixture(scope="module")
def lin():
    # pixels (0,0)=1, (0,1)=2, (1,0)=3, (1,1)=4
    return linear_model([1.0, 2.0, 3.0, 4.0])


@pytest.fixture(scope="module")
def cnn():
    keras.utils.set_random_seed(3)
    inp = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(5, activation="relu", name="d1")(x)
    out = keras.layers.Dense(3, activation="softmax", name="d2")(x)
    return keras.Model(inp, out)


ONES = np.ones((1, 2, 2, 1), np.float32)


# ---------------------------------------------------------------------------------------------
# Energy pointing game
# ---------------------------------------------------------------------------------------------
def box_mask(n=1, size=8, box=(2, 1, 5, 4)):
    m = np.zeros((n, size, size), bool)
    y0, x0, y1, x1 = box
    m[:, y0:y1, x0:x1] = True
    return m


def test_epg_inside_box_map_is_one():
    m = box_mask()
    assert M.energy_pointing_game(m.astype(float), m) == 1.0


def test_epg_uniform_map_is_area_fraction():
    m = box_mask()  # 3 x 3 of 64 pixels
    assert M.energy_pointing_game(np.full((1, 8, 8), 0.3), m) == pytest.approx(9 / 64)


def test_epg_by_hand_and_per_image():
    h = np.array([[[1.0, 3.0], [0.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]])
    m = np.array([[[True, False], [False, True]]] * 2)
    per = M.energy_pointing_game(h, m, reduction=None)
    np.testing.assert_allclose(per, [5 / 8, 0.0])  # a zero map scores 0, documented
    assert M.energy_pointing_game(h, m) == pytest.approx(5 / 16)


def test_epg_random_map_close_to_area_fraction():
    rng = np.random.default_rng(0)
    m = box_mask(n=200, size=16, box=(0, 0, 8, 4))  # area fraction 1/8
    assert M.energy_pointing_game(rng.random((200, 16, 16)), m) == pytest.approx(1 / 8, abs=0.01)


def test_epg_accepts_an_explanation_object():
    m = box_mask()
    exp = kg.Explanation(m.astype(np.float32), m.astype(np.float32), None, np.zeros(1), "l", "gradcam")
    assert M.energy_pointing_game(exp, m) == 1.0


def test_mask_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"masks has shape \(2, 4, 4\) but heatmaps has shape \(2, 5, 5\)"):
        M.energy_pointing_game(np.ones((2, 5, 5)), np.ones((2, 4, 4), bool))
    with pytest.raises(ValueError, match=r"\(3, 5, 5\).*\(2, 5, 5\)"):
        M.pointing_game(np.ones((2, 5, 5)), np.ones((3, 5, 5), bool))


def test_map_without_sample_axis_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\(n_samples, height, width\).*heatmap\[None\]"):
        M.energy_pointing_game(np.ones((5, 5)), np.ones((5, 5), bool))


def test_negative_maps_are_rejected_by_energy():
    with pytest.raises(ValueError, match="negative"):
        M.energy_pointing_game(-np.ones((1, 3, 3)), np.ones((1, 3, 3), bool))


# ---------------------------------------------------------------------------------------------
# Pointing game
# ---------------------------------------------------------------------------------------------
def test_pointing_game_hit_and_miss_with_tolerance():
    h = np.zeros((1, 10, 10))
    h[0, 0, 0] = 1.0
    m = np.zeros((1, 10, 10), bool)
    m[0, 3, 4] = True  # distance^2 = 9 + 16 = 25
    assert M.pointing_game(h, m, tolerance=0) == 0.0
    assert M.pointing_game(h, m, tolerance=5) == 0.0  # strict: 25 < 25 is false
    assert M.pointing_game(h, m, tolerance=5.01) == 1.0
    assert M.pointing_game(h, m, tolerance=15) == 1.0
    assert M.pointing_game(h, m) == 0.0  # default: 15 * 10 / 224 = 0.67 px, the maximum itself must hit


@pytest.mark.parametrize("size", [16, 24, 32])
def test_pointing_game_default_tolerance_scales_with_the_image(size):
    """A map peaking at the image's corner, 4 px above a 4x8 box: TorchRay's fixed 15 px would call it
    a hit on any small image; the default, 15 px at 224 px scaled (1.07 px at 16, 2.14 px at 32), a miss."""
    h = np.zeros((1, size, size))
    h[0, 0, 0] = 1.0
    m = np.zeros((1, size, size), bool)
    m[0, 4:8, 0:8] = True  # nearest object pixel (4, 0): d^2 = 16
    assert M.pointing_game(h, m) == 0.0
    assert M.pointing_game(h, m, tolerance=15) == 1.0
    assert M.pointing_tolerance((size, size)) == pytest.approx(15 * size / 224)


def test_pointing_game_default_tolerance_by_hand():
    # 224 px: exactly TorchRay's 15 px; the shorter side counts (224 x 448 too); strict d^2 < 225
    assert M.pointing_tolerance((224, 224)) == 15.0
    assert M.pointing_tolerance((224, 448)) == M.pointing_tolerance((448, 224)) == 15.0
    assert M.pointing_tolerance((32, 32)) == pytest.approx(2.142857, abs=1e-6)
    for shape in [(224, 224), (224, 448)]:
        h = np.zeros((2, *shape))
        h[:, 0, 0] = 1.0
        m = np.zeros((2, *shape), bool)
        m[0, 9, 12] = True  # d^2 = 81 + 144 = 225: not < 225, a miss
        m[1, 9, 11] = True  # d^2 = 81 + 121 = 202: a hit
        np.testing.assert_array_equal(M.pointing_game(h, m, reduction=None), [0.0, 1.0])
    # 448 px: 30 px, so d^2 = 225 is a hit; 16 px: 1.07 px, so a 4-neighbour (d^2 = 1) is a hit
    h = np.zeros((1, 448, 448))
    h[0, 0, 0] = 1.0
    m = np.zeros((1, 448, 448), bool)
    m[0, 9, 12] = True
    assert M.pointing_game(h, m) == 1.0 and M.pointing_game(h, m, tolerance=15) == 0.0
    h, m = np.zeros((1, 16, 16)), np.zeros((1, 16, 16), bool)
    h[0, 0, 0], m[0, 0, 1] = 1.0, True
    assert M.pointing_game(h, m) == 1.0 and M.pointing_game(h, m, tolerance=0) == 0.0
    assert M.pointing_game(h, m, tolerance=1) == 0.0  # d^2 = 1 is not < 1


@pytest.mark.parametrize("shape", [(32,), (0, 32), (32, 32, 3), "32x32", (16.5, 16)])
def test_pointing_tolerance_refuses_a_shape_that_is_not_two_sizes(shape):
    with pytest.raises(ValueError, match=r"shape must be \(height, width\)"):
        M.pointing_tolerance(shape)


def test_pointing_game_inside_mask_and_ties_row_major():
    h = np.zeros((2, 4, 4))
    h[:, 1, 3] = 1.0
    h[:, 2, 0] = 1.0  # a tie: (1, 3) comes first in row-major order
    m = np.zeros((2, 4, 4), bool)
    m[0, 1, 3] = True
    m[1, 2, 0] = True
    np.testing.assert_array_equal(M.pointing_game(h, m, tolerance=0, reduction=None), [1.0, 0.0])
    assert M.pointing_game(h, m, tolerance=0) == 0.5


def test_pointing_game_empty_mask_raises():
    with pytest.raises(ValueError, match=r"images \[1\] are empty"):
        M.pointing_game(np.ones((2, 3, 3)), np.array([np.ones((3, 3)), np.zeros((3, 3))], bool))


# ---------------------------------------------------------------------------------------------
# Localisation
# ---------------------------------------------------------------------------------------------
def two_component_map():
    h = np.zeros((1, 6, 8))
    h[0, 1:3, 1:4] = 1.0  # component A: 6 pixels, box (1, 1, 3, 4)
    h[0, 4:6, 5:8] = 0.5  # component B: 6 pixels too, box (4, 5, 6, 8)
    h[0, 5, 4] = 0.2  # joins B -> 7 pixels, box (4, 4, 6, 8)
    h[0, 0, 7] = 0.1  # below 15 % of the max: background
    return h


def test_localization_largest_component_box_and_iou_by_hand():
    h = two_component_map()
    res = M.localization(h, [[4, 4, 6, 7]])
    assert res.boxes.tolist() == [[4, 4, 6, 8]]
    # intersection 2 x 3 = 6; union 8 + 6 - 6 = 8
    assert res.ious[0] == pytest.approx(6 / 8)
    assert res.hits.tolist() == [True] and res.accuracy == 1.0
    res = M.localization(h, [[1, 1, 3, 4]])
    assert res.ious[0] == 0.0 and res.accuracy == 0.0


def test_localization_threshold_is_inclusive_and_relative_to_max():
    h = two_component_map()
    h[0, 5, 4] = 0.15  # exactly 15 % of the max: foreground (>=)
    assert M.localization(h, [[4, 4, 6, 8]]).boxes.tolist() == [[4, 4, 6, 8]]
    h[0, 5, 4] = 0.149
    # now both components have 6 pixels; the tie goes to the first in row-major order (A)
    assert M.localization(h, [[4, 4, 6, 8]]).boxes.tolist() == [[1, 1, 3, 4]]


def test_localization_connectivity_4_vs_8():
    h = np.zeros((1, 5, 5))
    h[0, 0, 0] = h[0, 1, 1] = h[0, 2, 2] = 1.0  # a diagonal: one 8-component, three 4-components
    h[0, 4, 3:5] = 1.0  # a horizontal pair
    assert M.localization(h, [[0, 0, 3, 3]], connectivity=8).boxes.tolist() == [[0, 0, 3, 3]]
    assert M.localization(h, [[0, 0, 3, 3]], connectivity=4).boxes.tolist() == [[4, 3, 5, 5]]


def test_localization_zero_map_and_several_gt_boxes():
    h = np.zeros((2, 6, 8))
    h[1] = two_component_map()[0]
    gt = np.array([[[0, 0, 2, 2], [0, 0, 0, 0]], [[0, 0, 1, 1], [4, 4, 6, 8]]])  # second row of image 0 = padding
    res = M.localization(h, gt)
    assert res.boxes.tolist() == [[0, 0, 0, 0], [4, 4, 6, 8]]
    np.testing.assert_allclose(res.ious, [0.0, 1.0])
    assert res.accuracy == 0.5


# A drawing of two images: 4-connected, five components; 8-connected, (0,4) and (1,3) touch at a
# corner and merge. Every foreground pixel is labelled with the row-major index, within its image,
# of its component's first pixel; background is -1.
DRAWN = np.array(
    [
        [[1, 1, 0, 0, 1],
         [0, 1, 0, 1, 0],
         [0, 0, 0, 0, 0],
         [1, 0, 1, 1, 0]],
        [[1, 0, 0, 0, 0],
         [0, 1, 0, 0, 0],
         [0, 0, 0, 0, 0],
         [0, 0, 0, 0, 1]],
    ],
    bool,
)
_ = -1
DRAWN_LABELS = {
    4: [
        [[0, 0, _, _, 4],
         [_, 0, _, 8, _],
         [_, _, _, _, _],
         [15, _, 17, 17, _]],
        [[0, _, _, _, _],
         [_, 6, _, _, _],
         [_, _, _, _, _],
         [_, _, _, _, 19]],
    ],
    8: [
        [[0, 0, _, _, 4],
         [_, 0, _, 4, _],
         [_, _, _, _, _],
         [15, _, 17, 17, _]],
        [[0, _, _, _, _],
         [_, 0, _, _, _],
         [_, _, _, _, _],
         [_, _, _, _, 19]],
    ],
}


@pytest.mark.parametrize("connectivity", [4, 8])
def test_connected_components_of_a_drawing(connectivity):
    """Labels read off the drawing by hand; the images of a batch never connect to each other (pixel
    (0, 0) is set in both: joined across the batch axis, image 1's would be labelled 0 - 20)."""
    np.testing.assert_array_equal(label_components(DRAWN, connectivity), DRAWN_LABELS[connectivity])


def test_boxes_masks_round_trip():
    boxes = np.array([[1, 2, 4, 5], [0, 0, 6, 1]])
    masks = M.boxes_to_masks(boxes, (6, 7))
    assert masks.sum(axis=(1, 2)).tolist() == [9, 6]
    np.testing.assert_array_equal(M.masks_to_boxes(masks), boxes)
    with pytest.raises(ValueError, match=r"boxes has shape \(2, 3\)"):
        M.localization(np.ones((2, 6, 7)), np.ones((2, 3)))


# ---------------------------------------------------------------------------------------------
# Instance coverage, area, entropy
# ---------------------------------------------------------------------------------------------
def test_instance_coverage_by_hand():
    h = np.zeros((2, 4, 4))
    h[:, 0, 0] = 1.0
    h[0, 3, 3] = 0.5  # exactly half: covered
    h[1, 3, 3] = 0.4
    om = np.zeros((2, 3, 4, 4), bool)
    om[:, 0, 0, 0] = True
    om[:, 1, 3, 3] = True  # slot 2 is padding
    np.testing.assert_allclose(M.instance_coverage(h, om, reduction=None), [1.0, 0.5])
    with pytest.raises(ValueError, match=r"object_masks has shape \(2, 3, 5, 5\) but heatmaps has shape \(2, 4, 4\)"):
        M.instance_coverage(h, np.zeros((2, 3, 5, 5), bool))


def test_map_area_and_entropy_by_hand():
    h = np.array([[[1.0, 0.5], [0.49, 0.0]]])
    assert M.map_area(h) == 0.5
    p = np.array([1.0, 0.5, 0.49]) / 1.99
    assert M.map_entropy(h) == pytest.approx(-(p * np.log(p)).sum() / math.log(4))
    assert M.map_entropy(np.zeros((1, 3, 3))) == pytest.approx(1.0)  # zero map counts as uniform
    single = np.zeros((1, 3, 3))
    single[0, 1, 1] = 1.0
    assert M.map_entropy(single) == 0.0


# ---------------------------------------------------------------------------------------------
# AUC, Spearman, blur
# ---------------------------------------------------------------------------------------------
def test_auc_constant_and_linear_curves():
    assert M.auc(np.full(11, 0.7)) == pytest.approx(0.7)
    assert M.auc(np.linspace(1, 0, 5)) == pytest.approx(0.5)
    np.testing.assert_allclose(M.auc(np.array([[10, 8, 5, 1, 0], [2, 2, 2, 2, 2]])), [19 / 4, 2.0])
    with pytest.raises(ValueError, match="at least 2"):
        M.auc([1.0])


def test_spearman_with_ties_by_hand():
    # row 0: a's ranks (1, 2.5, 2.5, 4), b's (1, 3, 2, 4); centred (-1.5, 0, 0, 1.5) and
    # (-1.5, 0.5, -0.5, 1.5): r = 4.5 / sqrt(4.5 * 5) = sqrt(0.9).
    # row 1 (ties in both): ranks (1.5, 1.5, 3.5, 3.5) and (1.5, 3.5, 1.5, 3.5): r = 0.
    # row 2: b reverses a's order with a tie: ranks (1, 2, 3, 4) and (4, 2.5, 2.5, 1): r = -4.5 / sqrt(5 * 4.5).
    a = np.array([[1.0, 2.0, 2.0, 3.0], [1.0, 1.0, 2.0, 2.0], [0.1, 0.2, 0.3, 0.4]]).reshape(3, 2, 2)
    b = np.array([[1.0, 3.0, 2.0, 4.0], [1.0, 2.0, 1.0, 2.0], [9.0, 5.0, 5.0, 1.0]]).reshape(3, 2, 2)
    np.testing.assert_allclose(M.spearman(a, b), [math.sqrt(0.9), 0.0, -math.sqrt(0.9)], atol=1e-12)
    assert np.isnan(M.spearman(np.ones((1, 4)), np.arange(4.0)[None]))[0]


def gaussian_reflect_by_hand(size: int, sigma: float) -> np.ndarray:
    """A centred delta on a ``size`` line smoothed by a Gaussian with reflected ("d c b a | a b c d") borders.

    The Gaussian is truncated at ``round(4 sigma)`` and normalised to sum 1; reflecting the border
    is the same as adding the mirror images of the delta, at ``-1 - c`` and ``2 size - 1 - c``
    mirrored again every ``2 size``, so each output is a sum of kernel weights at the distances
    from the output to those copies.
    """
    radius = int(4 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    g = np.exp(-(offsets**2) / (2 * sigma**2))
    g /= g.sum()
    c = size // 2
    copies = [c + 2 * size * m for m in range(-3, 4)] + [-1 - c + 2 * size * m for m in range(-3, 4)]
    out = np.zeros(size)
    for i in range(size):
        for p in copies:
            if abs(p - i) <= radius:
                out[i] += g[p - i + radius]
    return out


def test_rise_kernel_by_hand():
    # size 3, sigma 1: radius 4, the delta at 1 mirrored to -2 and 4 (then -5, 7: out of reach),
    # so the line is (g(2) + g(1) + g(4), g(3) + g(0) + g(3), g(4) + g(1) + g(2)) with
    # g(d) = exp(-d^2 / 2) / sum_{|e| <= 4} exp(-e^2 / 2); the kernel is its outer product.
    e = np.exp(-np.arange(5.0) ** 2 / 2)
    g = e / (e[0] + 2 * e[1:].sum())
    line = np.array([g[2] + g[1] + g[4], 2 * g[3] + g[0], g[4] + g[1] + g[2]])
    np.testing.assert_allclose(rise_kernel(3, 1.0), np.outer(line, line), atol=1e-12)
    np.testing.assert_allclose(gaussian_reflect_by_hand(3, 1.0), line, atol=1e-15)
    line = gaussian_reflect_by_hand(11, 5.0)  # RISE's kernel: the flattened Gaussian of its reference
    np.testing.assert_allclose(rise_kernel(11, 5.0), np.outer(line, line), atol=1e-12)
    assert rise_kernel(11, 5.0).sum() == pytest.approx(1.0)
    x = np.full((1, 30, 30, 2), 2.0, np.float32)
    blurred = M.gaussian_blur(x)
    np.testing.assert_allclose(blurred[0, 5:25, 5:25], 2.0, rtol=1e-5)  # interior: constant stays
    assert blurred[0, 0, 0, 0] < 2.0  # zero padding darkens the border, as the reference


# ---------------------------------------------------------------------------------------------
# Confidence metrics on the hand-set linear model
# ---------------------------------------------------------------------------------------------
def test_average_drop_all_ones_map_is_zero_and_ic_zero(cnn):
    x = np.random.default_rng(0).random((5, 12, 12, 3)).astype(np.float32)
    ones = np.ones((5, 12, 12))
    assert M.average_drop(cnn, x, ones) == 0.0
    assert M.increase_in_confidence(cnn, x, ones) == 0.0


def test_average_drop_and_increase_by_hand(lin):
    half = np.full((1, 2, 2), 0.5)
    # logit space: Y = 10, O = 5
    assert M.average_drop(lin, ONES, half, 0, score="logit") == pytest.approx(50.0)
    # probability space: p = sigmoid(logit)
    y, o = sigmoid(10), sigmoid(5)
    assert M.average_drop(lin, ONES, half, 0) == pytest.approx(100 * (y - o) / y, rel=1e-5)
    assert M.increase_in_confidence(lin, ONES, half, 0) == 0.0
    # class 1 has p = 1 - sigmoid(logit_0): it gains confidence when pixels dim
    assert M.average_drop(lin, ONES, half, 1) == 0.0
    assert M.increase_in_confidence(lin, ONES, half, 1) == 100.0
    # the target defaults to the top-1 class (class 0 here)
    assert M.average_drop(lin, ONES, half) == M.average_drop(lin, ONES, half, 0)


def test_average_drop_raw_mask_space(lin):
    half = np.full((1, 2, 2), 0.5)
    # raw images of 2s, preprocessing halves: E = preprocess(raw * L) = 0.5 everywhere -> logit 5
    val = M.average_drop(lin, ONES, half, 0, score="logit", mask_space="raw", raw_images=2 * ONES,
                         preprocess=lambda r: r / 2)
    assert val == pytest.approx(50.0)
    with pytest.raises(ValueError, match="raw_images="):
        M.average_drop(lin, ONES, half, mask_space="raw")


def test_confidence_metrics_reject_maps_outside_unit_range(lin):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.average_drop(lin, ONES, np.full((1, 2, 2), 3.0))


def test_win_rate_by_hand(lin):
    x = np.concatenate([ONES, ONES])
    a = np.array([[[0, 0], [0, 1]], [[1, 0], [0, 0]]], float)  # keeps w=4 / w=1
    b = np.array([[[1, 0], [0, 0]], [[1, 0], [0, 0]]], float)  # keeps w=1 / w=1 (tie)
    np.testing.assert_array_equal(M.win_rate(lin, x, a, b, 0, reduction=None), [1, 0])
    assert M.win_rate(lin, x, a, b, 0) == 50.0
    assert M.win_rate(lin, x, b, a, 0) == 0.0
    # against several competitors a win means beating all of them
    c = np.array([[[0, 0], [1, 1]], [[0, 0], [0, 0]]], float)  # keeps 3 + 4 / nothing
    np.testing.assert_array_equal(M.win_rate(lin, x, a, [b, c], 0, reduction=None), [-1, 0])


def test_probability_is_the_default_and_output_space_equals_it_for_softmax(lin):
    half = np.full((1, 2, 2), 0.5)
    p = M.average_drop(lin, ONES, half, 0)
    assert M.average_drop(lin, ONES, half, 0, score="output") == pytest.approx(p, rel=1e-6)
    with pytest.raises(ValueError, match="score must be one of"):
        M.average_drop(lin, ONES, half, score="prob")


def test_out_of_range_target_is_a_clear_error(lin):
    with pytest.raises(IndexError, match="valid targets are 0 .. 1"):
        M.average_drop(lin, ONES, np.ones((1, 2, 2)), 5)


def test_images_and_maps_must_agree(lin):
    with pytest.raises(ValueError, match=r"images has shape \(1, 2, 2, 1\) but heatmaps has shape \(1, 3, 3\)"):
        M.deletion_auc(lin, ONES, np.ones((1, 3, 3)))


# ---------------------------------------------------------------------------------------------
# Deletion / insertion
# ---------------------------------------------------------------------------------------------
SAL = np.array([[[0.1, 0.9], [0.5, 0.3]]])  # order: (0,1) w=2, (1,0) w=3, (1,1) w=4, (0,0) w=1


def test_deletion_curve_by_hand(lin):
    logits = np.array([10, 8, 5, 1, 0], float)
    curve = M.deletion_curve(lin, ONES, SAL, 0, steps=4, score="logit")
    np.testing.assert_allclose(curve[0], logits, atol=1e-5)
    np.testing.assert_allclose(M.deletion_curve(lin, ONES, SAL, 0, steps=4)[0], sigmoid(logits), rtol=1e-5)
    assert M.deletion_auc(lin, ONES, SAL, 0, steps=4, score="logit") == pytest.approx(19 / 4, rel=1e-6)
    # two steps of two pixels; default steps = image height = 2
    np.testing.assert_allclose(M.deletion_curve(lin, ONES, SAL, 0, steps=2, score="logit")[0], [10, 5, 0], atol=1e-5)
    np.testing.assert_allclose(M.deletion_curve(lin, ONES, SAL, 0, score="logit")[0], [10, 5, 0], atol=1e-5)


def test_deletion_ties_follow_row_major_order(lin):
    flat = np.full((1, 2, 2), 0.5)
    np.testing.assert_allclose(M.deletion_curve(lin, ONES, flat, 0, steps=4, score="logit")[0], [10, 9, 7, 4, 0],
                               atol=1e-5)


def test_insertion_curve_by_hand(lin):
    curve = M.insertion_curve(lin, ONES, SAL, 0, steps=4, substrate=0.0, score="logit")
    np.testing.assert_allclose(curve[0], [0, 2, 5, 9, 10], atol=1e-5)
    assert M.insertion_auc(lin, ONES, SAL, 0, steps=4, substrate=0.0, score="logit") == pytest.approx(21 / 4)
    # the default substrate is the blurred image; a constant image blurs (zero padding) to below itself
    start = M.insertion_curve(lin, ONES, SAL, 0, steps=4, score="logit")[0, 0]
    expected = (M.gaussian_blur(ONES)[0, ..., 0].ravel() * [1, 2, 3, 4]).sum()
    assert start == pytest.approx(expected, rel=1e-5)


def test_substrate_options(lin):
    curve = M.deletion_curve(lin, ONES, SAL, 0, steps=4, substrate=0.5, score="logit")[0]
    np.testing.assert_allclose(curve, [10, 9, 7.5, 5.5, 5], atol=1e-5)
    curve = M.deletion_curve(lin, ONES, SAL, 0, steps=4, substrate=lambda x: 0 * x, score="logit")[0]
    np.testing.assert_allclose(curve[-1], 0, atol=1e-6)
    with pytest.raises(ValueError, match="broadcast"):
        M.deletion_curve(lin, ONES, SAL, substrate=np.zeros(3))


def test_deletion_batches_agree_whatever_the_batch_size(cnn):
    rng = np.random.default_rng(2)
    x = rng.random((5, 12, 12, 3)).astype(np.float32)
    h = rng.random((5, 12, 12))
    big = M.deletion_curve(cnn, x, h, steps=12, batch_size=64)  # several images per forward
    small = M.deletion_curve(cnn, x, h, steps=12, batch_size=5)  # steps split over forwards
    np.testing.assert_allclose(big, small, atol=1e-6)
    one = M.deletion_curve(cnn, x[3:4], h[3:4], steps=12)
    np.testing.assert_allclose(big[3:4], one, atol=1e-6)


def test_oracle_map_deletes_faster_than_random_maps():
    rng = np.random.default_rng(4)
    w = rng.normal(size=(6, 6))
    model = linear_model(w, size=(6, 6))
    x = rng.random((1, 6, 6, 1)).astype(np.float32)
    oracle = (w * x[0, ..., 0])[None]  # each pixel's exact contribution to the logit
    ours = M.deletion_auc(model, x, oracle, 0, steps=36, score="logit")
    randoms = [M.deletion_auc(model, x, rng.random((1, 6, 6)), 0, steps=36, score="logit") for _ in range(5)]
    assert ours <= np.mean(randoms)


# ---------------------------------------------------------------------------------------------
# Occlusion
# ---------------------------------------------------------------------------------------------
def test_occlusion_map_and_correlation_by_hand():
    w = np.arange(16.0).reshape(4, 4)
    model = linear_model(w, size=(4, 4))
    x = np.ones((1, 4, 4, 1), np.float32)
    occ = M.occlusion_map(model, x, 0, patch=2, stride=2, score="logit")
    np.testing.assert_allclose(occ[0], [[10, 18], [42, 50]], atol=1e-4)
    # a map equal to each pixel's contribution ranks the windows exactly as the occlusion does
    assert M.occlusion_correlation(model, x, w[None] / 15, 0, patch=2, stride=2, score="logit") == pytest.approx(1.0)
    assert M.occlusion_correlation(model, x, 1 - w[None] / 15, 0, patch=2, stride=2, score="logit") == pytest.approx(-1.0)
    # precomputed occlusion maps give the same value, and a wrong grid is refused
    val = M.occlusion_correlation(model, x, w[None] / 15, 0, patch=2, stride=2, occlusion=occ)
    assert val == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"occlusion has shape \(1, 2, 2\)"):
        M.occlusion_correlation(model, x, w[None] / 15, 0, patch=2, stride=1, occlusion=occ)


def test_occlusion_grid_covers_the_border():
    gh, gw, windows = occlusion_grid(5, 5, 2, 2)
    assert (gh, gw) == (3, 3)
    assert sorted({int(y) for y in windows[:, 0]}) == [0, 2, 3]
    _, _, win = occlusion_grid(224, 224, None, None)  # defaults: 32 px patches, stride 8
    assert win[0].tolist() == [0, 0, 32, 32] and win[1].tolist() == [0, 8, 0 + 32, 8 + 32]


# ---------------------------------------------------------------------------------------------
# Randomisation check
# ---------------------------------------------------------------------------------------------
def test_randomization_check_leaves_the_model_alone(cnn):
    x = np.random.default_rng(5).random((4, 12, 12, 3)).astype(np.float32)
    before = [w.copy() for w in cnn.get_weights()]
    preds = cnn.predict(x, verbose=0)
    res = M.randomization_check(cnn, x, "gradcam", layer="c2")
    for a, b in zip(before, cnn.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(preds, cnn.predict(x, verbose=0))
    assert res.steps == ("none", "d2", "d1", "c2", "c1")  # top layer first
    np.testing.assert_allclose(res.spearman[0], 1.0, atol=1e-6)  # same weights on the copy: same maps
    np.testing.assert_allclose(res.abs_spearman[0], 1.0, atol=1e-6)
    assert res.spearman.shape == (5, 4) and res.mean().shape == (5,)
    assert res.summary() < 0.9  # Grad-CAM maps change once the head is re-drawn
    again = M.randomization_check(cnn, x, "gradcam", layer="c2")
    np.testing.assert_array_equal(res.spearman, again.spearman)  # seeded


def test_randomization_independent_mode_and_layer_choice(cnn):
    x = np.random.default_rng(6).random((3, 12, 12, 3)).astype(np.float32)
    res = M.randomization_check(cnn, x, "gradcam", layer="c2", mode="independent", layers=["c1"])
    assert res.steps == ("none", "c1")
    with pytest.raises(ValueError, match="not layers with weights"):
        M.randomization_check(cnn, x, "gradcam", layers=["nope"])
    with pytest.raises(ValueError, match="cascading"):
        M.randomization_check(cnn, x, "gradcam", mode="sideways")


def test_redraw_uses_the_layers_own_initializers():
    layer = keras.layers.Dense(3, kernel_initializer="ones", bias_initializer=keras.initializers.Constant(2.0))
    layer.build((None, 4))
    layer.kernel.assign(np.zeros((4, 3)))
    redraw(layer, seed=0)
    np.testing.assert_array_equal(layer.kernel.numpy(), 1.0)
    np.testing.assert_array_equal(layer.bias.numpy(), 2.0)


def test_metrics_never_modify_the_model(lin):
    head = lin.get_layer("head")
    before = head.activation
    M.deletion_auc(lin, ONES, SAL, score="logit")
    assert head.activation is before and "call" not in head.__dict__
    np.testing.assert_allclose(lin.predict(ONES, verbose=0)[0, 0], sigmoid(10), rtol=1e-6)


class _PrivateCopyCAM(kg.GradCAM):
    """Grad-CAM computed on a private clone of the model, made at setup (as guided backprop does)."""

    name = "private-copy-gradcam"

    def _setup(self, sample=None):
        clone = keras.models.clone_model(self.model)
        clone.set_weights(self.model.get_weights())
        original, self.model = self.model, clone
        try:
            super()._setup(sample)
        finally:
            self.model = original


def test_randomization_sees_new_weights_of_methods_that_copy_the_model(cnn):
    x = np.random.default_rng(8).random((3, 12, 12, 3)).astype(np.float32)
    res = M.randomization_check(cnn, x, _PrivateCopyCAM, layer="c2", layers=["d2"])
    plain = M.randomization_check(cnn, x, "gradcam", layer="c2", layers=["d2"])
    np.testing.assert_allclose(res.spearman, plain.spearman, atol=1e-6)  # the re-drawn head is seen
    assert res.abs_spearman[1].mean() < 0.99


# ---------------------------------------------------------------------------------------------
# Probability space: refused where the output is no class probability, never softmaxed twice
# ---------------------------------------------------------------------------------------------
def regression_model() -> keras.Model:
    """One linear unit, ``y = sum_p w_p x_p`` with w = (1, 2, 3, 4): a regression, no probability."""
    inp = keras.Input((2, 2, 1))
    out = keras.layers.Dense(1, name="head")(keras.layers.Flatten()(inp))
    model = keras.Model(inp, out)
    model.get_layer("head").set_weights([np.array([[1.0], [2.0], [3.0], [4.0]], np.float32), np.zeros(1, np.float32)])
    return model


@pytest.mark.parametrize("metric", ["average_drop", "increase_in_confidence", "win_rate", "deletion_auc",
                                    "insertion_auc", "occlusion_map", "occlusion_correlation"])
def test_probability_space_refused_on_a_one_unit_linear_output(metric):
    model = regression_model()
    zero = np.zeros((1, 2, 2))
    args = {"win_rate": (model, ONES, zero, zero), "occlusion_map": (model, ONES)}.get(metric, (model, ONES, zero))
    kw = {"patch": 1, "stride": 1} if metric.startswith("occlusion") else {}
    with pytest.raises(ValueError, match=r"not a class probability.*score='output'"):
        getattr(M, metric)(*args, **kw)


def test_one_unit_linear_output_is_scored_as_it_is_with_score_output():
    model = regression_model()
    # y = 10 on the ones image; an all-zero map keeps nothing: O = 0 -> Average Drop 100 %
    assert M.average_drop(model, ONES, np.zeros((1, 2, 2)), score="output") == pytest.approx(100.0)
    assert M.average_drop(model, ONES, np.zeros((1, 2, 2)), score="logit") == pytest.approx(100.0)
    # deletion in SAL's order on the output itself: 10, 8, 5, 1, 0
    assert M.deletion_auc(model, ONES, SAL, steps=4, score="output") == pytest.approx(19 / 4, rel=1e-6)


def test_evaluate_refuses_probability_space_on_a_regression():
    with pytest.raises(ValueError, match=r"not a class probability.*score='output'"):
        kg.evaluate(regression_model(), ONES, ["gradcam"], metrics=["average_drop"])


def test_multi_class_linear_output_gets_a_softmax():
    # two linear units (no activation): logit_0 = sum w x, logit_1 = 0 -> p_0 = sigmoid(logit_0)
    inp = keras.Input((2, 2, 1))
    out = keras.layers.Dense(2, name="head")(keras.layers.Flatten()(inp))
    model = keras.Model(inp, out)
    kernel = np.zeros((4, 2), np.float32)
    kernel[:, 0] = [1, 2, 3, 4]
    model.get_layer("head").set_weights([kernel, np.zeros(2, np.float32)])
    half = np.full((1, 2, 2), 0.5)
    y, o = sigmoid(10), sigmoid(5)
    assert M.average_drop(model, ONES, half, 0) == pytest.approx(100 * (y - o) / y, rel=1e-5)


@pytest.mark.parametrize("after", ["linear", "lambda"])
def test_softmax_followed_by_a_shape_preserving_layer_is_not_softmaxed_again(after):
    inp = keras.Input((2, 2, 1))
    p = keras.layers.Dense(2, name="head")(keras.layers.Flatten()(inp))
    p = keras.layers.Activation("softmax")(p)
    out = keras.layers.Activation("linear")(p) if after == "linear" else keras.layers.Lambda(lambda t: t)(p)
    model = keras.Model(inp, out)
    kernel = np.zeros((4, 2), np.float32)
    kernel[:, 0] = [1, 2, 3, 4]
    model.get_layer("head").set_weights([kernel, np.zeros(2, np.float32)])
    half = np.full((1, 2, 2), 0.5)
    y, o = sigmoid(10), sigmoid(5)  # p_0 on the image and on E = 0.5 * image
    assert M.average_drop(model, ONES, half, 0) == pytest.approx(100 * (y - o) / y, rel=1e-4)
    np.testing.assert_allclose(M.deletion_curve(model, ONES, SAL, 0, steps=4)[0],
                               sigmoid([10, 8, 5, 1, 0]), rtol=1e-4)


_FAST_OPTIONS = {"smoothgradcam++": {"n_samples": 2}, "integrated-gradcam": {"steps": 2}, "scorecam": {"verbose": 0},
                 "ablationcam": {"verbose": 0, "drop": "absolute"}}


@pytest.fixture(scope="module")
def small_cnn():
    keras.utils.set_random_seed(11)
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="c1")(inp)
    x = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(2, activation="softmax", name="d2")(x)
    return keras.Model(inp, out)


@pytest.mark.parametrize("name", sorted(kg.METHODS))
def test_randomization_check_explains_the_randomised_weights_for_every_method(small_cnn, name):
    # randomise c1 (below the explained layer c2, so even Eigen-CAM must change) and compare the
    # check's step-1 similarity with an explanation of an independently randomised clone
    x = np.random.default_rng(12).random((2, 8, 8, 3)).astype(np.float32)
    opts = _FAST_OPTIONS.get(name, {})
    layer = None if name == "guided-backprop" else "c2"  # guided backprop explains the input
    before = [w.copy() for w in small_cnn.get_weights()]
    res = M.randomization_check(small_cnn, x, name, layer, [0, 1], mode="independent", layers=["c1"], seed=3,
                                **opts)
    for a, b in zip(before, small_cnn.get_weights()):
        np.testing.assert_array_equal(a, b)
    cls = kg.get_method(name)
    reference = cls(small_cnn, layer, **opts)(x, [0, 1])
    clone = keras.models.clone_model(small_cnn)
    clone.set_weights(small_cnn.get_weights())
    redraw(clone.get_layer("c1"), 3 + 1)  # step 1 draws with seed + 1
    randomised = cls(clone, layer, **opts)(x, [0, 1])

    def comparison(exp):
        a = exp.attributions
        return np.asarray(a, np.float64).sum(-1) if a is not None else np.asarray(exp.heatmaps, np.float64)

    ref_map, new_map = comparison(reference), comparison(randomised)
    expected = [stats.spearmanr(r.ravel(), m.ravel()).correlation for r, m in zip(ref_map, new_map)]
    expected = np.nan_to_num(expected, nan=0.0)
    np.testing.assert_allclose(res.spearman[1], expected, atol=1e-5)
    assert not np.allclose(ref_map, new_map, atol=1e-6)  # the maps did change with the weights
    assert res.abs_spearman[1].mean() < 0.999


# ---------------------------------------------------------------------------------------------
# Masks: soft float masks weight the energy, the pointing game needs weight >= 0.5; empty masks
# ---------------------------------------------------------------------------------------------
def test_soft_float_masks_weight_the_energy():
    h = np.array([[[1.0, 3.0], [0.0, 4.0]]])
    soft = np.array([[[1.0, 0.25], [0.5, 0.0]]])
    # sum(L * m) / sum(L) = (1 * 1 + 3 * 0.25 + 0 * 0.5 + 4 * 0) / 8
    assert M.energy_pointing_game(h, soft) == pytest.approx(1.75 / 8)
    # 0/1 floats and integers are the boolean mask
    hard = np.array([[[True, False], [False, True]]])
    for m in (hard.astype(np.float32), hard.astype(np.uint8), hard.astype(np.int64)):
        assert M.energy_pointing_game(h, m) == pytest.approx(5 / 8)


def test_soft_float_masks_in_the_pointing_game_need_weight_one_half_at_the_peak():
    h = np.zeros((3, 4, 4))
    h[:, 1, 2] = 1.0  # the peak
    m = np.zeros((3, 4, 4))
    m[:, 1, 2] = [0.3, 0.5, 1.0]  # weight of the peak pixel
    m[:, 3, 3] = 1.0  # object elsewhere, far from the peak
    np.testing.assert_array_equal(M.pointing_game(h, m, tolerance=0, reduction=None), [0.0, 1.0, 1.0])
    # with a tolerance, only pixels of weight >= 0.5 count: (3, 3) is at d^2 = 5 from the peak
    np.testing.assert_array_equal(M.pointing_game(h, m, tolerance=2, reduction=None), [0.0, 1.0, 1.0])
    np.testing.assert_array_equal(M.pointing_game(h, m, tolerance=2.3, reduction=None), [1.0, 1.0, 1.0])


def test_masks_outside_the_unit_range_are_refused():
    h = np.ones((1, 2, 2))
    with pytest.raises(ValueError, match=r"integer dtype must hold 0 and 1 only.*masks > 0"):
        M.energy_pointing_game(h, np.full((1, 2, 2), 255, np.uint8))
    with pytest.raises(ValueError, match=r"soft weights in \[0, 1\]; got values in \[-1, 2\]"):
        M.pointing_game(h, np.array([[[-1.0, 2.0], [0.0, 1.0]]]))


def test_empty_masks_are_left_out_of_the_energy_mean():
    h = np.array([[[1.0, 3.0], [0.0, 4.0]], [[1.0, 1.0], [1.0, 1.0]], [[0.0, 2.0], [0.0, 2.0]]])
    m = np.array([[[True, False], [False, True]], [[False, False], [False, False]], [[True, True], [False, False]]])
    with pytest.warns(UserWarning, match=r"1 of 3 images have an empty mask.*images \[1\]"):
        per = M.energy_pointing_game(h, m, reduction=None)
    np.testing.assert_allclose(per, [5 / 8, np.nan, 1 / 2])
    with pytest.warns(UserWarning, match="left out of the mean"):
        assert M.energy_pointing_game(h, m) == pytest.approx((5 / 8 + 1 / 2) / 2)
    with pytest.warns(UserWarning):
        assert math.isnan(M.energy_pointing_game(h[1:2], m[1:2]))


# ---------------------------------------------------------------------------------------------
# Boxes: clipped to the image; inverted boxes refused
# ---------------------------------------------------------------------------------------------
def test_boxes_beyond_the_image_are_clipped():
    h = np.ones((1, 32, 32))  # predicted box: the whole map (0, 0, 32, 32)
    # unclipped, (0, 0, 64, 64) would give IoU 1024 / 4096 = 0.25
    res = M.localization(h, [[0, 0, 64, 64]])
    assert res.ious[0] == pytest.approx(1.0) and res.accuracy == 1.0
    # negative corners: (-8, -8, 16, 16) is (0, 0, 16, 16) inside the image, IoU 256 / 1024
    assert M.localization(h, [[-8, -8, 16, 16]]).ious[0] == pytest.approx(0.25)
    expected = np.zeros((4, 4), bool)
    expected[:2] = True  # rows 0-1, every column
    np.testing.assert_array_equal(M.boxes_to_masks([[-8, -8, 2, 40]], (4, 4))[0], expected)


def test_inverted_boxes_are_refused_with_their_index():
    h = np.ones((2, 8, 8))
    gt = np.array([[[0, 0, 4, 4], [0, 0, 0, 0]], [[1, 1, 3, 3], [6, 2, 3, 5]]])  # [1, 1] has y_min > y_max
    with pytest.raises(ValueError, match=r"boxes\[1, 1\] = \(6, 2, 3, 5\) is inverted"):
        M.localization(h, gt)
    with pytest.raises(ValueError, match=r"boxes\[0, 0\] = \(0, 5, 2, 1\) is inverted"):
        M.boxes_to_masks([[0, 5, 2, 1]], (8, 8))
    # zero-area rows (all zeros, or y_min == y_max) stay padding
    padded = np.array([[[0, 0, 8, 8], [0, 0, 0, 0]], [[5, 0, 5, 8], [0, 0, 8, 8]]])
    np.testing.assert_allclose(M.localization(h, padded).ious, [1.0, 1.0])


# ---------------------------------------------------------------------------------------------
# Scale: no absolute threshold makes a metric depend on the model's scale
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [1e-9, 1e9])
def test_map_metrics_do_not_depend_on_the_maps_scale(scale):
    rng = np.random.default_rng(9)
    h = rng.random((4, 8, 8)) ** 4  # peaked maps
    masks = np.zeros((4, 8, 8), bool)
    masks[:, 2:6, 1:5] = True

    def measures(maps):
        loc = M.localization(maps, M.masks_to_boxes(masks))
        return [M.energy_pointing_game(maps, masks), M.pointing_game(maps, masks, tolerance=0), *loc.ious,
                M.map_area(maps), M.map_entropy(maps), M.instance_coverage(maps, masks[:, None])]

    np.testing.assert_allclose(measures(h * scale), measures(h), rtol=1e-9)


@pytest.mark.parametrize("scale", [1e-9, 1e9])
def test_metrics_do_not_depend_on_the_models_scale(scale):
    keras.utils.set_random_seed(5)
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)
    out = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, out)
    x = np.random.default_rng(0).random((4, 8, 8, 3)).astype(np.float32)
    masks = np.zeros((4, 8, 8), bool)
    masks[:, 2:6, 1:5] = True
    t = [0, 1, 2, 0]

    def measures():
        h = kg.explain(model, x, method="gradcam", layer="c1", targets=t).heatmaps
        loc = M.localization(h, M.masks_to_boxes(masks))
        return [M.energy_pointing_game(h, masks), M.pointing_game(h, masks, tolerance=0), *loc.ious,
                M.map_area(h), M.map_entropy(h), M.average_drop(model, x, h, t, score="logit")]

    reference = measures()
    kernel, bias = model.get_layer("head").get_weights()
    model.get_layer("head").set_weights([kernel * scale, bias * scale])
    np.testing.assert_allclose(measures(), reference, rtol=1e-4)
