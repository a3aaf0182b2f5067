"""Maps worked out by hand in numpy on tiny models with hand-set weights (METHODS.md sections 2, 6).

Every expected number here comes from the papers' equations applied to the hand-set weights, never
from the library's own output. Where a plausible wrong formula exists (sum vs mean, probability vs
logit, missing ReLU), the test also checks that the wrong formula would give a different answer,
so that the test can fail for the right reason.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from models import conv_gap_model
from oracles import close, minmax, relu, softmax

import keras_gradcam as kg

Z = 16  # 4 x 4 layer positions


def differs(a, b, by=0.05):
    return np.abs(np.asarray(a) - np.asarray(b)).max() > by


def combine(acts, weights):
    """sum_k w_k A^k with per-sample channel weights (N, K) or per-position weights."""
    if weights.ndim == 2:
        return np.einsum("nijk,nk->nij", acts, weights)
    return (acts * weights).sum(-1)


# --- shared first layer: Conv2D(2, 1x1, relu) with kernel [1, -1], bias [0, 0.5] -------------------
K1 = np.array([1.0, -1.0])
B1 = np.array([0.0, 0.5])
X = np.random.default_rng(0).uniform(-1.0, 1.0, (3, 4, 4, 1)).astype(np.float32)


def conv_acts(x):
    """A^0 = ReLU(x), A^1 = ReLU(0.5 - x): (N, 4, 4, 2)."""
    return relu(x.astype(np.float64) * K1 + B1)


def first_conv(inp):
    return keras.layers.Conv2D(2, 1, activation="relu", name="conv")(inp)


# --- model 1: conv -> GAP -> Dense(3, softmax) ----------------------------------------------------
W_GAP = np.array([[1.0, -2.0, 0.0], [0.5, 1.0, 0.0]])  # class 0 all positive, class 1 mixed sign
B_GAP = np.array([0.1, -0.2, 0.3])


def build_gap_model():
    return conv_gap_model(K1.reshape(1, 1, 1, 2), B1, W_GAP, B_GAP, input_shape=(4, 4, 1), conv_activation="relu",
                          activation="softmax", gap_name="gap")


@pytest.fixture(scope="module")
def gap_model():
    return build_gap_model()


def gap_logits(x):
    return conv_acts(x).mean(axis=(1, 2)) @ W_GAP + B_GAP


# --- model 2: conv -> Flatten -> Dense(3, softmax): the gradient is the weight, reshaped ----------
def _flatten_weights():
    rng = np.random.default_rng(7)
    w = rng.normal(size=(4, 4, 2, 3))
    w[..., 0] = np.abs(w[..., 0]) + 0.1  # class 0: every gradient positive
    w[..., 0, 1] += 0.6  # class 1: mixed signs, channel 0 positive and channel 1 negative on average
    w[..., 1, 1] -= 0.6
    # Class 2: small negative gradients (|g| * sum A < 2 everywhere);
    # channel 0 negative on 12 of 16 positions, channel 1 on 2 of 16.
    w2 = np.abs(rng.normal(size=(4, 4, 2))) + 0.2
    neg0 = np.zeros((4, 4), bool)
    neg0.flat[:12] = True
    neg1 = np.zeros((4, 4), bool)
    neg1.flat[[3, 9]] = True
    w2[..., 0][neg0] = -0.03
    w2[..., 1][neg1] = -0.05
    w[..., 2] = w2
    return w


W_FLAT = _flatten_weights()  # (4, 4, 2, 3): dS_c / dA^k_ij = W_FLAT[i, j, k, c]
B_FLAT = np.array([0.3, -0.1, 0.2])


def build_flat_model():
    inp = keras.Input((4, 4, 1))
    f = keras.layers.Flatten(name="flatten")(first_conv(inp))
    out = keras.layers.Dense(3, activation="softmax", name="head")(f)
    model = keras.Model(inp, out)
    model.get_layer("conv").set_weights([K1.reshape(1, 1, 1, 2), B1])
    model.get_layer("head").set_weights([W_FLAT.reshape(32, 3), B_FLAT])
    return model


@pytest.fixture(scope="module")
def flat_model():
    return build_flat_model()


def flat_logits(x):
    return conv_acts(x).reshape(len(x), -1) @ W_FLAT.reshape(32, 3) + B_FLAT


def flat_grads(c, n=None):
    return np.broadcast_to(W_FLAT[..., c], (len(X) if n is None else n, 4, 4, 2))


# --- numpy references of the methods ---------------------------------------------------------------
def gradcam_pre(acts, grads):
    return combine(acts, grads.mean(axis=(1, 2)))


def gradcampp_alpha(acts, grads):
    """Paper Eq. 19 in its literal form g^2 / (2 g^2 + sum_ab A_ab g^3), zero where g <= 0."""
    sum_a = acts.sum(axis=(1, 2), keepdims=True)
    num, den = grads**2, 2 * grads**2 + sum_a * grads**3
    return np.where(grads > 0, num / np.where(grads > 0, den, 1.0), 0.0)


def gradcampp(acts, grads, alpha=None):
    alpha = gradcampp_alpha(acts, grads) if alpha is None else alpha
    return relu(combine(acts, (alpha * relu(grads)).sum(axis=(1, 2))))


# --- explainers run in a child process -------------------------------------------------------------
# Single-variant Smooth Grad-CAM++ (n_samples=1) and Integrated Grad-CAM (steps=1) are run in a child
# process with a deadline, so that a hang (an endless graph loop cannot be interrupted in-process)
# fails these tests instead of blocking the whole suite. The child starts with the module and runs
# while the other tests do.
_CHILD = r"""
import sys, traceback
import numpy as np
sys.path.insert(0, sys.argv[1])
import test_core_oracles as t
import keras_gradcam as kg
out = sys.argv[2]
for which in ("integrated-1", "smooth-n1"):
    print("START", which, flush=True)
    try:
        if which == "smooth-n1":
            cam = kg.SmoothGradCAMPlusPlus(t.build_flat_model(), layer="conv", n_samples=1, noise_level=0.0)
        else:
            cam = kg.IntegratedGradCAM(t.build_gap_model(), layer="conv", steps=1, riemann="right")
        exp = cam(t.X, targets=1)
        np.savez(f"{out}/{which}.npz", layer_heatmaps=exp.layer_heatmaps, heatmaps=exp.heatmaps, scores=exp.scores)
    except Exception:
        with open(f"{out}/{which}.err", "w") as f:
            f.write(traceback.format_exc()[-3000:])
