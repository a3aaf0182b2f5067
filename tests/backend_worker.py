"""Child-process side of the backend tests: run one task under the ``KERAS_BACKEND`` it was started with.

Keras fixes its backend when it is first imported, so the JAX and PyTorch checks run here, in a
child process, and the TensorFlow suite compares what comes back. Usage::

    KERAS_BACKEND=jax python tests/backend_worker.py JOBS.json

``JOBS.json`` lists ``[task, IN.npz, OUT.npz]`` triples, all run in this one process (starting
one costs seconds). ``IN.npz`` holds the task's arrays (and ``weights``: the path of a
``.weights.h5`` file written by the parent); ``OUT.npz`` gets the task's results. The models are built here and in the parent by
the same functions, so the same weights file fits both.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _path in (ROOT, os.path.join(ROOT, "tests")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import keras  # noqa: E402


def backend_cnn(two_heads: bool = False) -> keras.Model:
    """(8, 8, 2) -> Conv2D "c1" (linear) -> ReLU "r1" -> Conv2D "c2" (ReLU) -> GAP -> Dense "head" (3 logits).

    With ``two_heads``, a second output "side" reads "c1" through its own Conv2D "s1", which the
    first output does not depend on.
    """
    inp = keras.Input((8, 8, 2), name="image")
    c1 = keras.layers.Conv2D(3, 3, padding="same", name="c1")(inp)
    h = keras.layers.ReLU(name="r1")(c1)
    h = keras.layers.Conv2D(4, 3, activation="relu", name="c2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    out = keras.layers.Dense(3, name="head")(h)
    if not two_heads:
        return keras.Model(inp, out, name="backend_cnn")
    side = keras.layers.Conv2D(2, 1, name="s1")(c1)
    side = keras.layers.GlobalAveragePooling2D(name="side_gap")(side)
    return keras.Model(inp, [out, side], name="backend_cnn2")


def seam():
    """This process's backend module of the seam (keras_gradcam/core/backend/<backend>.py)."""
    name = keras.backend.backend()
    if name == "jax":
        from keras_gradcam.core.backend import jax as module
    elif name == "torch":
        from keras_gradcam.core.backend import torch as module
    else:
        raise SystemExit(f"no seam module is tested here for backend {name!r}")
    return module


def standalone_gradients(model, names, x, cls: int, wrt_inputs: bool, gradients: bool = True):
    """The seam driven by a minimal capture: ``layer.call`` wrapped to call the hook, score = sum of logits[:, cls]."""
    from keras_gradcam.core.patching import thread_patches

    module = seam()
    layers = [model.get_layer(n) for n in names]
    current = {}

    def wrapped(i, call):
        def recording_call(*args, **kwargs):
            return current["hook"](i, call(*args, **kwargs))

        return recording_call

    def contexts():
        return [thread_patches([(layer, "call", wrapped(i, layer.call)) for i, layer in enumerate(layers)])]

    def body(xb):
        def forward(hook, xs=xb):
            current["hook"] = hook
            out = model(xs, training=False)
            out = out[0] if isinstance(out, (list, tuple)) else out
            return keras.ops.sum(out[:, cls]), out

        return module.layer_gradients(forward, xb, len(layers), gradients=gradients, wrt_inputs=wrt_inputs)

    return module.compile(body, [keras.KerasTensor((None, *x.shape[1:]), "float32")], contexts)


