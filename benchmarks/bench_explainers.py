"""Speed of every explainer as a ratio to plain compiled passes of the same model, in one run.

ResNet50 (``weights=None``), 224x224, batch 16, CPU, layer ``conv5_block3_out``. For each method
it prints images/s and the median time divided by:

* the plain compiled forward pass of the same numpy batch (one-pass methods; target <= 1.05x), and
* ``n`` plain compiled forward+backward passes, the backward going from the top logits to the
  same layer (Smooth Grad-CAM++ with ``n`` samples, Integrated Grad-CAM with ``n`` steps;
  target <= 1.15x), and
* Grad-CAM without the option, for the shared options ``gradcam+aug_smooth`` (six copies of each
  image, each a forward and a backward pass, and one clean forward pass for the targets: about 7x) and ``gradcam+eigen_smooth`` (one SVD per image).

Machines are noisy: the baseline and the method are timed in alternation, round after round,
and the figure is the median over ``--repeats`` rounds of the per-round ratio (after a warm-up
call that traces the compiled functions). Usage::

    python benchmarks/bench_explainers.py [--size 224] [--batch 16] [--repeats 11] [--samples 16]
                                          [--only gradcam+aug_smooth,gradcam+eigen_smooth]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from timing import paired  # noqa: E402

import keras_gradcam as kg  # noqa: E402

ONE_PASS = ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "cam", "gradcam-elementwise", "eigengradcam"]


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=11, help="rounds for one-pass methods (a third of it, >= 3, for the others)")
    p.add_argument("--samples", type=int, default=16, help="n for Smooth Grad-CAM++ and steps for Integrated Grad-CAM")
    p.add_argument("--layer", default="conv5_block3_out")
    p.add_argument("--only", default=None, help="comma-separated rows to run (e.g. gradcam+aug_smooth); default: all")
    args = p.parse_args(argv)

    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, input_shape=(args.size, args.size, 3), classifier_activation=None)
    x = np.random.default_rng(0).uniform(-1, 1, (args.batch, args.size, args.size, 3)).astype("float32")

    forward = tf.function(lambda v: model(v, training=False))
    grad_model = keras.Model(model.inputs, [model.get_layer(args.layer).output, model.output])

    @tf.function
    def forward_backward(v):
        with tf.GradientTape() as tape:
            acts, logits = grad_model(v, training=False)
            tape.watch(acts)
            total = tf.reduce_sum(tf.reduce_max(logits, axis=-1))
        return tape.gradient(total, acts)

    def run_forward():
        forward(x).numpy()

    def run_forward_backward(n):
        def run():
            for _ in range(n):
                forward_backward(x).numpy()

        return run

    t_fwd, _ = paired(run_forward, run_forward, args.repeats)
    print(f"ResNet50 {args.size}x{args.size}, batch {args.batch}, layer {args.layer}, CPU, "
          f"median of {args.repeats} rounds ({max(3, args.repeats // 3)} for the multi-pass methods)")
    print(f"plain compiled forward pass: {t_fwd * 1000:.0f} ms ({args.batch / t_fwd:.1f} img/s)")
    print("| method | img/s | time / baseline | baseline | target |")
    print("|---|---|---|---|---|")
    rows = []
    n = args.samples
    few = max(3, args.repeats // 3)
    plain_gradcam = kg.GradCAM(model, args.layer, batch_size=args.batch)
    setups = [(m, {}, run_forward, "1 forward", 1.05, args.repeats) for m in ONE_PASS] + [
        ("smoothgradcam++", {"n_samples": n}, run_forward_backward(n), f"{n} forward+backward", 1.15, few),
        ("integrated-gradcam", {"steps": n}, run_forward_backward(n), f"{n} forward+backward", 1.15, few),
        ("gradcam+aug_smooth", {"aug_smooth": True}, lambda: plain_gradcam(x), "gradcam", 7.5, few),
        ("gradcam+eigen_smooth", {"eigen_smooth": True}, lambda: plain_gradcam(x), "gradcam", 1.5, args.repeats),
    ]
    only = None if args.only is None else set(args.only.split(","))
    for name, options, baseline, base_name, target, repeats in setups:
        if only is not None and name not in only:
            continue
        cam = kg.get_method(name.removesuffix("+aug_smooth").removesuffix("+eigen_smooth"))(model, args.layer, batch_size=args.batch, **options)
        t, ratio = paired(lambda cam=cam: cam(x), baseline, repeats)
        rows.append({"method": name, "img_per_s": args.batch / t, "ratio": ratio, "baseline": base_name, "target": target})
        print(f"| {name} | {args.batch / t:.1f} | {ratio:.3f} | {base_name} | <= {target} |", flush=True)
    return rows


if __name__ == "__main__":
    main()