"""
_CHILD_DEADLINE_S = 90  # a hang detector, not a timing test: tracing and one call take ~2 s, on a loaded machine 10x that


@pytest.fixture(scope="module", autouse=True)
def isolated(tmp_path_factory):
    tests_dir = Path(__file__).resolve().parent
    root = tests_dir.parent
    out = tmp_path_factory.mktemp("isolated")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)}
    log = open(out / "child.log", "w+")
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(tests_dir), str(out)],
                            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    state = {"hung": None}

    def result(which):
        started = None
        overall = time.monotonic() + 420
        while True:
            if (out / f"{which}.npz").exists():
                time.sleep(0.2)  # let np.savez finish writing
                return dict(np.load(out / f"{which}.npz"))
            if (out / f"{which}.err").exists():
                time.sleep(0.2)
                pytest.fail(f"{which} raised:\n{(out / f'{which}.err').read_text()}")
            if state["hung"] is not None:
                pytest.fail(f"{which} was not run: the child was stopped when {state['hung']} hung.")
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"the child exited before finishing {which}:\n{log.read()[-3000:]}")
            log.seek(0)
            if started is None and f"START {which}" in log.read():
                started = time.monotonic()
            if (started is not None and time.monotonic() - started > _CHILD_DEADLINE_S) or time.monotonic() > overall:
                proc.kill()
                proc.wait()
                state["hung"] = which
                pytest.fail(f"{which}: the explainer did not return within {_CHILD_DEADLINE_S} s (it hangs).")
            time.sleep(0.1)

    yield result
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    log.close()


# ==================================================================================================
# 1. Grad-CAM on hand-set models; logit vs probability
# ==================================================================================================
def test_gradcam_gap_head_matches_hand_computation_and_explains_the_logit(gap_model):
    cam = kg.GradCAM(gap_model, layer="conv")
    acts, logits = conv_acts(X), gap_logits(X)
    for c in (0, 1):
        exp = cam(X, targets=c)
        # dS_c / dA^k_ij = W[k, c] / Z at every position, so alpha_k = W[k, c] / Z
        expected = relu(combine(acts, np.tile(W_GAP[:, c] / Z, (len(X), 1))))
        close(exp.layer_heatmaps, expected)
        close(exp.heatmaps, minmax(expected), atol=1e-5)
        close(exp.scores, logits[:, c])  # the pre-softmax logit ...
        assert differs(exp.scores, softmax(logits)[:, c], by=1e-2)  # ... not the probability
        np.testing.assert_array_equal(exp.targets, [c] * len(X))
        np.testing.assert_array_equal(exp.predictions, logits.argmax(-1))
        assert exp.layer == "conv" and exp.method == "gradcam"
        assert exp.heatmaps.shape == (3, 4, 4) and exp.layer_heatmaps.shape == (3, 4, 4)
    # targets=None explains each sample's top-1 class
    exp = cam(X)
    np.testing.assert_array_equal(exp.targets, logits.argmax(-1))
    close(exp.scores, logits.max(-1))


def test_score_output_explains_the_softmax_probability(gap_model):
    c = 1
    acts, logits = conv_acts(X), gap_logits(X)
    p = softmax(logits)
    dp_ds = p[:, c, None] * ((np.arange(3) == c)[None] - p)  # d p_c / d S_j
    weights = dp_ds @ W_GAP.T / Z  # d p_c / d A^k_ij, the same at every position
    expected = relu(combine(acts, weights))
    logit_map = relu(combine(acts, np.tile(W_GAP[:, c] / Z, (len(X), 1))))
    assert differs(minmax(expected), minmax(logit_map), by=0.05)  # the case discriminates

    exp = kg.GradCAM(gap_model, layer="conv", score="output")(X, targets=c)
    close(exp.scores, p[:, c])
    close(exp.layer_heatmaps, expected, atol=1e-7)
    close(exp.heatmaps, minmax(expected), atol=1e-5)
    # the model's softmax head is still there
    assert gap_model.get_layer("head").activation.__name__ == "softmax"
    close(gap_model.predict(X, verbose=0), p)


def test_gradcam_and_hirescam_flatten_head_by_hand(flat_model):
    acts = conv_acts(X)
    grad_exp = kg.GradCAM(flat_model, layer="conv")
    hires_exp = kg.HiResCAM(flat_model, layer="conv")
    for c in (0, 1):
        g = flat_grads(c)
        gc, hr = grad_exp(X, targets=c), hires_exp(X, targets=c)
        close(gc.layer_heatmaps, relu(gradcam_pre(acts, g)))
        close(hr.layer_heatmaps, relu((g * acts).sum(-1)))
        close(hr.heatmaps, minmax(relu((g * acts).sum(-1))), atol=1e-5)
        close(gc.scores, flat_logits(X)[:, c])
        assert differs(gc.heatmaps, hr.heatmaps)  # per-position gradients: HiResCAM != Grad-CAM


# ==================================================================================================
# 2. METHODS.md section 6 oracles
# ==================================================================================================
def test_gap_head_gradcam_equals_hirescam_equals_xgradcam(gap_model):
    acts = conv_acts(X)
    exps = {name: kg.METHODS[name](gap_model, layer="conv")(X, targets=1) for name in ("gradcam", "hirescam", "xgradcam")}
    expected = relu(combine(acts, np.tile(W_GAP[:, 1] / Z, (len(X), 1))))
    for exp in exps.values():
        close(exp.layer_heatmaps, expected, atol=1e-6)
        close(exp.heatmaps, exps["gradcam"].heatmaps, atol=1e-5)


def test_gap_head_layercam_is_gradcam_restricted_to_positive_weights(gap_model):
    acts = conv_acts(X)
    c = 1  # weights (-2, 1) / Z: only channel 1 is kept
    w = np.where(W_GAP[:, c] > 0, W_GAP[:, c], 0.0) / Z
    expected = relu(combine(acts, np.tile(w, (len(X), 1))))
    gradcam_map = relu(combine(acts, np.tile(W_GAP[:, c] / Z, (len(X), 1))))
    assert differs(minmax(expected), minmax(gradcam_map), by=0.1)
    exp = kg.LayerCAM(gap_model, layer="conv")(X, targets=c)
    close(exp.layer_heatmaps, expected)
    close(exp.heatmaps, minmax(expected), atol=1e-5)


def test_layercam_flatten_head_by_hand(flat_model):
    acts, g = conv_acts(X), flat_grads(1)
    exp = kg.LayerCAM(flat_model, layer="conv")(X, targets=1)
    close(exp.layer_heatmaps, relu((relu(g) * acts).sum(-1)))


def test_hirescam_completeness_on_flatten_dense(flat_model):
    # class 0 has positive weights and A >= 0, so the pre-ReLU map is nonnegative and the ReLU'd
    # layer map must still sum to S^c - b^c
    exp = kg.HiResCAM(flat_model, layer="conv")(X, targets=0)
    logits = flat_logits(X)
    assert (exp.layer_heatmaps >= 0).all()
    close(exp.layer_heatmaps.sum(axis=(1, 2)), logits[:, 0] - B_FLAT[0], rtol=1e-5)
    close(exp.scores - B_FLAT[0], logits[:, 0] - B_FLAT[0], rtol=1e-5)
    # signed case: the map is ReLU of a decomposition whose sum is S^c - b^c
    g, acts = flat_grads(1), conv_acts(X)
    pre = (g * acts).sum(-1)
    close(pre.sum(axis=(1, 2)), logits[:, 1] - B_FLAT[1], rtol=1e-9)  # the hand reference is exact
    assert (pre < 0).any() and (pre > 0).any()
    exp1 = kg.HiResCAM(flat_model, layer="conv")(X, targets=1)
    close(exp1.layer_heatmaps, relu(pre))


def test_xgradcam_conservation_on_gap_dense(gap_model):
    exp = kg.XGradCAM(gap_model, layer="conv")(X, targets=0)  # class 0: map >= 0
    logits = gap_logits(X)
    close(exp.layer_heatmaps.sum(axis=(1, 2)), logits[:, 0] - B_GAP[0], rtol=1e-5)


def test_xgradcam_flatten_head_by_hand(flat_model):
    acts, g = conv_acts(X), flat_grads(1)
    alpha = (acts * g).sum(axis=(1, 2)) / acts.sum(axis=(1, 2))
    expected = relu(combine(acts, alpha))
    assert differs(minmax(expected), minmax(relu(gradcam_pre(acts, g))))
    exp = kg.XGradCAM(flat_model, layer="conv")(X, targets=1)
    close(exp.layer_heatmaps, expected)


@pytest.mark.parametrize("which", ["gap", "flat"])
def test_counterfactual_is_relu_of_minus_the_pre_relu_gradcam(which, gap_model, flat_model):
    model = gap_model if which == "gap" else flat_model
    acts = conv_acts(X)
    grads = np.broadcast_to(W_GAP[:, 1] / Z, acts.shape) if which == "gap" else flat_grads(1)
    pre = gradcam_pre(acts, grads)
    assert (pre > 1e-3).any() and (pre < -1e-3).any()  # both signs present
    exp = kg.GradCAM(model, layer="conv", counterfactual=True)(X, targets=1)
    close(exp.layer_heatmaps, relu(-pre))
    close(exp.heatmaps, minmax(relu(-pre)), atol=1e-5)
    assert exp.targets.tolist() == [1, 1, 1]


def test_gradcampp_alpha_by_hand_with_mixed_sign_gradients(flat_model):
    cam = kg.GradCAMPlusPlus(flat_model, layer="conv")
    acts = conv_acts(X)
    for c in (1, 2):
        g = flat_grads(c)
        assert (g < 0).any() and (g > 0).any()
        expected = gradcampp(acts, g)
        # wrong variants the test must tell apart: mean of A instead of the sum; torch-cam's
        # sum_ab A_ab g_ab^3; Grad-CAM's alpha = 1/Z
        mean_a = acts.mean(axis=(1, 2), keepdims=True)
        alpha_mean = np.where(g > 0, g**2 / np.where(g > 0, 2 * g**2 + mean_a * g**3, 1.0), 0.0)
        sum_ag3 = (acts * g**3).sum(axis=(1, 2), keepdims=True)
        alpha_tc = np.where(g > 0, g**2 / np.where(g > 0, 2 * g**2 + sum_ag3, 1.0), 0.0)
        for wrong in (alpha_mean, alpha_tc, np.full_like(g, 1.0 / Z)):
            assert differs(minmax(gradcampp(acts, g, wrong)), minmax(expected), by=0.02)
        exp = cam(X, targets=c)
        close(exp.layer_heatmaps, expected)
        close(exp.heatmaps, minmax(expected), atol=1e-5)


def _alpha_all_positions(acts, grads):
    """tf-keras-vis' alpha: g^2 / (2 g^2 + sum A g^3) wherever g != 0, negative gradients included."""
    sum_a = acts.sum(axis=(1, 2), keepdims=True)
    den = 2 * grads**2 + sum_a * grads**3
    return np.where(grads != 0, grads**2 / np.where(grads != 0, den, 1.0), 0.0)