def task_gradients(data: dict) -> dict:
    model = backend_cnn(two_heads=bool(data["two_heads"]))
    model.load_weights(str(data["weights"]))
    names = [str(n) for n in data["layers"]]
    before = [v.copy() for v in model.get_weights()]
    fn = standalone_gradients(model, names, data["x"], int(data["cls"]), bool(data["wrt_inputs"]))
    result = {}
    for call in range(2):  # the second call reuses the compiled function, after the weights change
        aux, acts, grads, igrads = fn(data["x"])
        suffix = "" if call == 0 else "_after"
        result["logits" + suffix] = keras.ops.convert_to_numpy(aux)
        for i in range(len(names)):
            result[f"act{i}{suffix}"] = keras.ops.convert_to_numpy(acts[i])
            result[f"grad{i}{suffix}"] = keras.ops.convert_to_numpy(grads[i])
        if igrads is not None:
            result["igrad" + suffix] = keras.ops.convert_to_numpy(igrads[0])
        if call == 0:
            after = model.get_weights()
            result["unchanged"] = np.array(all(np.array_equal(a, b) for a, b in zip(before, after)))
            model.get_layer("head").set_weights([w * 2.0 for w in model.get_layer("head").get_weights()])
    # forward only, then input gradients only (what guided backpropagation asks for)
    _, acts, grads, igrads = standalone_gradients(model, names, data["x"], int(data["cls"]), False, False)(data["x"])
    result["forward_only_act1"] = keras.ops.convert_to_numpy(acts[1])
    result["forward_only_none"] = np.array(grads is None and igrads is None)
    _, acts, grads, igrads = standalone_gradients(model, names, data["x"], int(data["cls"]), True, False)(data["x"])
    result["igrad_only"] = keras.ops.convert_to_numpy(igrads[0])
    result["igrad_only_none"] = np.array(grads is None)
    return result


def task_guided_relu(data: dict) -> dict:
    """Gradient of sum(guided_relu(x) * w) through the seam's guided ReLU, with layer_gradients' hook."""
    module = seam()
    x, w = data["x"], data["w"]

    def forward(hook):
        y = hook(0, keras.ops.convert_to_tensor(x))
        return keras.ops.sum(module.guided_relu(y) * keras.ops.convert_to_tensor(w)), None

    _, _, grads, _ = module.layer_gradients(forward, x, 1)
    return {"grad": keras.ops.convert_to_numpy(grads[0])}


class OwnReLU(keras.layers.Layer):
    """A custom layer that computes a ReLU in its ``call``: guided backpropagation cannot guide it."""

    def call(self, x):
        return keras.ops.relu(x)


def task_guided_check(data: dict) -> dict:
    """``GuidedBackprop`` of x (4,) -> Dense -> OwnReLU -> Dense: the error it raises, and whether the model is unchanged."""
    import keras_gradcam as kg

    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(3)(OwnReLU()(keras.layers.Dense(5)(inp))))
    before = [w.copy() for w in model.get_weights()]
    x = np.asarray(data["x"])
    out = keras.ops.convert_to_numpy(model(x))
    try:
        kg.GuidedBackprop(model)
        error = "no error"
    except Exception as e:  # reported to the parent
        error = f"{type(e).__name__}: {e}"
    same = all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    same = same and np.array_equal(keras.ops.convert_to_numpy(model(x)), out)
    # the seam's count of plain ReLUs, for one function run before and while the ReLUs are guided
    from keras_gradcam.core.backend import plain_relus
    from keras_gradcam.methods.guided_model import guided_edits, guided_relus

    cnn = backend_cnn()

    def forward(t):
        return cnn(t, training=False)

    counts = [plain_relus(forward, (None, 8, 8, 2), "float32")]
    with guided_relus(guided_edits(cnn)):
        counts.append(plain_relus(forward, (None, 8, 8, 2), "float32"))
    counts.append(plain_relus(forward, (None, 8, 8, 2), "float32"))
    return {"error": np.array(error), "unchanged": np.array(same), "plain_relus": np.array(counts)}


