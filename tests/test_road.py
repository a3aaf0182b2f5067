"""ROAD (Rong et al. 2022): noisy linear imputation solved by hand, and the MoRF/LeRF curves on a linear model.

The imputation oracle is written out from the reference's rule (each removed pixel is the
weighted mean of its neighbours inside the image, 1/6 direct and 1/12 diagonal, renormalised at
the border); the model is ``Flatten -> Dense`` with set weights, so every score is a dot product.
"""

import keras
import numpy as np
import pytest

import keras_gradcam as kg
from keras_gradcam.metrics import noisy_linear_imputation, road, road_curve
from tests.models import conv_gap_model
from tests.oracles import close

DIRECT = ((-1, 0), (1, 0), (0, -1), (0, 1))
DIAGONAL = ((-1, -1), (-1, 1), (1, -1), (1, 1))


def _neighbour_sum(img, y, x, skip=()):
    """Sum of w * value over the neighbours of (y, x) inside the image, and the sum of their weights."""
    total, weights = 0.0, 0.0
    for offsets, w in ((DIRECT, 1 / 6), (DIAGONAL, 1 / 12)):
        for dy, dx in offsets:
            ny, nx = y + dy, x + dx
            if 0 <= ny < img.shape[0] and 0 <= nx < img.shape[1]:
                weights += w
                if (ny, nx) not in skip:
                    total += w * img[ny, nx]
    return total, weights


def _impute(img, removed, noise=0.0):
    out = noisy_linear_imputation(img[None, ..., None], removed[None], noise=noise)
    return out[0, ..., 0].astype(np.float64)


def test_one_removed_pixel_is_the_weighted_mean_of_its_eight_neighbours():
    img = np.random.default_rng(0).normal(size=(5, 5))
    removed = np.zeros((5, 5), bool)
    removed[2, 2] = True
    total, weights = _neighbour_sum(img, 2, 2)
    assert weights == pytest.approx(1.0)  # 4/6 + 4/12
    out = _impute(img, removed)
    close(out[2, 2], total, rtol=1e-6)
    np.testing.assert_array_equal(out[~removed], img[~removed].astype(np.float32))  # kept pixels untouched


def test_a_corner_pixel_renormalises_over_its_three_neighbours():
    img = np.random.default_rng(1).normal(size=(4, 4))
    removed = np.zeros((4, 4), bool)
    removed[0, 0] = True
    expected = (img[0, 1] / 6 + img[1, 0] / 6 + img[1, 1] / 12) / (5 / 12)
    close(_impute(img, removed)[0, 0], expected, rtol=1e-6)


def test_two_adjacent_removed_pixels_solve_their_two_equations():
    img = np.random.default_rng(2).normal(size=(5, 6))
    a, b = (2, 2), (2, 3)
    removed = np.zeros(img.shape, bool)
    removed[a] = removed[b] = True
    ka, _ = _neighbour_sum(img, *a, skip={b})
    kb, _ = _neighbour_sum(img, *b, skip={a})
    # xa = ka + xb / 6 and xb = kb + xa / 6 (both interior: weights sum to 1)
    xa = (ka + kb / 6) / (1 - 1 / 36)
    xb = kb + xa / 6
    out = _impute(img, removed)
    close([out[a], out[b]], [xa, xb], rtol=1e-5)


def test_a_linear_ramp_is_imputed_exactly():
    # a symmetric stencil reproduces linear functions: the hole is filled with the ramp itself
    yy, xx = np.mgrid[0:9, 0:9].astype(np.float64)
    img = 0.3 * yy - 0.7 * xx + 2.0
    removed = np.zeros(img.shape, bool)
    removed[2:7, 3:8] = True
    close(_impute(img, removed), img, rtol=0, atol=1e-5)


def test_channels_are_imputed_independently():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 6, 7, 3))
    removed = rng.random((2, 6, 7)) < 0.4
    together = noisy_linear_imputation(x, removed, noise=0.0)
    for c in range(3):
        close(together[..., c], noisy_linear_imputation(x[..., c : c + 1], removed, noise=0.0)[..., 0], atol=1e-6)


