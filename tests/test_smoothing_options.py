"""aug_smooth, eigen_smooth and relu=False, worked out in numpy on a tiny model (METHODS.md 2.9, 2.22, 2.23).

The model is Conv2D(3, 3x3, relu) -> GlobalAveragePooling2D -> Dense(3, softmax) with seeded
random weights and a 6x6x2 input, so the layer is 4x4x3. On this head the gradient of the logit
``y^c`` with respect to ``A^k_ij`` is ``W_kc / Z`` (Z = 16 positions) at every position, so every
map below follows from the weights with a numpy convolution: nothing is read from the library.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from models import conv_gap_model
from oracles import close, minmax, relu

import keras_gradcam as kg
from keras_gradcam.cli import main
from keras_gradcam.io import write_png

pytestmark = pytest.mark.filterwarnings("ignore:.*maps are all zero:RuntimeWarning")  # targets with no positive evidence

Z = 16
RNG = np.random.default_rng(3)
KERNEL = RNG.normal(size=(3, 3, 2, 3))  # asymmetric: the layer map of a flipped image is not the flipped map
BIAS = np.array([0.1, -0.2, 0.05])
W = RNG.normal(size=(3, 3))
B = np.array([0.3, -0.1, 0.2])
X = RNG.uniform(-1.0, 1.0, (4, 6, 6, 2)).astype(np.float32)
COPIES = [(flip, factor) for flip in (False, True) for factor in (1.0, 0.9, 1.1)]


@pytest.fixture(scope="module")
def model():
    return conv_gap_model(KERNEL, BIAS, W, B, input_shape=(6, 6, 2), conv_activation="relu", activation="softmax")


def acts_of(x):
    """ReLU(conv(x) + bias), 'valid' 3x3 convolution, in float64: (N, 4, 4, 3)."""
    x = np.asarray(x, np.float64)
    out = np.zeros((len(x), 4, 4, 3))
    for i in range(4):
        for j in range(4):
            out[:, i, j] = np.einsum("nabc,abck->nk", x[:, i : i + 3, j : j + 3], KERNEL)
    return relu(out + BIAS)


def logits_of(x):
    return acts_of(x).mean(axis=(1, 2)) @ W + B


def gradcam_signed(x, targets):
    """sum_k alpha_k A^k with alpha_k = W_kc / Z (the GAP head's gradient, constant over positions)."""
    return np.einsum("nijk,nk->nij", acts_of(x), W[:, targets].T / Z)


def resized(maps, size=(6, 6)):
    """Bilinear, half-pixel centres (tf.image.resize, independent of the library's resizer)."""
    return tf.image.resize(np.asarray(maps, np.float32)[..., None], size, method="bilinear").numpy()[..., 0]


def aug_average(x, targets, per_copy):
    """The mean over the six copies of ``per_copy(copy, targets)``, each map flipped back."""
    maps = []
    for flip, factor in COPIES:
        copy = (x[:, :, ::-1] if flip else x) * factor
        m = per_copy(copy, targets)
        maps.append(m[:, :, ::-1] if flip else m)
    return np.mean(maps, axis=0)


def first_component(o):
    """Per sample: O v1 for O (positions, K), sign making the largest |entry| positive."""
    n = len(o)
    flat = o.reshape(n, -1, o.shape[-1])
    out = []
    for m in flat:
        _, _, vt = np.linalg.svd(m, full_matrices=False)
        p = m @ vt[0]
        out.append(p if p[np.argmax(np.abs(p))] >= 0 else -p)
    return np.stack(out).reshape(o.shape[:-1])


# -- aug_smooth --------------------------------------------------------------------------------------


def test_aug_smooth_is_the_mean_of_the_six_maps_with_the_flip_undone(model):
    targets = logits_of(X).argmax(axis=1)  # the clean images' top-1, used for every copy
    exp = kg.GradCAM(model, "conv", aug_smooth=True)(X)
    expected = aug_average(X, targets, lambda c, t: relu(gradcam_signed(c, t)))
    close(exp.layer_heatmaps, expected, rtol=1e-4, atol=1e-6)
    close(exp.heatmaps, minmax(resized(expected)), atol=2e-5)
    np.testing.assert_array_equal(exp.targets, targets)
    close(exp.scores, logits_of(X)[np.arange(len(X)), targets], rtol=1e-5)  # the image's own score

    # it can fail: without undoing the flip, or without the brightness copies, the maps differ
    no_unflip = np.mean([relu(gradcam_signed((X[:, :, ::-1] if f else X) * s, targets)) for f, s in COPIES], axis=0)
    assert np.abs(no_unflip - expected).max() > 1e-3
    plain = relu(gradcam_signed(X, targets))
    assert np.abs(plain - expected).max() > 1e-3


def test_aug_smooth_with_given_targets_and_small_batches(model):
    targets = np.array([2, 0, 1, 2])
    expected = aug_average(X, targets, lambda c, t: relu(gradcam_signed(c, t)))
    for batch_size in (1, 6, 64):  # 1 and 6: one image (6 rows) per pass; 64: all four at once
        exp = kg.GradCAM(model, "conv", aug_smooth=True, batch_size=batch_size)(X, targets)
        close(exp.layer_heatmaps, expected, rtol=1e-4, atol=1e-6)


def test_aug_smooth_reaches_multi_pass_methods(model):
    """Integrated Grad-CAM with one right-Riemann step is Grad-CAM of the input, with aug_smooth too."""
    targets = np.array([0, 1, 2, 0])
    expected = aug_average(X, targets, lambda c, t: relu(gradcam_signed(c, t)))
    exp = kg.IntegratedGradCAM(model, "conv", steps=1, riemann="right", aug_smooth=True, batch_size=7)(X, targets)
    close(exp.layer_heatmaps, expected, rtol=1e-4, atol=1e-6)


def test_aug_smooth_with_relu_false_averages_signed_maps(model):
    targets = np.array([1, 1, 1, 1])
    exp = kg.HiResCAM(model, "conv", aug_smooth=True, relu=False)(X, targets)
    close(exp.layer_heatmaps, aug_average(X, targets, gradcam_signed), rtol=1e-4, atol=1e-6)


# -- eigen_smooth ------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["gradcam", "hirescam", "gradcam++"])
def test_eigen_smooth_is_the_first_principal_component_of_the_weighted_activations(model, method):
    targets = np.array([0, 1, 2, 1])
    a = acts_of(X)
    w = W[:, targets].T / Z  # Grad-CAM / HiResCAM weights on a GAP head
    if method == "gradcam++":
        # paper Eq. 19 with a constant gradient g = w: alpha = 1 / (2 + g * sum A), weights sum_ij alpha ReLU(g)
        g = w[:, None, None, :]
        alpha = np.where(g > 0, 1.0 / (2.0 + g * a.sum(axis=(1, 2), keepdims=True)), 0.0)
        w = Z * (alpha * relu(g))[:, 0, 0]  # the same alpha * ReLU(g) at each of the Z positions
    weighted = a * w[:, None, None, :]
    signed = kg.get_method(method)(model, "conv", eigen_smooth=True, relu=False)(X, targets)
    close(signed.layer_heatmaps, first_component(weighted), rtol=1e-4, atol=1e-5)
    rectified = kg.get_method(method)(model, "conv", eigen_smooth=True)(X, targets)
    close(rectified.layer_heatmaps, relu(first_component(weighted)), rtol=1e-4, atol=1e-5)
    assert np.abs(first_component(weighted) - weighted.sum(-1)).max() > 1e-3  # not the plain weighted sum


def test_eigen_smooth_of_layercam_uses_the_positive_gradients(model):
    targets = np.array([1, 0, 2, 2])
    weighted = acts_of(X) * relu(W[:, targets].T / Z)[:, None, None, :]
    exp = kg.LayerCAM(model, "conv", eigen_smooth=True)(X, targets)
    close(exp.layer_heatmaps, relu(first_component(weighted)), rtol=1e-4, atol=1e-5)


# -- relu=False --------------------------------------------------------------------------------------


def test_hirescam_signed_map_sums_to_the_score_minus_the_bias(model):
    """HiResCAM completeness: sum_ij sum_k (W_kc / Z) A^k_ij = W_c . GAP(A) = y^c - b^c exactly."""
    for c in range(3):
        targets = np.full(len(X), c)
        exp = kg.HiResCAM(model, "conv", relu=False)(X, targets)
        close(exp.layer_heatmaps.sum(axis=(1, 2)), logits_of(X)[:, c] - B[c], rtol=1e-4, atol=1e-6)
        close(exp.scores - B[c], logits_of(X)[:, c] - B[c], rtol=1e-5, atol=1e-6)
    # with the default ReLU the sum is not the score any more (the maps have negative parts)
    assert (kg.HiResCAM(model, "conv", relu=False)(X, 1).layer_heatmaps < 0).any()


def test_gradcam_signed_map_is_the_numpy_one_and_heatmaps_are_its_minmax(model):
    targets = np.array([1, 1, 0, 2])
    exp = kg.GradCAM(model, "conv", relu=False)(X, targets)
    expected = gradcam_signed(X, targets)
    assert (expected < 0).any() and (expected > 0).any()
    close(exp.layer_heatmaps, expected, rtol=1e-4, atol=1e-6)
    close(exp.heatmaps, minmax(resized(expected)), atol=2e-5)
    close(kg.GradCAM(model, "conv")(X, targets).layer_heatmaps, relu(expected), rtol=1e-4, atol=1e-6)


def test_relu_none_keeps_each_methods_default(model):
    assert kg.GradCAM(model, "conv").relu is True
    assert kg.EigenCAM(model, "conv").relu is False
    assert kg.EigenGradCAM(model, "conv", relu=True).relu is True
    assert kg.ScoreCAM(model, "conv", relu=False, verbose=0).get_config()["relu"] is False


# -- refusals, pass-through ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, option, value",
    [
        ("scorecam", "aug_smooth", True),
        ("ablationcam", "eigen_smooth", True),
        ("eigengradcam", "eigen_smooth", True),
        ("integrated-gradcam", "eigen_smooth", True),
        ("guided-gradcam", "aug_smooth", True),
        ("guided-backprop", "relu", False),
    ],
)
def test_options_a_method_does_not_take_are_refused_by_name(model, method, option, value):
    weights = [w.copy() for w in model.get_weights()]
    layer = None if method == "guided-backprop" else "conv"
    with pytest.raises(ValueError, match=rf"{option}={value} is not supported by \w+: .* takes (\[|none of them)"):
        kg.get_method(method)(model, layer, **{option: value})
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_option_kinds_and_inapplicable_models_are_clear_errors(model):
    with pytest.raises(TypeError, match="aug_smooth"):
        kg.GradCAM(model, "conv", aug_smooth=1)
    with pytest.raises(ValueError, match="relu=False keeps the signed map, but fusing 2 layers"):
        kg.LayerCAM(model, ["conv", "conv"], relu=False)
    inp = keras.Input((8, 2))
    h = keras.layers.Conv1D(3, 3, activation="relu", name="conv1d")(inp)
    seq = keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(h)))
    with pytest.raises(ValueError, match=r"aug_smooth=True flips images horizontally.*\(1, 8, 2\)"):
        kg.GradCAM(seq, "conv1d", aug_smooth=True)(np.zeros((1, 8, 2), np.float32))