def task_explain(data: dict) -> dict:
    """``kg.explain`` for each case of ``data["cases"]`` (JSON: id, method, layer, options, model):
    its maps, scores and classes, or the error it raised (``error_<id>``: "Type: message")."""
    import keras_gradcam as kg

    models = {}
    result = {}
    x = data["x"]
    for case in json.loads(str(data["cases"])):
        kind = case.get("model", "cnn")
        if kind not in models:
            models[kind] = MODELS[kind]()
            models[kind].load_weights(str(data[f"weights_{kind}"]))
        model = models[kind]
        before = [w.copy() for w in model.get_weights()]
        inputs = data[case.get("inputs", "x")]
        try:
            exp = kg.explain(model, inputs, method=case["method"], layer=case.get("layer"), **case.get("options", {}))
        except Exception as error:  # reported to the parent, which decides whether it was expected
            result[f"error_{case['id']}"] = np.array(f"{type(error).__name__}: {error}")
        else:
            for field in ("heatmaps", "layer_heatmaps", "scores", "targets", "attributions"):
                value = getattr(exp, field)
                if value is not None:
                    result[f"{field}_{case['id']}"] = np.asarray(value)
            for key, value in exp.extras.items():  # e.g. guided Grad-CAM's "guided_backprop" image
                result[f"{key}_{case['id']}"] = np.asarray(value)
        after = model.get_weights()
        result[f"unchanged_{case['id']}"] = np.array(all(np.array_equal(a, b) for a, b in zip(before, after)))
    del x
    return result


def task_callback(data: dict) -> dict:
    """``model.fit`` of a small CNN for 2 epochs with a ``GradCAMCallback`` writing to ``data["log_dir"]``."""
    import keras_gradcam as kg

    ds = kg.datasets.make_shapes(n=24, image_size=16, seed=0)
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c2")(h)
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inp, out)
    model.compile("adam", "sparse_categorical_crossentropy")
    before = [w.copy() for w in model.get_weights()]
    callback = kg.GradCAMCallback(
        ds.images[:4], str(data["log_dir"]), probe_labels=ds.labels[:4], probe_masks=ds.masks[:4],
        method="gradcam", layer="c2", class_names=ds.class_names,
    )
    try:
        model.fit(ds.images, ds.labels, epochs=2, batch_size=8, verbose=0, callbacks=[callback])
    except Exception as error:  # reported to the parent
        return {"error": np.array(f"{type(error).__name__}: {error}")}
    trained = any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    return {"trained": np.array(trained), "pointing_game": np.asarray(callback.history["pointing_game"], float)}


def task_metrics(data: dict) -> dict:
    """Grad-CAM's maps of the small CNN through a PyDataset run, the model metrics and ``kg.evaluate``."""
    import keras_gradcam as kg

    model = backend_cnn()
    model.load_weights(str(data["weights"]))
    x = data["x"]

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return x[3 * i : 3 * i + 3]

    try:
        run = kg.explain_dataset(model, Batches(), out=str(data["run_dir"]), method="gradcam", layer="c2", verbose=0)
        exp = kg.explain(model, x, method="gradcam", layer="c2")
        table = kg.evaluate(model, x, methods=["gradcam"], layer="c2", metrics=["average_drop", "deletion_auc"])
        return {
            "run_heatmaps": np.asarray(run.heatmaps[:]),
            "average_drop": np.asarray(kg.metrics.average_drop(model, x, exp, reduction=None)),
            "deletion_auc": np.asarray(kg.metrics.deletion_auc(model, x, exp, reduction=None)),
            "evaluate": np.array([table[0]["average_drop"], table[0]["deletion_auc"]]),
        }
    except Exception as error:  # reported to the parent
        return {"error": np.array(f"{type(error).__name__}: {error}")}


