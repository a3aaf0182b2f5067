"""Throughput of ``kg.explain_dataset`` (Grad-CAM) against ``model.predict``, side by side in one run.

Two cases, each on the same in-memory images and batch size:

* the demo CNN of ``examples/dataset_bias.py`` (four convolutions, BatchNorm, global pooling,
  softmax; layer ``last_conv``) on ``--n`` 64x64 images (20,000 by default);
* ResNet50 (``weights=None``, layer ``conv5_block3_out``) on ``--resnet-n`` 224x224 images.

For each it prints images/s of ``model.predict`` and of ``explain_dataset`` (results written to a
temporary folder, chunk by chunk, fsync'd), each the median over ``--repeats`` rounds in which
the two are timed one after the other (after a warm-up that traces both), and their ratio
(target >= 0.9), as the ratio of the medians and as the median of the per-round ratios (on a
busy machine the two differ; the first is the conservative one). For the demo CNN it also prints the growth of resident memory between the 1,000th image and
the last (target < 50 MB), read from ``/proc/self/statm`` by the data generator as it is consumed.
Usage::

    python benchmarks/bench_dataset.py [--n 20000] [--batch 64] [--resnet-n 128] [--resnet-batch 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from timing import timed  # noqa: E402

import keras_gradcam as kg  # noqa: E402


def demo_cnn(image_size: int, num_classes: int) -> keras.Model:
    """The CNN of examples/dataset_bias.py (small_cnn): three conv blocks with BatchNorm, one more conv, GAP, softmax."""
    inputs = keras.Input((image_size, image_size, 3))
    x = inputs
    for filters in (16, 32, 64):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.BatchNormalization(momentum=0.9)(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="last_conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x), name="small_cnn")


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def compare(name: str, model, x, layer: str, batch: int, repeats: int, folder: str) -> dict:
    """Median images/s of predict and explain_dataset over ``repeats`` alternating rounds, and their ratio."""
    out = os.path.join(folder, name)

    def predict():
        model.predict(x, batch_size=batch, verbose=0)

    def explain():
        shutil.rmtree(out, ignore_errors=True)
        kg.explain_dataset(model, x, method="gradcam", layer=layer, out=out, batch_size=batch, verbose=0)

    model.predict(x[: 2 * batch], batch_size=batch, verbose=0)  # warm-up: tracing
    kg.explain_dataset(model, x[: 2 * batch], method="gradcam", layer=layer, out=out + "-warm", batch_size=batch, verbose=0)
    p, e = [], []
    for _ in range(repeats):
        p.append(timed(predict))
        e.append(timed(explain))
    row = {"case": name, "n": len(x), "batch": batch, "predict": len(x) / statistics.median(p),
           "explain": len(x) / statistics.median(e), "round_ratio": statistics.median(pi / ei for pi, ei in zip(p, e))}
    row["ratio"] = row["explain"] / row["predict"]
    print(f"| {name} | {len(x)} | {batch} | {row['predict']:.1f} | {row['explain']:.1f} | {row['ratio']:.2f} | "
          f"{row['round_ratio']:.2f} | >= 0.9 |", flush=True)
    return row


def memory_growth(model, x, layer: str, batch: int, folder: str) -> tuple[float, float]:
    """Resident memory (MB) when the 1,000th image is read and when the last is: explain_dataset over a generator."""
    seen = {}

    def batches():
        for start in range(0, len(x), batch):
            if start >= 1000 and "first" not in seen:
                seen["first"] = rss_mb()
            yield x[start : start + batch]
        seen["last"] = rss_mb()

    kg.explain_dataset(model, batches(), method="gradcam", layer=layer, out=os.path.join(folder, "memory"),
                       batch_size=batch, verbose=0)
    return seen["first"], seen["last"]


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20_000, help="64x64 images for the demo CNN")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--resnet-n", type=int, default=128, help="224x224 images for ResNet50 (0 to skip)")
    p.add_argument("--resnet-batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    folder = tempfile.mkdtemp(prefix="bench_dataset_")
    rows = []
    try:
        print(f"explain_dataset (Grad-CAM) vs model.predict, median of {args.repeats} alternating rounds")
        print("| case | images | batch | predict img/s | explain_dataset img/s | ratio | per-round ratio | target |")
        print("|---|---|---|---|---|---|---|---|")
        cnn = demo_cnn(64, 3)
        x = rng.uniform(0, 1, (args.n, 64, 64, 3)).astype("float32")
        rows.append(compare("demo CNN 64x64", cnn, x, "last_conv", args.batch, args.repeats, folder))
        if args.resnet_n:
            resnet = keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3), classifier_activation=None)
            xr = rng.uniform(-1, 1, (args.resnet_n, 224, 224, 3)).astype("float32")
            rows.append(compare("ResNet50 224x224", resnet, xr, "conv5_block3_out", args.resnet_batch, args.repeats, folder))
        first, last = memory_growth(cnn, x, "last_conv", args.batch, folder)
        print(f"resident memory of the demo CNN run: {first:.0f} MB at image 1,000, {last:.0f} MB at image "
              f"{args.n:,}: growth {last - first:+.1f} MB (target < 50 MB)")
        rows.append({"case": "memory", "first_mb": first, "last_mb": last, "growth_mb": last - first})
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return rows


if __name__ == "__main__":
    main()