def test_gradcampp_alpha_norm_positive_by_hand(flat_model):
    acts, g = conv_acts(X), flat_grads(2)
    alpha = gradcampp_alpha(acts, g)
    alpha_pos = alpha / (alpha * (g > 0)).sum(axis=(1, 2), keepdims=True)
    expected = gradcampp(acts, g, alpha_pos)
    default = kg.GradCAMPlusPlus(flat_model, layer="conv")(X, targets=2)
    exp = kg.GradCAMPlusPlus(flat_model, layer="conv", alpha_norm="positive")(X, targets=2)
    close(exp.layer_heatmaps, expected)
    assert differs(exp.heatmaps, default.heatmaps, by=0.02)


def test_gradcampp_alpha_norm_all_divides_by_the_sum_over_all_positions(flat_model):
    """METHODS.md 2.5 (3): tf-keras-vis divides alpha by its sum over *all* positions.

    Where g < 0 the alpha of Eq. 19 is not zero (here 2 + g sum A > 0, so it is positive), so
    "all" and "positive" normalise by different totals and give different maps.
    """
    acts, g = conv_acts(X), flat_grads(2)
    sum_a = acts.sum(axis=(1, 2), keepdims=True)
    assert (2 + g * sum_a > 0.5).all()  # alpha is well defined and positive everywhere
    alpha_all = _alpha_all_positions(acts, g)
    alpha = gradcampp_alpha(acts, g) / alpha_all.sum(axis=(1, 2), keepdims=True)
    expected = gradcampp(acts, g, alpha)
    alpha_pos = gradcampp_alpha(acts, g)
    alpha_pos = alpha_pos / alpha_pos.sum(axis=(1, 2), keepdims=True)
    assert differs(minmax(expected), minmax(gradcampp(acts, g, alpha_pos)), by=0.02)

    exp_all = kg.GradCAMPlusPlus(flat_model, layer="conv", alpha_norm="all")(X, targets=2)
    close(exp_all.layer_heatmaps, expected)
    close(exp_all.heatmaps, minmax(expected), atol=1e-5)