def task_noise(data: dict) -> dict:
    """SS-CAM and Smooth Grad-CAM++ with noise on: maps at two batch sizes and two seeds, and the seam's draws."""
    import keras_gradcam as kg
    from keras_gradcam.core import backend as seam

    cnn, vit = backend_cnn(), tiny_vit()
    cnn.load_weights(str(data["weights"]))
    vit.load_weights(str(data["weights_vit"]))
    x = data["x"]
    result = {}
    # the small CNN's gradients at c2 do not depend on the input (a linear head after pooling), so Smooth
    # Grad-CAM++'s noise shows on the ViT's token layer only
    for name, model, layer, options in (
        ("sscam", cnn, "c2", {"n_samples": 3, "noise_std": 0.5, "verbose": 0}),
        ("smoothgradcam++", vit, "block0_norm1", {"n_samples": 4, "noise_level": 0.3}),
    ):
        for key, extra in (("whole", {}), ("single", {"batch_size": 1}), ("seed1", {"seed": 1})):
            exp = kg.explain(model, x, method=name, layer=layer, **options, **extra)
            result[f"{name}_{key}"] = np.asarray(exp.layer_heatmaps)
    result["draws"] = keras.ops.convert_to_numpy(seam.stateless_normals((4096,), 3, np.array([0, 1, 1], "int32")))
    result["draw"] = keras.ops.convert_to_numpy(seam.stateless_normal((4096,), (3, 1)))
    return result


def task_cli(data: dict) -> dict:
    """``keras-gradcam explain`` of a saved ``.keras`` model on PNG files, for each method of ``data["methods"]``:
    the ``heatmaps.npy`` and ``layer_heatmaps.npy`` it writes, or its exit code and standard error."""
    import contextlib
    import io

    from keras_gradcam import cli

    result = {}
    for method in [str(m) for m in data["methods"]]:
        out = os.path.join(str(data["out"]), method)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(["explain", str(data["model"]), *[str(p) for p in data["images"]], "--out", out,
                             "--method", method, "--layer", "c2", "--size", "12"])
        if code != 0:
            result[f"error_{method}"] = np.array(f"exit {code}: {err.getvalue()[-2000:]}")
            continue
        for name in ("heatmaps", "layer_heatmaps"):
            result[f"{name}_{method}"] = np.load(os.path.join(out, f"{name}.npy"))
    return result


# -- dense-prediction, token and embedding targets (task "targets") -----------------------------------
VOCAB, SEQ = 7, 4
BOXES = np.array([[0, 0, 4, 4], [4, 4, 8, 8]], np.float32)


def seg_model() -> keras.Model:
    """(8, 8, 2) -> Conv2D "feat" (ReLU) -> 1x1 Conv2D "logits": a (8, 8, 3) segmentation map."""
    inp = keras.Input((8, 8, 2), name="image")
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="feat")(inp)
    return keras.Model(inp, keras.layers.Conv2D(3, 1, name="logits")(h), name="seg")


def token_model() -> keras.Model:
    """Images and token ids -> {"lm": (B, T, VOCAB) logits, "emb": (B, 6) image embedding}.

    The image's conv "c1" -> pooling -> Dense "emb" is added to every token's embedding, then a
    Dense "lm" gives the logits; the sequence axis is not static (``Input((None,))``).
    """
    image = keras.Input((8, 8, 2), name="image")
    ids = keras.Input((None,), dtype="int32", name="token_ids")
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(image)
    emb = keras.layers.Dense(6, name="emb")(keras.layers.GlobalAveragePooling2D(name="gap")(h))
    words = keras.layers.Embedding(VOCAB, 6, name="words")(ids)
    mixed = keras.layers.Lambda(lambda t: keras.ops.tanh(t[0] + keras.ops.expand_dims(t[1], 1)), name="mix")([words, emb])
    return keras.Model({"image": image, "token_ids": ids}, {"lm": keras.layers.Dense(VOCAB, name="lm")(mixed), "emb": emb})


def box_model() -> keras.Model:
    """(4, 4, 1) -> Conv2D "feat" -> pooling -> Dense -> (B, 2 boxes, 2 classes) logits, with the fixed boxes :data:`BOXES`."""
    inp = keras.Input((4, 4, 1), name="image")
    feat = keras.layers.Conv2D(2, 1, activation="relu", name="feat")(inp)
    dense = keras.layers.Dense(4, name="dense", bias_initializer=keras.initializers.Constant([5.0, -5.0, -5.0, 5.0]))
    logits = keras.layers.Reshape((2, 2), name="logits")(dense(keras.layers.GlobalAveragePooling2D(name="gap")(feat)))
    boxes = keras.layers.Lambda(lambda v: keras.ops.zeros_like(v[:, :, :1]) + keras.ops.convert_to_tensor(BOXES), name="boxes")(logits)
    return keras.Model(inp, (boxes, logits), name="boxes")


