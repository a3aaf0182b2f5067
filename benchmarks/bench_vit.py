"""Speed of Grad-CAM and Grad-CAM++ on a vision transformer, as a ratio to its plain compiled forward pass.

ViT-B/16 (patch 16, 12 blocks, hidden 768, 12 heads, MLP 3072, a class token, 1000 classes,
random weights), 224x224, batch 8, CPU, built functionally from Keras layers
(``tests/models.py``, ``vit_model``; this benchmark was written before the explainers could
reach the blocks inside KerasHub's ``ViTBackbone``, and does not time that model). The
explainers use their default layer
(the input of the last attention, ``block11_norm1``: a ``(batch, 197, 768)`` token layer explained
on its 14x14 patch grid). Each prints images/s and the median over ``--repeats`` rounds of
``time(explainer) / time(plain compiled forward pass)``, the two timed in alternation in each
round (target <= 1.05), after a warm-up call that traces the compiled functions.

A third timing in each round, a plain compiled forward pass with a ``tf.GradientTape`` back to the
same layer (the top logit's gradient, what any Grad-CAM needs), splits the ratio in two: the
backward pass that the method's maths needs, and what the explainer adds to it (the last
column but one, ``time / plain tape``). The last column is the same ratio in CPU time (all
threads of the process), which moves less than wall-clock time when other jobs share the CPU. On a ViT the backward to the input of the last attention runs
through the whole last block (its MLP and attention, dense over all 197 tokens even though the
class-token head gives only the class token's row a gradient), about 1/12 of a forward pass.
Usage::

    python benchmarks/bench_vit.py [--size 224] [--batch 8] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from models import vit_model  # noqa: E402
from timing import timed_cpu  # noqa: E402

import keras_gradcam as kg  # noqa: E402

METHODS = ["gradcam", "gradcam++"]


def rounds(fns: dict, repeats: int) -> tuple[dict, dict]:
    """Each callable timed once per round, in alternation, ``repeats`` rounds: name -> seconds, wall and CPU."""
    for fn in fns.values():
        fn()  # warm-up: tracing
    wall, cpu = {name: [] for name in fns}, {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            w, c = timed_cpu(fn)
            wall[name].append(w)
            cpu[name].append(c)
    return wall, cpu


def ratio(times: dict, name: str, baseline: str) -> float:
    """The median over rounds of ``time(name) / time(baseline)`` (timed in the same round)."""
    return statistics.median(t / b for t, b in zip(times[name], times[baseline]))


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--patch", type=int, default=16)
    p.add_argument("--depth", type=int, default=12)
    args = p.parse_args(argv)

    model = vit_model(image=args.size, patch=args.patch, dim=768, depth=args.depth, heads=12, mlp=3072, classes=1000)
    x = np.random.default_rng(0).uniform(-1, 1, (args.batch, args.size, args.size, 3)).astype("float32")
    forward = tf.function(lambda v: model(v, training=False))
    cams = {name: kg.get_method(name)(model, batch_size=args.batch) for name in METHODS}
    layer = cams[METHODS[0]].layer
    grad_model = keras.Model(model.inputs, [model.get_layer(layer).output, model.output])

    @tf.function
    def forward_backward(v):
        with tf.GradientTape() as tape:
            acts, logits = grad_model(v, training=False)
            tape.watch(acts)
            total = tf.reduce_sum(tf.reduce_max(logits, axis=-1))
        return tape.gradient(total, acts)

    fns = {"forward": lambda: forward(x).numpy(), "tape": lambda: forward_backward(x).numpy()}
    fns.update({name: (lambda cam=cam: cam(x)) for name, cam in cams.items()})
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*maps are all zero", category=RuntimeWarning)  # random weights
        times, cpu = rounds(fns, args.repeats)
    t_fwd = statistics.median(times["forward"])
    grid = args.size // args.patch
    print(f"ViT-B/{args.patch} (functional, random weights) {args.size}x{args.size}, batch {args.batch}, "
          f"{grid * grid + 1} tokens, layer {layer}, CPU, median of {args.repeats} rounds")
    print(f"plain compiled forward pass: {t_fwd * 1000:.0f} ms ({args.batch / t_fwd:.1f} img/s); "
          f"with a plain tape back to the layer: {ratio(times, 'tape', 'forward'):.3f} x the forward pass "
          f"({ratio(cpu, 'tape', 'forward'):.3f} x in CPU time)")
    print("| method | img/s | time / forward | target | time / plain tape | CPU time / forward |")
    print("|---|---|---|---|---|---|")
    rows = []
    for name in METHODS:
        t = statistics.median(times[name])
        row = {"method": name, "layer": layer, "img_per_s": args.batch / t, "ratio": ratio(times, name, "forward"),
               "ratio_tape": ratio(times, name, "tape"), "cpu_ratio": ratio(cpu, name, "forward"), "target": 1.05}
        rows.append(row)
        print(f"| {name} | {row['img_per_s']:.2f} | {row['ratio']:.3f} | <= 1.05 | {row['ratio_tape']:.3f} "
              f"| {row['cpu_ratio']:.3f} |", flush=True)
    return rows


if __name__ == "__main__":
    main()
