"""Cost of GradCAMCallback per logged epoch, relative to ``kg.explain()`` on the same probes.

The callback's epoch work is ``on_epoch_end``: explain the probes with its compiled explainer,
blend the overlays with ``kg.overlay``, tile the grid, compute the bias metrics, encode the images
and write and flush the event file. ``explain()`` alone is the floor. Target: ratio <= 1.3 for 16
probes of 64 x 64 (issue 3).

Run: ``.venv/bin/python benchmarks/bench_callback.py [--repeats 5] [--calls 10] [--models small,mobilenetv2]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from timing import timed_cpu  # noqa: E402

from keras_gradcam import datasets  # noqa: E402
from keras_gradcam.callback import GradCAMCallback  # noqa: E402
from keras_gradcam.explain import explain  # noqa: E402

TARGET = 1.3


def small_cnn(size: int, classes: int) -> keras.Model:
    """The kind of CNN the synthetic-shapes examples train (4 conv layers, GAP, dense)."""
    inp = keras.Input((size, size, 3))
    x = inp
    for filters in (16, 32, 64):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="last_conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(classes)(x))


def mobilenet(size: int, classes: int) -> keras.Model:
    return keras.applications.MobileNetV2(
        weights=None, input_shape=(size, size, 3), classes=classes, classifier_activation=None
    )


MODELS = {"small": small_cnn, "mobilenetv2": mobilenet}


def bench(model_name: str, probes, repeats: int, calls: int, log_dir: str, **options) -> dict:
    keras.utils.set_random_seed(0)
    model = MODELS[model_name](probes.image_size, probes.num_classes)
    cb = GradCAMCallback(probes.images, log_dir, probe_labels=probes.labels, probe_masks=probes.masks,
                         class_names=probes.class_names, warn_below=None, **options)
    cb.set_model(model)
    cb.set_params({"epochs": 10**9, "verbose": 0})
    cb.on_train_begin()
    epoch = 0

    def callback_epoch():
        nonlocal epoch
        cb.on_epoch_end(epoch)
        epoch += 1

    def explain_once():
        explain(model, probes.images, method="gradcam++")

    for _ in range(3):  # warm-up: tracing, writer creation, first file write
        callback_epoch()
        explain_once()
    ratios, cpu_ratios, t_cb, t_ex = [], [], [], []
    for _ in range(repeats):
        cb_times, ex_times = [], []
        for _ in range(calls):  # interleaved, so that load on the machine hits both alike
            ex_times.append(timed_cpu(explain_once))
            cb_times.append(timed_cpu(callback_epoch))
        wall_cb, cpu_cb = (statistics.median(t) for t in zip(*cb_times))
        wall_ex, cpu_ex = (statistics.median(t) for t in zip(*ex_times))
        t_cb.append(wall_cb)
        t_ex.append(wall_ex)
        ratios.append(wall_cb / wall_ex)
        cpu_ratios.append(cpu_cb / cpu_ex)
    cb.on_train_end()
    size = sum(f.stat().st_size for f in Path(cb.run_dir).glob("events.out.tfevents.*"))
    return {
        "explain_ms": 1e3 * statistics.median(t_ex),
        "callback_ms": 1e3 * statistics.median(t_cb),
        "ratio": statistics.median(ratios),
        "ratio_range": (min(ratios), max(ratios)),
        "cpu_ratio": statistics.median(cpu_ratios),
        "kib_per_epoch": size / 1024 / epoch,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=10, help="calls per repetition (median taken)")
    parser.add_argument("--models", default="small,mobilenetv2")
    args = parser.parse_args(argv)

    ds = datasets.make_shapes(n=max(64, 4 * args.probes), image_size=args.size, seed=0, spurious_rate=0.5)
    per_class = int(np.ceil(args.probes / ds.num_classes))
    probes = ds[datasets.make_probe_set(ds, per_class=per_class)[: args.probes]]
    variants = [("default (jpeg)", {}), ("jpeg + grid", {"grid": True}), ("png", {"image_format": "png"})]

    print(f"GradCAMCallback epoch cost vs explain(), {len(probes)} probes of {args.size}x{args.size}, Grad-CAM++, "
          f"median of {args.repeats} repetitions x {args.calls} calls, {os.cpu_count()} CPU cores")
    print("| model | callback options | explain() ms | callback epoch ms | ratio (min-max) | CPU-time ratio "
          "| KiB/epoch | target <= 1.3 |")
    print("|---|---|---|---|---|---|---|---|")
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for model_name in args.models.split(","):
            for label, options in variants:
                run_dir = os.path.join(tmp, f"{model_name}-{len(options)}-{label[:3]}")
                r = bench(model_name, probes, args.repeats, args.calls, run_dir, **options)
                ok = "yes" if r["ratio"] <= TARGET else "NO"
                if not options:
                    worst = max(worst, r["ratio"])
                low, high = r["ratio_range"]
                print(f"| {model_name} | {label} | {r['explain_ms']:.1f} | {r['callback_ms']:.1f} | {r['ratio']:.2f} "
                      f"({low:.2f}-{high:.2f}) | {r['cpu_ratio']:.2f} | {r['kib_per_epoch']:.0f} | {ok} |", flush=True)
    print(f"worst default ratio: {worst:.2f} (target <= {TARGET})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