TARGET_MODELS = {"seg": (seg_model, "feat"), "token": (token_model, "c1"), "box": (box_model, "feat")}


def target_cases(kg) -> dict:
    """Every target case: id -> (model kind, target[, method]); the masks and ids are fixed here for both processes.

    Grad-CAM unless a method is named: Score-CAM and Ablation-CAM run the target in each of their
    passes (per-image rows tiled, ``BoxTarget``'s warning from inside ``map_sequential``)."""
    mask = np.zeros((8, 8), np.float32)
    mask[2:6, 1:5] = 1.0
    masks = (np.random.default_rng(4).random((3, 8, 8)) < 0.5).astype(np.float32)
    return {
        "seg_mask": ("seg", kg.SegmentationTarget(1, mask=mask)),
        "seg_per_image": ("seg", kg.SegmentationTarget(2, mask=masks)),
        "seg_predicted": ("seg", kg.SegmentationTarget(0)),
        "token": ("token", kg.TokenTarget([3, 5, 1], [2, -1, 0], output="lm")),
        "token_log_prob": ("token", kg.TokenTarget(4, 1, score="log_prob", output="lm")),
        "sequence": ("token", kg.SequenceTarget([[1, 2, 3], [4, 5, 6], [0, 2, 4]], [[0, 1, -2]] * 3,
                                                mask=[[1, 1, 0], [1, 1, 1], [0, 1, 1]], output="lm")),
        "similarity": ("token", kg.SimilarityTarget([0.5, -1.0, 0.25, 2.0, 0.0, 1.0], output="emb")),
        "box": ("box", kg.BoxTarget([[0, 0, 4, 4], [4, 4, 8, 8], [0, 0, 4, 4]], category=[0, 1, 0])),
        "box_unmatched": ("box", kg.BoxTarget([0, 0, 4, 4], category=[0, 1, 0], add_iou=True)),
        "seg_per_image_scorecam": ("seg", kg.SegmentationTarget(2, mask=masks), "scorecam"),
        "box_unmatched_ablationcam": ("box", kg.BoxTarget([0, 0, 4, 4], category=[0, 1, 0], add_iou=True), "ablationcam"),
        "bad_token": ("token", kg.TokenTarget(VOCAB, 0, output="lm")),
        "bad_position": ("token", kg.TokenTarget(3, SEQ, output="lm")),
        "bad_position_ablationcam": ("token", kg.TokenTarget(3, SEQ, output="lm"), "ablationcam"),
        "bad_sequence": ("token", kg.SequenceTarget([1, VOCAB + 2], [0, -SEQ - 1], output="lm")),
    }


def target_inputs(kind: str, data: dict):
    return {"image": data["x"], "token_ids": data["token_ids"]} if kind == "token" else data[f"x_{kind}"]