def test_smooth_gradcampp_one_sample_without_noise_is_gradcampp(isolated):
    """METHODS.md section 6.6: n = 1, sigma = 0 reproduces Grad-CAM++ exactly (D2 numerator)."""
    exp = isolated("smooth-n1")
    acts, g = conv_acts(X), flat_grads(1)
    close(exp["layer_heatmaps"], gradcampp(acts, g))
    close(exp["heatmaps"], minmax(gradcampp(acts, g)), atol=1e-5)
    close(exp["scores"], flat_logits(X)[:, 1])


def test_smooth_gradcampp_identical_copies_without_noise_is_gradcampp(flat_model):
    acts, g = conv_acts(X), flat_grads(1)
    expected = gradcampp(acts, g)
    exp = kg.SmoothGradCAMPlusPlus(flat_model, layer="conv", n_samples=2, noise_level=0.0)(X, targets=1)
    close(exp.layer_heatmaps, expected)
    plain = kg.GradCAMPlusPlus(flat_model, layer="conv")(X, targets=1)
    np.testing.assert_allclose(exp.heatmaps, plain.heatmaps, atol=1e-6)
    close(exp.scores, flat_logits(X)[:, 1])


def test_smooth_gradcampp_uses_clean_activations_and_averaged_derivatives(flat_model):
    # after the layer the head is linear, so every noisy copy has the same gradient g: the averaged
    # derivatives are g, g^2, g^3 and the map must be Grad-CAM++ of the *clean* activations
    acts, g = conv_acts(X), flat_grads(1)
    exp = kg.SmoothGradCAMPlusPlus(flat_model, layer="conv", n_samples=3, noise_level=0.5, seed=1)(X, targets=1)
    close(exp.layer_heatmaps, gradcampp(acts, g), rtol=1e-4)