def test_noise_is_added_to_the_imputed_pixels_only_and_is_seeded():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(1, 100, 100, 1))
    removed = rng.random((1, 100, 100)) < 0.5  # about 5,000 imputed values
    plain = noisy_linear_imputation(x, removed, noise=0.0)
    noisy = noisy_linear_imputation(x, removed, noise=0.3, seed=7)
    diff = (noisy - plain)[..., 0][removed]
    se = 0.3 / np.sqrt(diff.size)  # standard error of the mean; the std's is about se / sqrt(2)
    assert abs(diff.mean()) < 4 * se and abs(diff.std() - 0.3) < 4 * se
    np.testing.assert_array_equal(noisy[..., 0][~removed], plain[..., 0][~removed])
    np.testing.assert_array_equal(noisy, noisy_linear_imputation(x, removed, noise=0.3, seed=7))
    assert not np.array_equal(noisy, noisy_linear_imputation(x, removed, noise=0.3, seed=8))


def _linear_model(weights, bias):
    h, w = weights.shape[:2]
    inp = keras.Input((h, w, 1))
    dense = keras.layers.Dense(2)
    out = dense(keras.layers.Flatten()(inp))
    model = keras.Model(inp, out)
    kernel = np.stack([weights.reshape(-1), -weights.reshape(-1)], axis=1)
    dense.set_weights([kernel.astype(np.float32), np.array([bias, 0.0], np.float32)])
    return model


def test_morf_and_lerf_scores_match_the_hand_imputation():
    rng = np.random.default_rng(5)
    weights = rng.normal(size=(6, 6))
    model = _linear_model(weights, 0.5)
    img = np.ones((6, 6))
    img[2, 3] = 5.0
    # saliency: highest at the bright pixel, lowest at the corner (5, 5), distinct elsewhere
    sal = np.linspace(0.2, 0.9, 36).reshape(6, 6)[::-1, ::-1].copy()
    sal[2, 3] = 1.0
    sal[5, 5] = 0.0
    one = 100 / 36  # one pixel of 36
    args = (model, img[None, ..., None], sal[None], [0])
    morf = road_curve(*args, order="morf", percentages=[one], noise=0.0, score="output")
    lerf = road_curve(*args, order="lerf", percentages=[one], noise=0.0, score="output")
    # MoRF removes the bright pixel: all its neighbours are 1, so it becomes 1
    after = img.copy()
    after[2, 3] = 1.0
    close(morf[0, 0], (weights * after).sum() + 0.5, rtol=1e-5)
    # LeRF removes the corner, whose neighbours are all 1: the image is unchanged
    close(lerf[0, 0], (weights * img).sum() + 0.5, rtol=1e-5)
    combined = road(*args, percentages=[one], noise=0.0, score="output")
    close(combined, (lerf[0, 0] - morf[0, 0]) / 2, rtol=1e-5)


def test_removed_counts_follow_the_percentages():
    # a model reading the sum of a ramp: MoRF with a map equal to the image removes the largest pixels
    # first; imputing a ramp region keeps the ramp, so use a map that ranks pixels on a checkerboard-free
    # order and check the scores against a numpy imputation of exactly round(p * HW) pixels
    rng = np.random.default_rng(6)
    weights = rng.normal(size=(8, 8))
    model = _linear_model(weights, 0.0)
    img = rng.normal(size=(8, 8))
    sal = rng.random((8, 8))
    percentages = [10, 50, 90]
    got = road_curve(model, img[None, ..., None], sal[None], [0], percentages=percentages, noise=0.0, score="output")
    order = np.argsort(-sal.reshape(-1), kind="stable")
    for j, p in enumerate(percentages):
        k = int(round(p / 100 * 64))
        removed = np.zeros(64, bool)
        removed[order[:k]] = True
        imputed = _solve_dense(img, removed.reshape(8, 8))
        close(got[0, j], (weights * imputed).sum(), rtol=1e-4, atol=1e-4)


def _solve_dense(img, removed):
    """The imputation as a dense numpy system, written independently of the library's sparse one."""
    idx = {p: i for i, p in enumerate(zip(*np.nonzero(removed)))}
    a = np.zeros((len(idx), len(idx)))
    b = np.zeros(len(idx))
    for (y, x), i in idx.items():
        for offsets, w in ((DIRECT, 1 / 6), (DIAGONAL, 1 / 12)):
            for dy, dx in offsets:
                ny, nx = y + dy, x + dx
                if not (0 <= ny < img.shape[0] and 0 <= nx < img.shape[1]):
                    continue
                a[i, i] += w
                if (ny, nx) in idx:
                    a[i, idx[(ny, nx)]] -= w
                else:
                    b[i] += w * img[ny, nx]
    out = img.copy()
    for (y, x), v in zip(idx, np.linalg.solve(a, b)):
        out[y, x] = v
    return out