def task_targets(data: dict) -> dict:
    """``kg.explain`` (Grad-CAM, ``relu=False``) with each case of :func:`target_cases`: maps, scores, the
    warnings it gave, or the error it raised; and a ``BoxTarget`` called on hand-made detections."""
    import keras_gradcam as kg

    models, result = {}, {}
    for case, (kind, target, *method) in target_cases(kg).items():
        if kind not in models:
            models[kind] = TARGET_MODELS[kind][0]()
            models[kind].load_weights(str(data[f"weights_{kind}"]))
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            try:
                exp = kg.explain(models[kind], target_inputs(kind, data), method=(method or ["gradcam"])[0], layer=TARGET_MODELS[kind][1],
                                 relu=False, targets=target,
                                 **({"verbose": 0} if method else {}))
            except Exception as error:  # reported to the parent, which compares it with TensorFlow's
                result[f"error_{case}"] = np.array(f"{type(error).__name__}: {error}")
                continue
        result[f"layer_heatmaps_{case}"] = np.asarray(exp.layer_heatmaps)
        result[f"scores_{case}"] = np.asarray(exp.scores)
        result[f"warnings_{case}"] = np.array([str(w.message) for w in seen if "no detection" in str(w.message)] or [""])
    # the callable form, outside an explainer: box 0 is class 1 with IoU 1 in sample 0, box 1 (IoU 0.75) in sample 1
    boxes = keras.ops.convert_to_tensor(np.array([[[0, 0, 4, 4], [0, 0, 4, 3], [10, 10, 14, 14]]] * 2, np.float32))
    logits = keras.ops.convert_to_tensor(np.array([[[0.1, 2.0], [3.0, 1.0], [0.0, 5.0]], [[2.0, 0.1], [0.5, 1.5], [0.0, 5.0]]], np.float32))
    result["direct_box"] = keras.ops.convert_to_numpy(kg.BoxTarget([0, 0, 4, 4], category=1)((boxes, logits)))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        result["direct_box_strict"] = keras.ops.convert_to_numpy(kg.BoxTarget([0, 0, 4, 4], category=1, iou_threshold=0.8)((boxes, logits)))
    result["direct_box_warnings"] = np.array([str(w.message) for w in seen if "no detection" in str(w.message)] or [""])
    try:
        kg.TokenTarget(VOCAB, 0)(keras.ops.zeros((2, SEQ, VOCAB)))
    except Exception as error:
        result["direct_token_error"] = np.array(f"{type(error).__name__}: {error}")
    return result


def task_threads(data: dict) -> dict:
    """One explainer of each kind called from two threads at once, three times each: the maps of each call,
    and the ones of the same calls made one after the other."""
    from concurrent.futures import ThreadPoolExecutor

    import keras_gradcam as kg

    model = backend_cnn()
    model.load_weights(str(data["weights"]))
    x = data["x"]
    batches = [x, -x, 2 * x, x[::-1], -2 * x, x * 0.5]
    result = {}
    for method in ("gradcam++", "scorecam"):
        explainer = kg.get_method(method)(model, layer="c2", **({"verbose": 0} if method == "scorecam" else {}))
        with ThreadPoolExecutor(2) as pool:
            together = [f.result().layer_heatmaps for f in [pool.submit(explainer, b) for b in batches]]
        alone = [explainer(b).layer_heatmaps for b in batches]
        result[f"together_{method}"], result[f"alone_{method}"] = np.stack(together), np.stack(alone)
    return result


def task_traces(data: dict) -> dict:
    """How many times the model's Python runs (its layer ``c2``'s ``call``) over calls of one explainer:
    after the first call, after four more of the same shape, and after one of another batch size."""
    import keras_gradcam as kg

    model = backend_cnn()
    model.load_weights(str(data["weights"]))
    layer = model.get_layer("c2")
    runs = [0]
    plain = layer.call

    def counting(*args, **kwargs):
        runs[0] += 1
        return plain(*args, **kwargs)

    layer.call = counting  # a test model: the count of Python runs of the layer (traces, or eager calls)
    x = data["x"]
    counts = []
    for method in ("gradcam", "scorecam"):
        explainer = kg.get_method(method)(model, layer="c2", **({"verbose": 0} if method == "scorecam" else {}))
        runs[0] = 0
        explainer(x)
        first = runs[0]
        for k in range(4):
            explainer(x * (k + 2))
        same = runs[0]
        explainer(x[:2])
        counts.append([first, same, runs[0]])
    return {"counts": np.array(counts)}


