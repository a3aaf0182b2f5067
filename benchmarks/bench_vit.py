"""Speed of Grad-CAM and Grad-CAM++ on a vision transformer, as a ratio to its plain compiled forward pass.

ViT-B/16 (patch 16, 12 blocks, hidden 768, 12 heads, MLP 3072, a class token, 1000 classes,
random weights), 224x224, batch 8, CPU, built functionally from Keras layers
(``tests/models.py``, ``vit_model``): KerasHub's ``ViTBackbone`` keeps its blocks inside
subclassed layers, which the explainers cannot reach yet. The explainers use their default layer
(the input of the last attention, ``block11_norm1``: a ``(batch, 197, 768)`` token layer explained
on its 14x14 patch grid). Each prints images/s and the median over ``--repeats`` rounds of
``time(explainer) / time(plain compiled forward pass)``, the two timed in alternation in each
round (target <= 1.05), after a warm-up call that traces the compiled functions. Usage::

    python benchmarks/bench_vit.py [--size 224] [--batch 8] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from models import vit_model  # noqa: E402

import keras_gradcam as kg  # noqa: E402

METHODS = ["gradcam", "gradcam++"]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def paired(fn, baseline, repeats: int) -> tuple[float, float]:
    """Median time of ``fn`` and median of ``time(fn) / time(baseline)`` over alternating rounds."""
    fn(), baseline()  # warm-up: tracing
    times, ratios = [], []
    for _ in range(repeats):
        b = timed(baseline)
        t = timed(fn)
        times.append(t)
        ratios.append(t / b)
    return statistics.median(times), statistics.median(ratios)


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

    def run_forward():
        forward(x).numpy()

    t_fwd, _ = paired(run_forward, run_forward, args.repeats)
    grid = args.size // args.patch
    print(f"ViT-B/{args.patch} (functional, random weights) {args.size}x{args.size}, batch {args.batch}, "
          f"{grid * grid + 1} tokens, CPU, median of {args.repeats} rounds")
    print(f"plain compiled forward pass: {t_fwd * 1000:.0f} ms ({args.batch / t_fwd:.1f} img/s)")
    print("| method | layer | img/s | time / forward | target |")
    print("|---|---|---|---|---|")
    rows = []
    for name in METHODS:
        cam = kg.get_method(name)(model, batch_size=args.batch)
        t, ratio = paired(lambda cam=cam: cam(x), run_forward, args.repeats)
        layer = cam.layer
        rows.append({"method": name, "layer": layer, "img_per_s": args.batch / t, "ratio": ratio, "target": 1.05})
        print(f"| {name} | {layer} | {args.batch / t:.2f} | {ratio:.3f} | <= 1.05 |", flush=True)
    return rows


if __name__ == "__main__":
    main()