def test_smooth_gradcampp_channels_subset_by_hand(flat_model):
    acts, g = conv_acts(X), flat_grads(1)
    w = (gradcampp_alpha(acts, g) * relu(g)).sum(axis=(1, 2))  # (N, 2)
    expected = relu(w[:, 1, None, None] * acts[..., 1])
    assert differs(minmax(expected), minmax(gradcampp(acts, g)), by=0.05)
    cam = kg.SmoothGradCAMPlusPlus(flat_model, layer="conv", n_samples=2, noise_level=0.0, channels=[1])
    exp = cam(X, targets=1)
    close(exp.layer_heatmaps, expected)


def test_smooth_gradcampp_d1_numerator_by_hand(flat_model):
    # paper as printed: alpha = D1 / (2 D2 + sum A D3); identical copies: g / (2 g^2 + sum A g^3)
    acts, g = conv_acts(X), flat_grads(1)
    sum_a = acts.sum(axis=(1, 2), keepdims=True)
    alpha = np.where(g > 0, g / np.where(g > 0, 2 * g**2 + sum_a * g**3, 1.0), 0.0)
    expected = gradcampp(acts, g, alpha)
    assert differs(minmax(expected), minmax(gradcampp(acts, g)), by=0.02)
    cam = kg.SmoothGradCAMPlusPlus(flat_model, layer="conv", n_samples=2, noise_level=0.0, numerator="d1")
    exp = cam(X, targets=1)
    close(exp.layer_heatmaps, expected)