def nested_cnn() -> keras.Model:
    """:func:`backend_cnn`'s layers with the convolutions in a Functional sub-model "backbone"."""
    inp = keras.Input((8, 8, 2), name="image")
    h = keras.layers.Conv2D(3, 3, padding="same", name="c1")(inp)
    h = keras.layers.ReLU(name="r1")(h)
    h = keras.layers.Conv2D(4, 3, activation="relu", name="c2")(h)
    backbone = keras.Model(inp, h, name="backbone")
    outer = keras.Input((8, 8, 2), name="image")
    h = keras.layers.GlobalAveragePooling2D(name="gap")(backbone(outer))
    return keras.Model(outer, keras.layers.Dense(3, name="head")(h), name="nested_cnn")


def tiny_vit() -> keras.Model:
    """The suite's functional ViT at 8x8 pixels, 2x2 patches (a 4x4 token grid and a class token)."""
    from models import vit_model

    return vit_model(image=8, patch=2, channels=2, dim=8, depth=1, heads=2, mlp=8, classes=3, seed=0)


def guided_cnn() -> keras.Model:
    """(8, 8, 2) -> Conv2D "c1" (ReLU) -> BatchNormalization -> Conv2D "c2" (ReLU) -> GAP -> Dense softmax (3)."""
    inp = keras.Input((8, 8, 2))
    h = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="c1")(inp)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c2")(h)
    out = keras.layers.Dense(3, activation="softmax", name="head")(keras.layers.GlobalAveragePooling2D()(h))
    return keras.Model(inp, out, name="guided_cnn")


GUIDED_OPTIONS = {"default": {}, "logit_hint": {"score": "logit", "loss": "hint"},
                  "input_gradient": {"method": "input_gradient", "counterfactual": False}}


def guided_training_run(kg, data: dict) -> dict:
    """GuidedTraining's terms of one batch (per option set) and its model's weights after ``fit`` (2 epochs of SGD).

    Run here under the child's backend and by the parent on TensorFlow, from the same weights file.
    """
    x, y, masks = data["x"], data["y"], data["masks"]
    model = guided_cnn()
    model.load_weights(str(data["weights"]))
    out = {}
    for key, options in GUIDED_OPTIONS.items():
        guided = kg.GuidedTraining(model, layer="c2", **options)
        y_pred, align = guided.forward(x, y, masks)
        out[f"align_{key}"] = keras.ops.convert_to_numpy(align)
        out[f"y_pred_{key}"] = keras.ops.convert_to_numpy(y_pred)
        if guided.counterfactual:
            out[f"counterfactual_{key}"] = keras.ops.convert_to_numpy(guided.counterfactual_loss(x, y, masks))

    class Batches(keras.utils.PyDataset):
        def __init__(self, scale=1.0):
            super().__init__()
            self.scale = scale

        def __len__(self):
            return 1

        def __getitem__(self, i):
            return x, y, masks * self.scale

    guided = kg.GuidedTraining(model, layer="c2")
    guided.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    before = model.get_weights()
    try:  # 0/255 masks: a ValueError from the first step, and the model as it was (JAX empties it for the step)
        guided.fit(Batches(255.0), epochs=1, verbose=0)
    except ValueError as error:
        out["bad_masks"] = np.array(str(error))
    out["unchanged_after_error"] = np.array(all(np.array_equal(a, b) for a, b in zip(before, model.get_weights())))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # progress_warning after 2 epochs
        history = guided.fit(Batches(), epochs=2, verbose=0).history
    for key in ("loss", "alignment_loss", "counterfactual_loss", "evidence_inside"):
        out[f"history_{key}"] = np.asarray(history[key], float)
    for i, w in enumerate(model.get_weights()):
        out[f"weight_{i}"] = w
    return out


def task_guided_training(data: dict) -> dict:
    """``GuidedTraining`` on this backend (:func:`guided_training_run`), or the error it raised."""
    import keras_gradcam as kg

    try:
        return guided_training_run(kg, data)
    except Exception as error:  # reported to the parent (PyTorch: NotImplementedError naming it)
        return {"error": np.array(f"{type(error).__name__}: {error}")}


