"""Speed of Score-CAM (and Ablation-CAM) as a ratio to K plain compiled forward passes of the batch.

Score-CAM must run every one of the ``n`` images once per channel of the layer, so its floor is
``K`` forward passes of ``n`` images (``K`` = channels). This script times Score-CAM on a batch of
``n`` images with ``batch_size=n`` (so every masked pass also holds ``n`` images) and divides by
the time of ``K`` calls of the compiled model on the batch. Target: <= 1.1x.

The model is a small VGG-like network (``weights=None``; four conv blocks, 96x96 input, layer
``block4_conv`` with 128 channels at 12x12): ResNet50's 2048 channels would take minutes per
figure on a CPU. Ablation-CAM is reported against the same floor: by default it runs only the
sub-network after the layer (``head_only``), far below it; with ``head_only=False`` it runs the
whole model with the channel zeroed, like Score-CAM. SS-CAM (``n`` noisy copies of each mask)
and IS-CAM (``n`` points on each mask's path) run ``n * K`` masked passes, and are divided by
``n * K`` forwards (``--n 4`` by default, to keep the run short; their own defaults are 35 and 10).
After a warm-up call that traces the
compiled functions, each of ``--repeats`` rounds times the K forwards and every method back to
back; the ratio is the median of the per-round ratios (robust to load on a shared machine). The
ratio of process CPU times is printed too: on a loaded machine it is steadier than wall time. Usage::

    python benchmarks/bench_scorecam.py [--size 96] [--batch 8] [--channels 128] [--repeats 5] [--n 4]
        [--methods scorecam sscam ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from timing import timed_cpu  # noqa: E402

from keras_gradcam.methods.ablationcam import AblationCAM  # noqa: E402
from keras_gradcam.methods.iscam import ISCAM  # noqa: E402
from keras_gradcam.methods.scorecam import ScoreCAM  # noqa: E402
from keras_gradcam.methods.sscam import SSCAM  # noqa: E402


def vgg_like(size: int, channels: int, classes: int = 10) -> keras.Model:
    inp = keras.Input((size, size, 3))
    h = inp
    widths = [channels // 4, channels // 2, channels // 2, channels]
    for i, width in enumerate(widths, start=1):
        h = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name=f"block{i}_conv")(h)
        if i < len(widths):
            h = keras.layers.MaxPooling2D(name=f"block{i}_pool")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    h = keras.layers.Dense(64, activation="relu")(h)
    return keras.Model(inp, keras.layers.Dense(classes)(h), name="vgg_like")


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--channels", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--n", type=int, default=4, help="noisy copies (SS-CAM) and path points (IS-CAM) per mask")
    p.add_argument("--methods", nargs="*", default=None, help="labels to run (prefix match); default all")
    args = p.parse_args(argv)

    keras.utils.set_random_seed(0)
    model = vgg_like(args.size, args.channels)
    layer = "block4_conv"
    k = args.channels
    x = np.random.default_rng(0).uniform(-1, 1, (args.batch, args.size, args.size, 3)).astype("float32")
    xt = tf.constant(x)
    forward = tf.function(lambda v: model(v, training=False))

    def k_forwards():
        for _ in range(k):
            out = forward(xt)
        out.numpy()

    n = args.n
    # (label, class, options, target, masked passes per channel)
    setups = [
        ("scorecam", ScoreCAM, {}, 1.1, 1),
        ("scorecam max_channels=K/4", ScoreCAM, {"max_channels": k // 4}, None, 1),  # about a quarter
        ("ablationcam", AblationCAM, {}, 1.1, 1),
        ("ablationcam head_only=False", AblationCAM, {"head_only": False}, 1.1, 1),
        (f"sscam n_samples={n}", SSCAM, {"n_samples": n}, 1.1, n),
        (f"iscam n_steps={n}", ISCAM, {"n_steps": n}, 1.1, n),
    ]
    if args.methods:
        setups = [s for s in setups if any(s[0].startswith(m) for m in args.methods)]
    cams = [cls(model, layer, batch_size=args.batch, verbose=0, **options) for _, cls, options, _, _ in setups]
    k_forwards()  # warm-up: tracing
    for cam in cams:
        cam(x)
    # interleaved: each repeat times the floor and every method back to back, so that load changes on a
    # shared machine hit numerator and denominator alike; the figure is the median of per-repeat ratios
    floors, times = [], [[] for _ in setups]
    for _ in range(args.repeats):
        floors.append(timed_cpu(k_forwards))
        for cam, ts in zip(cams, times):
            ts.append(timed_cpu(lambda cam=cam: cam(x)))
    floor = statistics.median(f[0] for f in floors)
    print(
        f"VGG-like {args.size}x{args.size}, batch {args.batch}, layer {layer} ({k} channels), "
        f"{'GPU' if tf.config.list_physical_devices('GPU') else 'CPU'}, median of {args.repeats}"
    )
    print(f"plain forward of the batch: {floor / k * 1000:.1f} ms; K = {k} of them: {floor:.2f} s")
    print("| method | time | time / (passes x K forwards) | CPU time / (passes x K forwards' CPU time) | target |")
    print("|---|---|---|---|---|")
    rows = []
    for (label, _, _, target, passes), ts in zip(setups, times):
        ratio = statistics.median(t[0] / (passes * f[0]) for t, f in zip(ts, floors))
        cpu = statistics.median(t[1] / (passes * f[1]) for t, f in zip(ts, floors))
        seconds = statistics.median(t[0] for t in ts)
        goal = "-" if target is None else f"<= {target:.2f} {'ok' if ratio <= target else 'SLOW'}"
        print(f"| {label} | {seconds:.2f} s | {ratio:.3f} | {cpu:.3f} | {goal} |")
        rows.append({"method": label, "seconds": seconds, "ratio": ratio, "cpu_ratio": cpu, "target": target})
    return rows


if __name__ == "__main__":
    main()