def test_a_faithful_map_scores_higher_than_an_unfaithful_one():
    # the model adds up the left half (positive weights), where the images hold the object (pixels
    # near 1); the right half is background (0) with zero weight. Removing the object lowers the score.
    rng = np.random.default_rng(7)
    weights = np.zeros((12, 12))
    weights[:, :6] = rng.uniform(0.5, 1.5, size=(12, 6))
    model = _linear_model(weights, 0.0)
    x = np.zeros((4, 12, 12, 1))
    x[:, :, :6, 0] = 1.0 + 0.1 * rng.normal(size=(4, 12, 6))
    left = np.zeros((4, 12, 12))
    left[:, :, :6] = 1.0 + rng.random((4, 12, 6))  # the object is the relevant part
    right = left[:, :, ::-1].copy()  # the background ranked first
    targets = [0, 0, 0, 0]
    faithful = road(model, x, left, targets, score="output", reduction=None)
    unfaithful = road(model, x, right, targets, score="output", reduction=None)
    assert np.all(faithful > 0) and np.all(unfaithful < 0)


def test_results_do_not_depend_on_the_batch_size():
    rng = np.random.default_rng(8)
    model = _linear_model(rng.normal(size=(6, 6)), 0.1)
    x = rng.normal(size=(5, 6, 6, 1))
    sal = rng.random((5, 6, 6))
    a = road_curve(model, x, sal, percentages=[20, 60], batch_size=1, score="output")
    b = road_curve(model, x, sal, percentages=[20, 60], batch_size=64, score="output")
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"percentages": [0]}, "in \\(0, 100\\)"),
        ({"percentages": [100]}, "in \\(0, 100\\)"),
        ({"percentages": []}, "in \\(0, 100\\)"),
        ({"percentages": [99.9]}, "rounds to every pixel"),
        ({"order": "random"}, "order"),
        ({"noise": -1.0}, "noise"),
    ],
)
def test_bad_arguments_are_refused_with_the_fix(kwargs, match):
    model = _linear_model(np.ones((6, 6)), 0.0)
    with pytest.raises(ValueError, match=match):
        road_curve(model, np.ones((1, 6, 6, 1)), np.ones((1, 6, 6)), [0], score="output", **kwargs)


def test_imputation_refuses_an_image_with_every_pixel_removed_and_a_non_boolean_mask():
    with pytest.raises(ValueError, match="every pixel removed"):
        noisy_linear_imputation(np.ones((1, 3, 3, 1)), np.ones((1, 3, 3), bool))
    with pytest.raises(TypeError, match="boolean"):
        noisy_linear_imputation(np.ones((1, 3, 3, 1)), np.ones((1, 3, 3)))
    with pytest.raises(ValueError, match="shape"):
        noisy_linear_imputation(np.ones((1, 3, 3, 1)), np.ones((1, 3, 4), bool))


def test_evaluate_reports_road():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(3, 8, 8, 1)).astype(np.float32)
    conv = conv_gap_model(rng.normal(size=(3, 3, 1, 3)), np.zeros(3), rng.normal(size=(3, 2)), np.zeros(2),
                          input_shape=(8, 8, 1), conv_activation="relu")
    rows = kg.evaluate(conv, x, ["gradcam", "gradcam++"], metrics=["road"], score="logit")
    for row in rows:
        assert set(row) >= {"road", "road_morf", "road_lerf"}
        exp = kg.explain(conv, x, method=row["method"])
        morf = road_curve(conv, x, exp.heatmaps, exp.targets, order="morf", score="logit")
        lerf = road_curve(conv, x, exp.heatmaps, exp.targets, order="lerf", score="logit")
        close(row["road_morf"], morf.mean(), rtol=1e-5, atol=1e-6)
        close(row["road_lerf"], lerf.mean(), rtol=1e-5, atol=1e-6)
        close(row["road"], ((lerf - morf) / 2).mean(), rtol=1e-5, atol=1e-6)