# a KerasHub model from a tiny config (never a preset): 16x16 images in 4x4 patches (a 4x4 token grid), the
# transformer blocks inside one subclassed encoder layer, whose inside the probe of keras_gradcam/core/sublayers.py
# finds; built alike here and in the parent, so one weights file fits both. (CLIP, SigLIP, DeiT, DINOv2, Swin and
# MiT were measured by hand, docs/backends.md: building each costs the JAX child seconds of XLA compiles.)
HUB_SIZE = 16


def hub_vit() -> keras.Model:
    """A KerasHub ``ViTImageClassifier`` (class-token head) on 16x16 images, two transformer blocks."""
    import keras_hub

    backbone = keras_hub.models.ViTBackbone(image_shape=(HUB_SIZE, HUB_SIZE, 3), patch_size=4, num_layers=2, num_heads=2,
                                            hidden_dim=8, mlp_dim=16, name="vit_backbone")
    return keras_hub.models.ViTImageClassifier(backbone=backbone, num_classes=3)


HUB_MODELS = {"vit": hub_vit}
# the layer None: the library's default (the input of the last attention, inside the encoder layer)
HUB_CASES = [
    {"id": "vit", "model": "vit", "method": "gradcam", "layer": None},
    {"id": "vit_inner", "model": "vit", "method": "gradcam++", "layer": "vit_backbone/vit_encoder/transformer_block_1/ln_2"},
]


def hub_explain(model, case: dict, data: dict):
    """``kg.explain`` of one of :data:`HUB_CASES` (in the child and, for the reference, on TensorFlow)."""
    import keras_gradcam as kg

    return kg.explain(model, data["hub_images"], method=case["method"], layer=case["layer"], relu=False)


def task_hub(data: dict) -> dict:
    """Each of :data:`HUB_CASES` on KerasHub models loaded from the parent's weights: maps, scores, classes and
    the layer explained, or the error (``error_<id>``); ``missing`` when keras_hub is not installed here."""
    import importlib.util

    if importlib.util.find_spec("keras_hub") is None:
        return {"missing": np.array("keras_hub is not installed in this environment")}
    models, result = {}, {}
    for case in HUB_CASES:
        if case["model"] not in models:
            models[case["model"]] = HUB_MODELS[case["model"]]()
            models[case["model"]].load_weights(str(data[f"weights_{case['model']}"]))
        model = models[case["model"]]
        before = [w.copy() for w in model.get_weights()]
        try:
            exp = hub_explain(model, case, data)
        except Exception as error:  # reported to the parent
            result[f"error_{case['id']}"] = np.array(f"{type(error).__name__}: {error}")
        else:
            for field in ("layer_heatmaps", "heatmaps", "scores", "targets"):
                if getattr(exp, field) is not None:
                    result[f"{field}_{case['id']}"] = np.asarray(getattr(exp, field))
            result[f"layer_{case['id']}"] = np.array(exp.layer)
        result[f"unchanged_{case['id']}"] = np.array(all(np.array_equal(a, b) for a, b in zip(before, model.get_weights())))
    return result


MODELS = {"cnn": backend_cnn, "nested": nested_cnn, "vit": tiny_vit}

TASKS = {"gradients": task_gradients, "guided_relu": task_guided_relu, "guided_check": task_guided_check, "explain": task_explain,
         "callback": task_callback, "metrics": task_metrics, "noise": task_noise, "cli": task_cli, "threads": task_threads,
         "traces": task_traces, "targets": task_targets, "hub": task_hub, "guided_training": task_guided_training}


def main(argv) -> int:
    """Run every ``[task, IN.npz, OUT.npz]`` of the JSON list in ``argv[1]``, in this one process."""
    warnings.simplefilter("ignore", DeprecationWarning)
    with open(argv[1]) as f:
        jobs = json.load(f)
    for task, src, dst in jobs:
        with np.load(src, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
        result = TASKS[task](data)
        result["backend"] = np.array(keras.backend.backend())
        np.savez(dst, **result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