def test_integrated_gradcam_one_right_step_is_gradcam(isolated):
    """METHODS.md section 6.7: m = 1 with the right Riemann point is Grad-CAM at x."""
    exp = isolated("integrated-1")
    expected = relu(combine(conv_acts(X), np.tile(W_GAP[:, 1] / Z, (len(X), 1))))
    close(exp["layer_heatmaps"], expected)
    close(exp["heatmaps"], minmax(expected), atol=1e-5)
    close(exp["scores"], gap_logits(X)[:, 1])


# --- a piecewise-linear model whose gradient at the layer changes along the path -----------------
K2D = np.array([[1.0, -0.5, 0.7], [-0.8, 0.9, 0.4]])
B2D = np.array([-0.1, 0.05, -0.2])
W3D = np.array([[1.0, -0.5, 0.3], [0.6, 1.2, -0.4], [-0.7, 0.8, 0.9]])
B3D = np.array([0.0, 0.1, -0.1])


@pytest.fixture(scope="module")
def deep_model():
    inp = keras.Input((4, 4, 1))
    a2 = keras.layers.Conv2D(3, 1, activation="relu", name="conv2")(first_conv(inp))
    out = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D()(a2))
    model = keras.Model(inp, out)
    model.get_layer("conv").set_weights([K1.reshape(1, 1, 1, 2), B1])
    model.get_layer("conv2").set_weights([K2D.reshape(1, 1, 2, 3), B2D])
    model.get_layer("head").set_weights([W3D, B3D])
    return model


def deep_acts_grads(x, c):
    """Activations of "conv" and dS_c / dA there, by the chain rule through conv2's ReLU and GAP."""
    acts = conv_acts(x)
    z2 = acts @ K2D + B2D
    grads = ((z2 > 0) * W3D[:, c] / Z) @ K2D.T
    return acts, grads


