"""Speed of Grad-CAM, Grad-CAM++ and Score-CAM on this process's Keras backend, as a ratio to its own forward pass.

ResNet50 (``weights=None``), layer ``conv5_block3_out``, CPU. For each method: the median over
``--repeats`` alternating rounds of ``time(method) / time(model.predict_on_batch)`` on the same
numpy batch, after a warm-up call of each (tracing / jitting). The backend is the one Keras
runs (``KERAS_BACKEND``); ``--backends`` runs this script once per backend in child processes
and prints one table. Usage::

    KERAS_BACKEND=jax python benchmarks/bench_backends.py [--size 224] [--batch 4] [--repeats 5]
    python benchmarks/bench_backends.py --backends tensorflow,jax,torch --torch-python .venv-torch/bin/python

Score-CAM masks the input with ``--scorecam-channels`` channels (16; ResNet50's layer has 2048),
so its ratio is about that many forward passes of the batch. ``--seam`` times the backend seam alone (``layer_gradients`` and Grad-CAM's weighted sum written
here, no engine), and ``--torch-compile`` adds, on PyTorch, the same seam body under
``torch.compile`` (what docs/backends.md reports on whether compiling pays there).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from timing import paired  # noqa: E402

METHODS = ["gradcam", "gradcam++", "scorecam"]


def seam_gradcam(model, layer_name: str):
    """Grad-CAM written on the seam alone: ``layer_gradients`` at the layer, then sum_k mean(g_k) A_k."""
    import keras

    from keras_gradcam.core import backend
    from keras_gradcam.core.patching import thread_patches

    layer = model.get_layer(layer_name)
    current = {}

    def recording_call(*args, **kwargs):
        return current["hook"](0, layer_call(*args, **kwargs))

    layer_call = layer.call

    def body(x):
        def forward(hook, inputs=x):
            current["hook"] = hook
            logits = model(inputs, training=False)
            return keras.ops.sum(keras.ops.max(logits, axis=-1)), logits

        _, acts, grads, _ = backend.layer_gradients(forward, x, 1)
        weights = keras.ops.mean(grads[0], axis=(1, 2), keepdims=True)
        return keras.ops.relu(keras.ops.sum(weights * acts[0], axis=-1))

    def contexts():
        return [thread_patches([(layer, "call", recording_call)])]

    return body, contexts


def run_here(args) -> list[dict]:
    import keras

    import keras_gradcam as kg

    name = keras.backend.backend()
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, input_shape=(args.size, args.size, 3), classifier_activation=None)
    x = np.random.default_rng(0).uniform(-1, 1, (args.batch, args.size, args.size, 3)).astype("float32")

    def forward():
        keras.ops.convert_to_numpy(model.predict_on_batch(x))

    rows = []
    if args.seam:
        from keras_gradcam.core import backend

        body, contexts = seam_gradcam(model, args.layer)
        spec = [keras.KerasTensor((None, args.size, args.size, 3), "float32")]
        seam_fn = backend.compile(body, spec, contexts)
        setups = [("seam gradcam", lambda: keras.ops.convert_to_numpy(seam_fn(x)))]
        if args.torch_compile and name == "torch":
            import torch

            compiled = torch.compile(lambda v: _within(body, contexts)(v))
            xt = keras.ops.convert_to_tensor(x)
            setups.append(("seam gradcam, torch.compile", lambda: compiled(xt).detach().cpu().numpy()))
    else:
        setups = []
        for method in args.methods.split(","):
            options = {"max_channels": args.scorecam_channels, "verbose": 0} if method == "scorecam" else {}
            cam = kg.get_method(method)(model, args.layer, batch_size=args.batch, **options)
            setups.append((method, lambda cam=cam: cam(x)))
    for label, run in setups:
        try:
            t, ratio = paired(run, forward, args.repeats)
        except Exception as error:  # a method this backend cannot run yet: say so in its row
            rows.append({"backend": name, "method": label, "error": f"{type(error).__name__}: {str(error)[:120]}"})
        else:
            rows.append({"backend": name, "method": label, "ms": 1000 * t, "ratio": ratio})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _within(body, contexts):
    import contextlib

    def run(*a):
        with contextlib.ExitStack() as stack:
            for ctx in contexts():
                stack.enter_context(ctx)
            return body(*a)

    return run


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--layer", default="conv5_block3_out")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--scorecam-channels", type=int, default=16, help="Score-CAM's max_channels (2048 masked passes per image otherwise)")
    p.add_argument("--seam", action="store_true", help="time the seam alone (no engine)")
    p.add_argument("--torch-compile", action="store_true", help="with --seam on torch: also under torch.compile")
    p.add_argument("--backends", default=None, help="comma-separated backends, each run in a child process")
    p.add_argument("--torch-python", default=sys.executable, help="the Python with torch installed")
    args = p.parse_args(argv)
    if args.backends is None:
        run_here(args)
        return
    forwarded = [a for a in (argv if argv is not None else sys.argv[1:])]
    skip = {"--backends", "--torch-python"}
    child_args, it = [], iter(forwarded)
    for a in it:
        if a.split("=")[0] in skip:
            if "=" not in a:
                next(it, None)
            continue
        child_args.append(a)
    rows = []
    for backend in args.backends.split(","):
        python = args.torch_python if backend == "torch" else sys.executable
        # this checkout's package first, also for a Python whose environment has another one installed
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
        proc = subprocess.run([python, __file__, *child_args], env=env, capture_output=True, text=True)
        if proc.returncode:
            print(f"{backend}: failed\n{proc.stderr[-3000:]}", file=sys.stderr)
            continue
        rows += [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    print(f"ResNet50 {args.size}x{args.size}, batch {args.batch}, layer {args.layer}, CPU, median of {args.repeats} rounds")
    print("| backend | method | ms | time / predict_on_batch |")
    print("|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['backend']} | {r['method']} | fails: {r['error']} | |")
        else:
            print(f"| {r['backend']} | {r['method']} | {r['ms']:.0f} | {r['ratio']:.2f} |")


if __name__ == "__main__":
    main()
