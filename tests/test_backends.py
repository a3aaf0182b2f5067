"""The JAX and PyTorch backends give the gradients and maps that TensorFlow and hand computation give.

Keras fixes its backend per process, so each backend's checks run in one child process
(``tests/backend_worker.py``, started once per backend for the whole module) on models built by
the same functions and loaded from the same ``.weights.h5`` file; this process (TensorFlow)
computes the references. JAX runs in ``make test``; PyTorch where it is installed (``make
test-torch`` builds ``.venv-torch`` for it).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from backend_worker import (
    GUIDED_OPTIONS,
    HUB_CASES,
    HUB_MODELS,
    HUB_SIZE,
    MODELS,
    ROOT,
    SEQ,
    TARGET_MODELS,
    VOCAB,
    backend_cnn,
    guided_cnn,
    guided_training_run,
    hub_explain,
    target_cases,
    target_inputs,
)

import keras_gradcam as kg
from keras_gradcam import cli
from keras_gradcam.core import backend as backend_seam
from keras_gradcam.core import postprocess
from keras_gradcam.core.backend import TENSORFLOW_ONLY as TF_ONLY_NAMES
from keras_gradcam.io import write_png

WORKER = os.path.join(ROOT, "tests", "backend_worker.py")
CLS = 1
INSTALL = {
    "jax": "jax is not installed in this environment; `make install` adds jax[cpu]",
    "torch": "torch is not installed in this environment; `make test-torch` builds .venv-torch with it and runs these checks",
}


def _jobs(tmp) -> dict:
    """The inputs of every task this module checks, written under ``tmp``: name -> (task, inputs)."""
    keras.utils.set_random_seed(7)
    model = backend_cnn(two_heads=True)
    weights = str(tmp / "cnn2.weights.h5")
    model.save_weights(weights)
    x = np.random.default_rng(0).normal(size=(3, 8, 8, 2)).astype("float32")
    gradients = {
        "x": x,
        "weights": weights,
        "layers": np.array(["c1", "c2", "s1"]),
        "cls": CLS,
        "wrt_inputs": True,
        "two_heads": True,
    }
    guided = {"x": np.array([-1.0, 2.0, 3.0, 0.5], "float32"), "w": np.array([1.0, 1.0, -1.0, 2.0], "float32")}
    explain = {"x": x, "cases": json.dumps(CASES)}
    for kind, build in MODELS.items():
        keras.utils.set_random_seed(11)
        explain[f"weights_{kind}"] = str(tmp / f"{kind}.weights.h5")
        build().save_weights(explain[f"weights_{kind}"])
    jobs = {
        "gradients": ("gradients", gradients, model),
        "guided_relu": ("guided_relu", guided, None),
        "guided_check": ("guided_check", {"x": x[:, 0, 0, :].repeat(2, axis=1)}, None),
        "explain": ("explain", explain, None),
        "callback": ("callback", {"log_dir": str(tmp / "logs")}, None),
        "metrics": ("metrics", {"x": np.concatenate([x, -x]), "weights": explain["weights_cnn"], "run_dir": str(tmp / "run")}, None),
        "cli": ("cli", _cli_files(tmp), None),
        "threads": ("threads", {"x": x, "weights": explain["weights_cnn"]}, None),
        "traces": ("traces", {"x": x, "weights": explain["weights_cnn"]}, None),
        "noise": ("noise", {"x": x, "weights": explain["weights_cnn"], "weights_vit": explain["weights_vit"]}, None),
        "targets": ("targets", _target_job(tmp), None),
        "guided_training": ("guided_training", _guided_job(tmp), None),
    }
    if HUB:
        jobs["hub"] = ("hub", _hub_files(tmp), None)
    return jobs


HUB = importlib.util.find_spec("keras_hub") is not None
HUB_MISSING = "keras_hub is not installed in this environment (the optional extra keras-gradcam[hub]): the KerasHub checks need it"


def _hub_files(tmp) -> dict:
    """Images and the weights of the tiny KerasHub model (saved here, on TensorFlow), for the ``hub`` task."""
    data = {"hub_images": np.random.default_rng(3).random((2, HUB_SIZE, HUB_SIZE, 3)).astype("float32")}
    for kind, build in HUB_MODELS.items():
        keras.utils.set_random_seed(13)
        data[f"weights_{kind}"] = str(tmp / f"hub_{kind}.weights.h5")
        build().save_weights(data[f"weights_{kind}"])
    return data


def _guided_job(tmp) -> dict:
    """The inputs of the "guided_training" task: a small CNN with BatchNormalization, one batch, its masks."""
    keras.utils.set_random_seed(3)
    weights = str(tmp / "guided.weights.h5")
    guided_cnn().save_weights(weights)
    x = np.random.default_rng(4).normal(size=(8, 8, 8, 2)).astype("float32")
    masks = np.zeros((8, 8, 8), "float32")
    masks[:6, 2:6, 1:5] = 1  # six annotated samples, two without annotation
    return {"x": x, "y": np.array([0, 1, 2, 0, 1, 2, 0, 1]), "masks": masks, "weights": weights}


def _target_job(tmp) -> dict:
    """The inputs of the "targets" task: the three small models' weights and their inputs."""
    rng = np.random.default_rng(2)
    data = {"x": rng.normal(size=(3, 8, 8, 2)).astype("float32"), "token_ids": rng.integers(0, VOCAB, (3, SEQ)).astype("int32"),
            "x_box": rng.random((3, 4, 4, 1)).astype("float32")}
    data["x_seg"] = data["x"]
    for kind, (build, _) in TARGET_MODELS.items():
        keras.utils.set_random_seed(13)
        data[f"weights_{kind}"] = str(tmp / f"target_{kind}.weights.h5")
        build().save_weights(data[f"weights_{kind}"])
    return data