def deep_gradcam(x, c, base_acts=0.0):
    acts, grads = deep_acts_grads(x, c)
    return relu(combine(acts - base_acts, grads.mean(axis=(1, 2))))


def test_integrated_gradcam_left_riemann_two_steps_by_hand(deep_model):
    c = 1
    # path points 0 * x and 0.5 * x (baseline 0), Riemann weights 1/2
    expected = 0.5 * deep_gradcam(0.0 * X, c) + 0.5 * deep_gradcam(0.5 * X, c)
    assert differs(minmax(expected), minmax(deep_gradcam(X, c)), by=0.05)
    cam = kg.IntegratedGradCAM(deep_model, layer="conv", steps=2)
    exp = cam(X, targets=c)
    close(exp.layer_heatmaps, expected)
    close(exp.heatmaps, minmax(expected), atol=1e-5)
    # scores and the default targets are those of the input itself, not of the path points
    logits = np.asarray(deep_model(X))
    close(exp.scores, logits[:, c], rtol=1e-5)
    auto = cam(X)
    top = logits.argmax(-1)
    np.testing.assert_array_equal(auto.targets, top)
    for b in range(len(X)):
        xb = X[b : b + 1]
        want = 0.5 * deep_gradcam(0.0 * xb, top[b]) + 0.5 * deep_gradcam(0.5 * xb, top[b])
        close(auto.layer_heatmaps[b : b + 1], want)


def test_integrated_gradcam_trapezoid_with_baseline_by_hand(deep_model):
    c, base = 2, 0.25
    points = [base + t * (X - base) for t in (0.0, 0.5, 1.0)]
    expected = sum(w * deep_gradcam(p, c) for w, p in zip((0.25, 0.5, 0.25), points))
    exp = kg.IntegratedGradCAM(deep_model, layer="conv", steps=2, riemann="trapezoid", baseline=base)(X, targets=c)
    close(exp.layer_heatmaps, expected)


def test_integrated_gradcam_subtract_baseline_activations_by_hand(deep_model):
    c = 1
    base_acts = conv_acts(np.zeros_like(X))
    expected = 0.5 * deep_gradcam(0.0 * X, c, base_acts) + 0.5 * deep_gradcam(0.5 * X, c, base_acts)
    exp = kg.IntegratedGradCAM(deep_model, layer="conv", steps=2, subtract_baseline_activations=True)(X, targets=c)
    close(exp.layer_heatmaps, expected)


# --- LayerCAM fusion: conv (8x8) -> average pool -> conv (4x4) -> GAP -> Dense ------------------
KF2 = np.array([[0.9, -0.4, 0.5], [-0.6, 1.1, 0.3]])
BF2 = np.array([0.05, -0.1, 0.0])
WF3 = np.array([[0.8, -0.3, 0.2], [-0.5, 0.9, 0.4], [0.6, 0.7, -1.0]])
BF3 = np.array([0.0, 0.2, -0.1])


@pytest.fixture(scope="module")
def fusion_model():
    inp = keras.Input((8, 8, 1))
    a1 = keras.layers.Conv2D(2, 1, activation="relu", name="s1")(inp)
    pooled = keras.layers.AveragePooling2D(2)(a1)
    a2 = keras.layers.Conv2D(3, 1, activation="relu", name="s2")(pooled)
    out = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D()(a2))
    model = keras.Model(inp, out)
    model.get_layer("s1").set_weights([K1.reshape(1, 1, 1, 2), B1])
    model.get_layer("s2").set_weights([KF2.reshape(1, 1, 2, 3), BF2])
    model.get_layer("head").set_weights([WF3, BF3])
    return model