def test_kg_explain_and_the_cli_pass_the_options_through(model, tmp_path, capsys):
    direct = kg.GradCAM(model, "conv", aug_smooth=True, eigen_smooth=True)(X)
    via = kg.explain(model, X, method="gradcam", layer="conv", aug_smooth=True, eigen_smooth=True)
    np.testing.assert_allclose(via.heatmaps, direct.heatmaps, atol=1e-6)
    assert not np.allclose(via.heatmaps, kg.explain(model, X, method="gradcam", layer="conv").heatmaps, atol=1e-3)

    rgb = conv_gap_model(RNG.normal(size=(3, 3, 3, 3)), BIAS, W, B, input_shape=(6, 6, 3), conv_activation="relu")
    path = tmp_path / "m.keras"
    rgb.save(path)
    pngs = []
    for i in range(2):
        pngs.append(str(tmp_path / f"img{i}.png"))
        write_png(pngs[-1], (np.random.default_rng(i).uniform(size=(6, 6, 3)) * 255).astype(np.uint8))
    code = main(["explain", str(path), *pngs, "--method", "hirescam", "--layer", "conv", "--no-relu", "--aug-smooth",
                 "--out", str(tmp_path / "out"), "--progress", "never"])
    assert code == 0, capsys.readouterr()
    code = main(["explain", str(path), *pngs, "--method", "scorecam", "--layer", "conv", "--aug-smooth",
                 "--out", str(tmp_path / "out2"), "--progress", "never"])
    assert code != 0 and "aug_smooth=True is not supported by ScoreCAM" in capsys.readouterr().err


def test_guided_gradcam_takes_eigen_smooth_on_its_gradcam_part(model):
    targets = np.array([0, 1, 2, 0])
    guided = kg.GuidedGradCAM(model, "conv", eigen_smooth=True)(X, targets)
    plain = kg.GradCAM(model, "conv", eigen_smooth=True)(X, targets)
    close(guided.heatmaps, plain.heatmaps, atol=1e-6)
    heat = plain.heatmaps[..., None]
    close(guided.attributions, guided.extras["guided_backprop"] * heat, atol=1e-6)