CLI_METHODS = ["gradcam++", "scorecam"]


def _cli_files(tmp) -> dict:
    """A small RGB CNN saved as ``.keras`` (on TensorFlow) and two PNG images, for ``keras-gradcam explain``."""
    folder = tmp / "cli"
    folder.mkdir(exist_ok=True)
    keras.utils.set_random_seed(5)
    inputs = keras.Input((12, 12, 3))
    h = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(inputs)
    h = keras.layers.Conv2D(5, 3, activation="relu", name="c2")(h)
    outputs = keras.layers.Dense(3, activation="softmax", name="head")(keras.layers.GlobalAveragePooling2D()(h))
    keras.Model(inputs, outputs).save(folder / "m.keras")
    rng = np.random.default_rng(1)
    images = []
    for i in range(2):
        write_png(folder / f"img{i}.png", rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
        images.append(str(folder / f"img{i}.png"))
    return {"model": str(folder / "m.keras"), "images": np.array(images), "methods": np.array(CLI_METHODS),
            "out": str(folder / "out")}


@pytest.fixture(scope="module", params=["jax", "torch"])
def backend(request, tmp_path_factory):
    """Run every task once under one backend in a child process: ``(name, {job: results}, {job: inputs})``.

    ``KG_TEST_BACKENDS`` (comma-separated) limits the backends: ``make test-torch`` sets it to torch.
    """
    name = request.param
    wanted = os.environ.get("KG_TEST_BACKENDS")
    if wanted and name not in wanted.split(","):
        pytest.skip(f"KG_TEST_BACKENDS={wanted} leaves out {name}")
    if importlib.util.find_spec(name) is None:
        pytest.skip(INSTALL[name])
    tmp = tmp_path_factory.mktemp(f"backend_{name}")
    jobs = _jobs(tmp)
    listing = []
    for job, (task, data, _) in jobs.items():
        np.savez(tmp / f"{job}_in.npz", **data)
        listing.append([task, str(tmp / f"{job}_in.npz"), str(tmp / f"{job}_out.npz")])
    (tmp / "jobs.json").write_text(json.dumps(listing))
    env = dict(os.environ, KERAS_BACKEND=name, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, WORKER, str(tmp / "jobs.json")], env=env, cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    if proc.returncode != 0:
        pytest.fail(f"the {name} child process failed (exit {proc.returncode}):\n{proc.stderr[-6000:]}")
    results = {}
    for job in jobs:
        with np.load(tmp / f"{job}_out.npz") as f:
            results[job] = {k: f[k] for k in f.files}
        assert str(results[job]["backend"]) == name
    return name, results, jobs


# every registered method on the small CNN's "c2", the shared options, a nested backbone and a token
# layer; noise methods with zero noise (their draws differ between backends' generators)
OPTIONS = {
    "smoothgradcam++": {"n_samples": 3, "noise_level": 0.0},
    "sscam": {"n_samples": 2, "noise_std": 0.0},
    "integrated-gradcam": {"steps": 4},
    "iscam": {"n_steps": 2},
}
# (guided backpropagation explains the input: it takes no layer)
CASES = [{"id": m, "method": m, "layer": None if m == "guided-backprop" else "c2", "options": OPTIONS.get(m, {})}
         for m in kg.METHODS] + [
    {"id": "gradcam+aug_smooth", "method": "gradcam", "layer": "c2", "options": {"aug_smooth": True}},
    {"id": "gradcam+eigen_smooth", "method": "gradcam", "layer": "c2", "options": {"eigen_smooth": True}},
    {"id": "gradcam+relu_false", "method": "gradcam", "layer": "c2", "options": {"relu": False}},
    {"id": "gradcam+nested", "method": "gradcam", "layer": "backbone/c2", "model": "nested"},
    {"id": "guided-backprop+counterfactual", "method": "guided-backprop", "layer": None, "options": {"counterfactual": True, "targets": 0}},
    {"id": "gradcam +tokens", "method": "gradcam", "layer": "block0_norm1", "model": "vit"},
    {"id": "gradcam++ +tokens", "method": "gradcam++", "layer": "block0_norm1", "model": "vit"},
    {"id": "layercam +tokens", "method": "layercam", "layer": "block0_norm1", "model": "vit"},
    {"id": "ablationcam+tokens", "method": "ablationcam", "layer": "block0_norm1", "model": "vit", "options": {"verbose": 0}},
    {"id": "scorecam+max_channels", "method": "scorecam", "layer": "c2", "options": {"max_channels": 2, "verbose": 0}},
    {"id": "ablationcam+nested", "method": "ablationcam", "layer": "backbone/c2", "model": "nested", "options": {"verbose": 0}},
]
SUPPORTED = [c for c in CASES if c["method"] not in TF_ONLY_NAMES]
# the maths above the seam must be keras.ops for any map to run on JAX or PyTorch: until the conversion
# of core/postprocess.py (issue 21) is on this branch, the map checks skip, saying so
KERAS_OPS_MATHS = not hasattr(postprocess, "tf")
NOT_YET = "the explain path's maths is still TensorFlow here (core/postprocess.py imports tensorflow): it waits for the keras.ops conversion"
# those of backend_seam.NOT_YET raise NotImplementedError naming the backend (checked below); what runs but differs:
PENDING: dict = {"jax": set(), "torch": set()}
# The layer maps' rtol where 1e-4 is below float32 rounding. Grad-CAM++ on the ViT's "block0_norm1":
# alpha = 1 / (2 + g * sum(A)) has a denominator of 0.041 (sample 0, channel 3, whose weight is 18.5
# of the sample's 26.4), so it multiplies the relative rounding of g by 48; the map's entries are
# sums of positive and negative terms (the entry that needs the most, 0.26 where the peak is 25.2,
# sums terms of up to 3.9), so the small ones lose more. Measured against this file's TensorFlow
# maps, with AVX-512 / AVX2-only kernels on all three backends: PyTorch needs 3.5e-4 / 2.6e-4, JAX
# 7.0e-5 / 2.5e-4, and TensorFlow on AVX2 against itself on AVX-512 3.0e-4. In float64, TensorFlow
# and PyTorch give the same map to 6e-7 (TensorFlow's float64 GELU is 5e-9 off erf's). Their
# float32 layer gradients are 3e-7 (TensorFlow) and 8e-7 (PyTorch) of their peak off the float64
# ones; uniform noise of PyTorch's size moves the float64 map by up to 6e-4 (1,000 draws). Grad-CAM
# and LayerCAM on the same layer differ by at most 1.3e-6 in all these runs: they keep 1e-4.
# docs/backends.md, footnote 2, has the details.
RTOL = {"jax": {"gradcam++ +tokens": 1e-3}, "torch": {"gradcam++ +tokens": 1e-3}}


@pytest.fixture(scope="module")
def tf_maps(tmp_path_factory):
    """Each supported case explained here, on TensorFlow, with the weights the child loads."""
    if not KERAS_OPS_MATHS:
        pytest.skip(NOT_YET)
    tmp = tmp_path_factory.mktemp("tf_maps")
    jobs = _jobs(tmp)
    data = jobs["explain"][1]
    models, out = {}, {}
    for case in SUPPORTED:
        kind = case.get("model", "cnn")
        if kind not in models:
            models[kind] = MODELS[kind]()
            models[kind].load_weights(data[f"weights_{kind}"])
        out[case["id"]] = kg.explain(models[kind], data["x"], method=case["method"], layer=case["layer"], **case.get("options", {}))
    return out


@pytest.mark.parametrize("case", SUPPORTED, ids=[c["id"] for c in SUPPORTED])
def test_same_weights_give_the_same_maps_as_tensorflow(backend, case, tf_maps, request):
    """Every method the backend runs: layer maps, heatmaps, scores and classes equal TensorFlow's (1e-4;
    the layer maps of the cases in ``RTOL`` to what float32 rounding allows there), and the guided
    methods' input-space maps (``attributions``, the guided-backpropagation image) too."""
    name, results, _ = backend
    if not KERAS_OPS_MATHS:
        pytest.skip(NOT_YET)
    got = results["explain"]
    error = got.get(f"error_{case['id']}")
    if case["method"] in backend_seam.NOT_YET.get(name, ()):
        # not run yet on this backend: a clear error naming it, before any work, and the model unchanged
        assert str(error).startswith("NotImplementedError:") and f"KERAS_BACKEND={name}" in str(error), error
        assert bool(got[f"unchanged_{case['id']}"])
        return
    if case["id"] in PENDING[name]:
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"{case['id']} differs from TensorFlow on {name}"))
    assert error is None, f"{case['id']} failed on {name}: {error}"
    expected = tf_maps[case["id"]]
    rtol = RTOL[name].get(case["id"], 1e-4)
    np.testing.assert_allclose(got[f"layer_heatmaps_{case['id']}"], expected.layer_heatmaps, rtol=rtol, atol=1e-6)
    np.testing.assert_allclose(got[f"heatmaps_{case['id']}"], expected.heatmaps, atol=1e-4)
    np.testing.assert_allclose(got[f"scores_{case['id']}"], expected.scores, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(got[f"targets_{case['id']}"], expected.targets)
    for field, value in [("attributions", expected.attributions), *expected.extras.items()]:
        if value is not None:  # input-space maps (guided methods): relative to their largest value
            scale = max(float(np.abs(value).max()), 1e-12)
            np.testing.assert_allclose(got[f"{field}_{case['id']}"], value, rtol=1e-4, atol=1e-4 * scale)
    assert bool(got[f"unchanged_{case['id']}"])


@pytest.fixture(scope="module")
def hub_tf_maps(backend):
    """Each KerasHub case explained here, on TensorFlow, with the weights the child loaded."""
    if not HUB:
        pytest.skip(HUB_MISSING)
    if not KERAS_OPS_MATHS:
        pytest.skip(NOT_YET)
    data = backend[2]["hub"][1]
    models, out = {}, {}
    for case in HUB_CASES:
        if case["model"] not in models:
            models[case["model"]] = HUB_MODELS[case["model"]]()
            models[case["model"]].load_weights(data[f"weights_{case['model']}"])
        out[case["id"]] = hub_explain(models[case["model"]], case, data)
    return out


@pytest.mark.parametrize("case", HUB_CASES, ids=[c["id"] for c in HUB_CASES])
def test_kerashub_models_give_the_same_maps_as_tensorflow(backend, hub_tf_maps, case):
    """A KerasHub ViT from a tiny config: the layers inside its encoder layer are found on the backend
    (the default layer is the input of the last attention; a named inner layer is accepted) and give
    TensorFlow's maps, scores and classes with the same weights (1e-4)."""
    name, results, _ = backend
    got, key, expected = results["hub"], case["id"], hub_tf_maps[case["id"]]
    if "missing" in got:
        pytest.skip(f"{got['missing']} ({name})")
    assert f"error_{key}" not in got, f"{key} failed on {name}: {got[f'error_{key}']}"
    if case["layer"] is None:  # the default is inside the subclassed encoder layer, which only the probe sees
        assert "_encoder" in expected.layer and expected.layer.count("/") >= 2, expected.layer
    assert str(got[f"layer_{key}"]) == expected.layer
    np.testing.assert_allclose(got[f"layer_heatmaps_{key}"], expected.layer_heatmaps, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got[f"heatmaps_{key}"], expected.heatmaps, atol=1e-4)
    np.testing.assert_allclose(got[f"scores_{key}"], expected.scores, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(got[f"targets_{key}"], expected.targets)
    assert np.abs(expected.layer_heatmaps).max() > 0
    assert bool(got[f"unchanged_{key}"])


def test_gradcampp_on_the_token_layer_is_too_ill_conditioned_for_1e_4(tf_maps, tmp_path):
    """Why ``RTOL`` loosens Grad-CAM++ on "block0_norm1": on TensorFlow's own activations and gradients
    (float64 from here on), alpha's denominator 2 + g * sum(A) comes within 0.1 of zero (48 times the
    rounding of g), and noise of 1e-6 of the gradients' peak, the size of the backends' float32
    rounding there, moves the map by more than 1e-4 (median of 20 seeded draws). Fails when the case
    becomes well conditioned: then it goes back to 1e-4."""
    data = _jobs(tmp_path)["explain"][1]
    model = MODELS["vit"]()
    model.load_weights(data["weights_vit"])
    targets = tf_maps["gradcam++ +tokens"].targets
    per_class = {c: tf_reference(model, ["block0_norm1"], data["x"], int(c)) for c in set(targets.tolist())}
    acts = per_class[targets[0]][0][0][:, 1:].reshape(3, 4, 4, 8).astype("float64")  # the class token dropped
    grads = np.stack([per_class[c][1][0][i] for i, c in enumerate(targets)])  # each sample's class
    grads = grads[:, 1:].reshape(3, 4, 4, 8).astype("float64")
    sums = acts.sum(axis=(1, 2), keepdims=True)
    den = 2.0 + grads * sums
    used = (grads > 0) & (den > 1e-7)
    assert 0 < den[used].min() < 0.1, den[used].min()
    assert np.max(np.abs(grads * sums / den)[used]) > 10

    def gradcampp(g):  # the paper's map, as methods/gradcam_plusplus.py computes it
        d = 2.0 + g * sums
        weights = np.where((g > 0) & (d > 1e-7), np.maximum(g, 0) / d, 0.0).sum(axis=(1, 2))
        return np.maximum(np.einsum("bhwk,bk->bhw", acts, weights), 0.0)

    clean = gradcampp(grads)
    np.testing.assert_allclose(clean, tf_maps["gradcam++ +tokens"].layer_heatmaps, rtol=1e-3, atol=1e-6)
    scale = np.abs(grads).max(axis=(1, 2, 3), keepdims=True)
    noise = 1e-6 * scale * np.random.default_rng(0).uniform(-1, 1, (20, *grads.shape))
    moved = [np.max(np.abs(gradcampp(grads + n) - clean) / np.maximum(clean, 1e-6)) for n in noise]
    assert np.median(moved) > 1e-4, moved


def test_cli_explain_writes_the_maps_tensorflow_writes(backend, tmp_path):
    """``keras-gradcam explain`` under the backend, on a ``.keras`` file saved on TensorFlow: the same maps on disk."""
    name, results, jobs = backend
    got = results["cli"]
    data = jobs["cli"][1]
    for method in CLI_METHODS:
        assert f"error_{method}" not in got, str(got.get(f"error_{method}"))
        out = tmp_path / method
        code = cli.main(["explain", data["model"], *[str(p) for p in data["images"]], "--out", str(out),
                         "--method", method, "--layer", "c2", "--size", "12"])
        assert code == 0
        for field in ("heatmaps", "layer_heatmaps"):
            np.testing.assert_allclose(got[f"{field}_{method}"], np.load(out / f"{field}.npy"), rtol=1e-4, atol=1e-5)


def test_two_threads_calling_one_explainer_get_the_maps_of_calls_made_one_after_the_other(backend):
    """The capture's patching and the JAX seam's shape notes are per thread: concurrent calls do not mix."""
    got = backend[1]["threads"]
    for method in ("gradcam++", "scorecam"):
        np.testing.assert_allclose(got[f"together_{method}"], got[f"alone_{method}"], rtol=1e-5, atol=1e-6)
        assert np.ptp(got[f"alone_{method}"]) > 0


def test_jax_traces_once_per_input_shape_and_torch_runs_eagerly(backend):
    """JAX: the model's Python runs only while a new input shape is traced (an abstract pass and the jit
    trace), never on a repeated call; PyTorch (eager, docs/backends.md) runs it on every call."""
    name, results, _ = backend
    for method, (first, same, other) in zip(("gradcam", "scorecam"), results["traces"]["counts"]):
        assert first > 0, method
        if name == "jax":
            assert same == first, f"{method}: four calls of the same shape traced again ({first} -> {same} runs)"
            assert first < other <= 2 * first, f"{method}: another batch size: {first} -> {other} runs"
        else:
            assert same == 5 * first and other > same, (method, first, same, other)


def test_noise_is_reproducible_the_same_in_any_batch_and_changes_with_the_seed(backend):
    """SS-CAM and Smooth Grad-CAM++ with noise on the backend: a draw depends on (seed, i) only, so the
    maps equal each other at batch sizes 3 and 1 and change with the seed; the draws are standard normal.

    (Each backend has its own counter-based generator, so noisy maps are compared within a backend;
    with zero noise they equal TensorFlow's, in the test above.)"""
    name, results, _ = backend
    got = results["noise"]
    for method in ("sscam", "smoothgradcam++"):
        np.testing.assert_allclose(got[f"{method}_single"], got[f"{method}_whole"], rtol=1e-5, atol=1e-6)
        assert np.abs(got[f"{method}_seed1"] - got[f"{method}_whole"]).max() > 1e-3, method
    draws = got["draws"]
    np.testing.assert_array_equal(draws[1], draws[2])  # the same (seed, i): the same numbers
    assert np.abs(draws[0] - draws[1]).max() > 0.5  # another i: other numbers
    np.testing.assert_array_equal(got["draw"], draws[1])  # one draw of (3, 1) is the row of id 1
    for d in (draws[0], draws[1]):  # 4096 standard normal numbers: mean within 4 standard errors, std near 1
        assert abs(d.mean()) < 4 / 64 and abs(d.std() - 1) < 0.06


@pytest.fixture(scope="module")
def tf_guided(tmp_path_factory):
    """GuidedTraining's terms and trained weights on TensorFlow, from the weights and batch the child gets."""
    return guided_training_run(kg, _guided_job(tmp_path_factory.mktemp("tf_guided")))


def test_guided_training_gives_tensorflows_terms_and_training(backend, tf_guided):
    """The same weights and batch give TensorFlow's alignment and counterfactual terms (1e-4) for the
    Grad-CAM map (contrast score, rrr), the HINT loss on the logit and the input-gradient map; 2 epochs of
    SGD through ``fit`` (the second-order gradient through the map, BatchNormalization's statistics) leave
    the wrapped model with TensorFlow's weights, and the logged terms match. 0/255 masks: the ValueError
    TensorFlow gives, from the first step of ``fit``, and the model unchanged (JAX's ``fit`` empties the
    variables for its steps: they get their values back)."""
    name, results, _ = backend
    got = results["guided_training"]
    assert "error" not in got, str(got.get("error"))
    for key in GUIDED_OPTIONS:
        np.testing.assert_allclose(got[f"align_{key}"], tf_guided[f"align_{key}"], rtol=1e-4, atol=1e-6, err_msg=key)
        np.testing.assert_allclose(got[f"y_pred_{key}"], tf_guided[f"y_pred_{key}"], rtol=1e-4, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(got["counterfactual_default"], tf_guided["counterfactual_default"], rtol=1e-4)
    np.testing.assert_allclose(got["counterfactual_logit_hint"], tf_guided["counterfactual_logit_hint"], rtol=1e-4)
    assert 0 < float(got["align_default"]) < 1  # a share of the map: the masks leave part of the evidence outside
    assert "got values in [0, 255]" in str(got.get("bad_masks")) and bool(got["unchanged_after_error"])
    for key in ("loss", "alignment_loss", "counterfactual_loss", "evidence_inside"):
        assert np.isfinite(got[f"history_{key}"]).all()
        np.testing.assert_allclose(got[f"history_{key}"], tf_guided[f"history_{key}"], rtol=1e-4, err_msg=key)
    start = guided_cnn()
    start.load_weights(str(backend[2]["guided_training"][1]["weights"]))
    weights = [k for k in got if k.startswith("weight_")]
    assert len(weights) == len(start.get_weights())
    moved = 0
    for i, w0 in enumerate(start.get_weights()):
        np.testing.assert_allclose(got[f"weight_{i}"], tf_guided[f"weight_{i}"], rtol=1e-4, atol=1e-5, err_msg=f"weight {i}")
        moved += not np.allclose(got[f"weight_{i}"], w0)
    assert moved == len(weights)  # every variable trained, the moving statistics too


def test_guided_methods_are_compared_on_every_backend_not_excused():
    """Guided Backprop and Guided Grad-CAM(++) run on JAX and PyTorch: they are cases of the map comparison
    above, neither TensorFlow-only nor pending on a backend; nothing is either (GuidedTraining runs on every
    backend too: test_guided_training_gives_tensorflows_terms_and_training)."""
    guided = {"guided-backprop", "guided-gradcam", "guided-gradcam++"}
    assert guided <= {c["method"] for c in SUPPORTED}
    assert not guided & (TF_ONLY_NAMES | set().union(*backend_seam.NOT_YET.values()))
    assert TF_ONLY_NAMES == set()
    assert not any(backend_seam.NOT_YET.values())


def test_callback_writes_tensorboard_images_and_scalars_during_fit(backend):
    """``model.fit`` on the backend with a ``GradCAMCallback``: TensorBoard (TensorFlow's writer) gets the probe
    cards and the bias scalars at steps 0 and 1, and the model trains."""
    from tensorboard.backend.event_processing import plugin_event_multiplexer

    name, results, jobs = backend
    if not KERAS_OPS_MATHS:
        pytest.skip(NOT_YET)
    got = results["callback"]
    assert "error" not in got, str(got.get("error"))
    assert bool(got["trained"])
    mux = plugin_event_multiplexer.EventMultiplexer(tensor_size_guidance={"images": 0, "scalars": 0, "text": 0})
    mux.AddRunsFromDirectory(jobs["callback"][1]["log_dir"])
    mux.Reload()
    images = mux.PluginRunToTagToContent("images")["gradcam"]
    scalars = mux.PluginRunToTagToContent("scalars")["gradcam"]
    assert {f"gradcam/probe_{i:02d}" for i in range(4)} <= set(images)
    assert set(scalars) == {"bias/energy_inside_object", "bias/pointing_game"}
    for tag in list(images) + list(scalars):
        assert [e.step for e in mux.Tensors("gradcam", tag)] == [0, 1], tag
    values = [float(tf.make_ndarray(e.tensor_proto)) for e in mux.Tensors("gradcam", "bias/pointing_game")]
    np.testing.assert_allclose(values, got["pointing_game"], rtol=1e-6)


def test_dataset_runs_metrics_and_evaluate_equal_tensorflows(backend, tmp_path):
    """A ``PyDataset`` through ``kg.explain_dataset``, ``average_drop``, ``deletion_auc`` and ``kg.evaluate``
    on the backend give what they give on TensorFlow with the same weights."""
    if not KERAS_OPS_MATHS:
        pytest.skip(NOT_YET)
    name, results, jobs = backend
    got = results["metrics"]
    assert "error" not in got, str(got.get("error"))
    data = jobs["metrics"][1]
    model = backend_cnn()
    model.load_weights(data["weights"])
    x = data["x"]
    exp = kg.explain(model, x, method="gradcam", layer="c2")
    np.testing.assert_allclose(got["run_heatmaps"], exp.heatmaps, atol=1e-4)
    np.testing.assert_allclose(got["average_drop"], kg.metrics.average_drop(model, x, exp, reduction=None), atol=1e-4)
    np.testing.assert_allclose(got["deletion_auc"], kg.metrics.deletion_auc(model, x, exp, reduction=None), atol=1e-4)
    table = kg.evaluate(model, x, methods=["gradcam"], layer="c2", metrics=["average_drop", "deletion_auc"])
    np.testing.assert_allclose(got["evaluate"], [table[0]["average_drop"], table[0]["deletion_auc"]], rtol=1e-4)


def tf_reference(model, names, x, cls):
    """Layer outputs and d sum(logits[:, cls]) / d (outputs, input) on TensorFlow, with a tape."""
    layers = [model.get_layer(n).output for n in names]
    sub = keras.Model(model.inputs, layers + [model.outputs[0]])
    xt = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        *acts, out = sub(xt, training=False)
        total = tf.reduce_sum(out[:, cls])
    grads = tape.gradient(total, acts + [xt], unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return [a.numpy() for a in acts], [g.numpy() for g in grads[:-1]], grads[-1].numpy(), out.numpy()


def test_layer_gradient_is_the_hand_computed_one(backend):
    """c2 -> GAP -> Dense: d logit_c / d A_k(i, j) = W[k, c] / (6 * 6) at every position and sample."""
    _, results, jobs = backend
    model = jobs["gradients"][2]
    head = model.get_layer("head").get_weights()[0]
    expected = np.broadcast_to(head[:, CLS] / 36.0, (3, 6, 6, 4))
    np.testing.assert_allclose(results["gradients"]["grad1"], expected, rtol=1e-6, atol=1e-7)


def test_layer_and_input_gradients_equal_tensorflows(backend):
    """Same weights: the same activations, layer gradients (through the ReLU) and input gradients as a tape."""
    _, results, jobs = backend
    _, data, model = jobs["gradients"]
    acts, grads, igrad, logits = tf_reference(model, ["c1", "c2", "s1"], data["x"], CLS)
    got = results["gradients"]
    np.testing.assert_allclose(got["logits"], logits, rtol=1e-5, atol=1e-6)
    for i in range(3):
        np.testing.assert_allclose(got[f"act{i}"], acts[i], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[f"grad{i}"], grads[i], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got["igrad"], igrad, rtol=1e-5, atol=1e-7)
    assert np.abs(got["grad0"]).max() > 0 and np.abs(got["igrad"]).max() > 0


def test_layer_the_score_does_not_depend_on_has_zero_gradients(backend):
    """"s1" feeds only the second output: its gradient is zeros of its shape, not None or an error."""
    _, results, _ = backend
    grad = results["gradients"]["grad2"]
    assert grad.shape == (3, 8, 8, 2) and not grad.any()


def test_compiled_function_reads_the_weights_at_each_call(backend):
    """After the head's weights double, the same compiled function gives twice the logits and the c2 gradient."""
    _, results, _ = backend
    got = results["gradients"]
    np.testing.assert_allclose(got["logits_after"], 2 * got["logits"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got["grad1_after"], 2 * got["grad1"], rtol=1e-6, atol=1e-8)


def test_the_seam_leaves_the_weights_unchanged(backend):
    _, results, _ = backend
    assert bool(results["gradients"]["unchanged"])


def test_forward_only_and_input_gradients_only(backend):
    """gradients=False: the outputs and no layer gradients; with wrt_inputs, the input gradient alone.

    Run after the head's weights doubled, so the input gradient is twice the first call's.
    """
    _, results, _ = backend
    got = results["gradients"]
    np.testing.assert_allclose(got["forward_only_act1"], got["act1"], rtol=1e-6)
    assert bool(got["forward_only_none"]) and bool(got["igrad_only_none"])
    np.testing.assert_allclose(got["igrad_only"], 2 * got["igrad"], rtol=1e-5, atol=1e-8)


def test_guided_relu_passes_only_positive_gradients_at_positive_inputs(backend):
    """x = [-1, 2, 3, .5], dy = [1, 1, -1, 2]: dy * (x > 0) * (dy > 0) = [0, 1, 0, 2] (Springenberg et al.)."""
    _, results, _ = backend
    np.testing.assert_array_equal(results["guided_relu"]["grad"], [0.0, 1.0, 0.0, 2.0])


def test_guided_backprop_refuses_a_relu_computed_inside_a_custom_layer(backend):
    """A ``keras.ops.relu`` in a custom layer's ``call`` cannot be guided: on every backend the one plain ReLU
    left is found (TensorFlow: the traced graph; JAX: the jaxpr; PyTorch: the relu calls of a run) and
    refused with a ValueError, not explained with its plain gradient; the model is left as it was."""
    _, results, _ = backend
    got = results["guided_check"]
    error = str(got["error"])
    assert error.startswith("ValueError: 1 ReLU(s) of model") and "could not be replaced" in error, error
    assert bool(got["unchanged"])


def test_plain_relus_counts_the_relus_the_guided_edits_leave(backend):
    """backend_cnn has two ReLUs (the ReLU layer "r1", c2's activation): the seam counts 2, then 0 while the
    guided edits are applied, then 2 again, for the same function (JAX must not reuse a cached trace)."""
    _, results, _ = backend
    np.testing.assert_array_equal(results["guided_check"]["plain_relus"], [2, 0, 2])


@pytest.mark.parametrize("missing, extra", [("jax", "jax"), ("torch", "torch")])
def test_import_under_a_backend_whose_package_is_missing_names_the_extra(missing, extra):
    """KERAS_BACKEND=jax without jax: an ImportError saying `pip install keras-gradcam[jax]`, not keras' own trace."""
    code = f"import sys; sys.modules[{missing!r}] = None\nimport keras_gradcam"  # None: `import torch` fails
    env = dict(os.environ, KERAS_BACKEND=missing, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: keras-gradcam:"), last
    assert f"pip install keras-gradcam[{extra}]" in last and "KERAS_BACKEND" in last


# -- dense-prediction, token and embedding targets -----------------------------------------------------
TARGET_CASES = target_cases(kg)
TARGET_ERRORS = {"bad_token": [f"{VOCAB} token ids", f"0 .. {VOCAB - 1}", f"received token ids [{VOCAB}]"],
                 "bad_position": [f"{SEQ} positions", f"-{SEQ} .. {SEQ - 1}", f"received positions [{SEQ}]"],
                 "bad_sequence": [f"{VOCAB} token ids", f"[{VOCAB + 2}]"]}
TARGET_ERRORS["bad_position_ablationcam"] = TARGET_ERRORS["bad_position"]  # a perturbation method's passes too
TARGET_MAPS = [c for c in TARGET_CASES if c not in TARGET_ERRORS]


@pytest.fixture(scope="module")
def tf_targets(tmp_path_factory):
    """Each target case explained here, on TensorFlow, with the weights the child loads: the explanation,
    the "no detection" warnings it gave, or the error it raised."""
    data = _target_job(tmp_path_factory.mktemp("tf_targets"))
    models, out = {}, {}
    for case, (kind, target, *method) in TARGET_CASES.items():
        if kind not in models:
            models[kind] = TARGET_MODELS[kind][0]()
            models[kind].load_weights(data[f"weights_{kind}"])
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            try:
                out[case] = kg.explain(models[kind], target_inputs(kind, data), method=(method or ["gradcam"])[0], layer=TARGET_MODELS[kind][1],
                                       relu=False, targets=target,
                                 **({"verbose": 0} if method else {}))
            except ValueError as error:
                out[case] = error
        out[f"warnings_{case}"] = [str(w.message) for w in seen if "no detection" in str(w.message)] or [""]
    return out


@pytest.mark.parametrize("case", TARGET_MAPS)
def test_targets_give_the_maps_and_scores_tensorflow_gives(backend, case, tf_targets):
    """Segmentation (a mask for all, one per image, the predicted region), token, sequence, similarity and box
    targets on the backend: the layer maps and scores equal TensorFlow's (1e-4), and so do BoxTarget's warnings."""
    name, results, _ = backend
    got = results["targets"]
    assert f"error_{case}" not in got, str(got.get(f"error_{case}"))
    expected = tf_targets[case]
    assert np.abs(expected.layer_heatmaps).max() > 0 or case == "box_unmatched"
    np.testing.assert_allclose(got[f"layer_heatmaps_{case}"], expected.layer_heatmaps, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got[f"scores_{case}"], expected.scores, rtol=1e-4, atol=1e-6)
    assert list(got[f"warnings_{case}"]) == tf_targets[f"warnings_{case}"]
    if case.startswith("box_unmatched"):  # sample 1 asks for class 1 over box 0, whose class is 0: no match, score 0
        assert tf_targets[f"warnings_{case}"][0].startswith("BoxTarget: 1 of 3 samples have no detection")
        assert expected.scores[1] == 0 and expected.scores[0] > 1


@pytest.mark.parametrize("case", list(TARGET_ERRORS))
def test_bad_token_ids_and_positions_give_tensorflows_value_error(backend, case, tf_targets):
    """A token id beyond the vocabulary (checked before anything is traced) or a position beyond the sequence
    (the model's sequence axis is not static: checked on the host while the compiled function runs): the
    ValueError TensorFlow gives, naming the valid range and what was received."""
    name, results, _ = backend
    error = tf_targets[case]
    assert isinstance(error, ValueError), error
    for words in TARGET_ERRORS[case]:
        assert words in str(error), (words, str(error))
    assert str(results["targets"][f"error_{case}"]) == f"ValueError: {error}"


def test_targets_called_outside_an_explainer(backend):
    """``BoxTarget(...)(detections)`` on hand-made detections: box 0 is class 1 with IoU 1 in sample 0 and box 1
    (class 1, IoU 0.75) in sample 1, so the scores are their class-1 logits 2.0 and 1.5; with iou_threshold=0.8
    sample 1 has no match (score 0, a warning). ``TokenTarget(...)(logits)`` with a bad id: the ValueError."""
    name, results, _ = backend
    got = results["targets"]
    np.testing.assert_allclose(got["direct_box"], [2.0, 1.5], rtol=1e-6)
    np.testing.assert_allclose(got["direct_box_strict"], [2.0, 0.0], rtol=1e-6)
    assert [str(w) for w in got["direct_box_warnings"]] == [
        "BoxTarget: 1 of 2 samples have no detection of the class whose box overlaps the reference box with IoU >= "
        "iou_threshold; their score is 0 and their map all zero. Lower iou_threshold (or min_score), or check the box "
        "format and the class."]
    error = str(got["direct_token_error"])
    assert error.startswith("ValueError: TokenTarget: a token id is not in the vocabulary") and f"[{VOCAB}]" in error, error