def test_layercam_fusion_of_two_layers_by_hand(fusion_model):
    c = 0
    x = np.random.default_rng(3).uniform(-1, 1, (2, 8, 8, 1)).astype(np.float32)
    a1 = conv_acts(x)  # (N, 8, 8, 2)
    pooled = a1.reshape(2, 4, 2, 4, 2, 2).mean(axis=(2, 4))
    z2 = pooled @ KF2 + BF2
    a2 = relu(z2)
    g2 = np.broadcast_to(WF3[:, c] / Z, a2.shape)
    g_pooled = ((z2 > 0) * WF3[:, c] / Z) @ KF2.T
    g1 = np.repeat(np.repeat(g_pooled, 2, axis=1), 2, axis=2) / 4
    m1 = relu((relu(g1) * a1).sum(-1))
    m2 = relu((relu(g2) * a2).sum(-1))
    peak = lambda m: m.max(axis=(1, 2), keepdims=True)  # noqa: E731
    shallow = np.tanh(2.0 * m1 / peak(m1))
    deep = tf.image.resize((m2 / peak(m2))[..., None], (8, 8), method="bilinear").numpy()[..., 0]
    expected = np.maximum(shallow, deep)
    # wrong variants: tanh on the deepest too; mean fusion
    assert differs(expected, np.maximum(shallow, np.tanh(2.0 * deep)), by=0.02)
    assert differs(expected, 0.5 * (m1 / peak(m1) + deep), by=0.02)

    exp = kg.LayerCAM(fusion_model, layer=["s1", "s2"])(x, targets=c)
    assert exp.layer == ("s1", "s2")
    assert exp.layer_heatmaps.shape == (2, 8, 8)
    close(exp.layer_heatmaps, expected, rtol=1e-5, atol=1e-5)
    close(exp.heatmaps, minmax(expected), atol=1e-5)


def fusion_line_model(width):
    """1 x ``width`` images, x -> a = x (1x1 conv, linear) -> b = a + 1 (1x1 conv, bias 1) -> mean -> [s, -s].

    The score's gradient is 1 / width at every position of both layers, so the LayerCAM maps are
    M_a = x / width and M_b = (x + 1) / width (for x >= 0).
    """
    inp = keras.Input((1, width, 1))
    a = keras.layers.Conv2D(1, 1, name="a")(inp)
    b = keras.layers.Conv2D(1, 1, name="b")(a)
    model = keras.Model(inp, keras.layers.Dense(2, use_bias=False, name="head")(keras.layers.GlobalAveragePooling2D()(b)))
    model.get_layer("a").set_weights([np.ones((1, 1, 1, 1), np.float32), np.zeros(1, np.float32)])
    model.get_layer("b").set_weights([np.ones((1, 1, 1, 1), np.float32), np.ones(1, np.float32)])
    model.get_layer("head").set_weights([np.array([[1.0, -1.0]], np.float32)])
    return model


@pytest.mark.parametrize(
    ("x", "fusion", "expected"),
    [
        # M_a ~ [1, 2] counts as [0.5, 1] (divided by its max), M_b ~ [2, 3] as [2/3, 1]; their mean
        ([1, 2], "mean", [(0.5 + 2 / 3) / 2, 1.0]),
        # min-max normalised (pytorch-grad-cam's rule): [1, 2] -> [0, 1] and [2, 3] -> [0, 1]
        ([1, 2], "minmax-mean", [0.0, 1.0]),
        # M_a ~ [1, 2, 4] -> [0.25, 0.5, 1], M_b ~ [2, 3, 5] -> [0.4, 0.6, 1]
        ([1, 2, 4], "mean", [(0.25 + 0.4) / 2, (0.5 + 0.6) / 2, 1.0]),
        # both -> [0, 1/3, 1]
        ([1, 2, 4], "minmax-mean", [0.0, 1 / 3, 1.0]),
        # the paper: tanh(2 M / max M) on the shallower layer a, M / max M on the deepest (b), maximum
        ([1, 2, 4], "max", [np.tanh(0.5), np.tanh(1.0), 1.0]),
    ],
)
def test_layercam_fusion_rules_by_hand(x, fusion, expected):
    model = fusion_line_model(len(x))
    x = np.array(x, np.float32).reshape(1, 1, len(x), 1)
    cam = kg.LayerCAM(model, layer=["a", "b"], fusion=fusion)
    exp = cam(x, targets=0)
    close(exp.layer_heatmaps.reshape(-1), np.array(expected), rtol=1e-5, atol=1e-6)
    rebuilt = kg.LayerCAM.from_config(model, json.loads(json.dumps(cam.get_config())))
    assert rebuilt.fusion == fusion
    close(rebuilt(x, targets=0).layer_heatmaps, exp.layer_heatmaps)

