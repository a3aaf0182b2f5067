"""Quickstart: train a small CNN on synthetic shapes, explain a few images with several methods.

Runs in about a minute on 2 CPU cores and writes one PNG. Nothing is downloaded: the data come
from :mod:`keras_gradcam.datasets`.

    python examples/quickstart.py [--quick] [--out outputs/quickstart.png]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_gradcam as kg  # noqa: E402
from keras_gradcam import datasets  # noqa: E402

METHODS = ["gradcam", "gradcam++", "smoothgradcam++", "xgradcam", "layercam", "integrated-gradcam"]


def small_cnn(image_size: int, num_classes: int) -> keras.Model:
    """A small CNN ending in a softmax (keras-gradcam explains its logits anyway)."""
    inputs = keras.Input((image_size, image_size, 3))
    x = inputs
    for filters in (16, 32, 64):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="last_conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def energy_inside(heatmaps: np.ndarray, masks: np.ndarray) -> float:
    """Mean share of heatmap energy inside the object masks."""
    total = heatmaps.sum(axis=(1, 2))
    inside = (heatmaps * masks).sum(axis=(1, 2))
    return float(np.mean(np.divide(inside, total, out=np.zeros_like(total), where=total > 0)))


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, for the test suite")
    p.add_argument("--out", default="outputs/quickstart.png")
    args = p.parse_args(argv)
    n, size, epochs = (96, 32, 1) if args.quick else (1500, 64, 12)

    keras.utils.set_random_seed(0)
    data = datasets.make_shapes(n=n, image_size=size, seed=0)
    held_out = datasets.make_shapes(n=300, image_size=size, seed=1)
    test = held_out[datasets.make_probe_set(held_out, per_class=2)]
    model = small_cnn(size, data.num_classes)
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(data.images, data.labels, epochs=epochs, batch_size=32, verbose=0 if args.quick else 2)
    print(f"trained in {time.perf_counter() - start:.0f} s; test accuracy "
          f"{model.evaluate(held_out.images, held_out.labels, verbose=0)[1]:.2f}")

    options = {"smoothgradcam++": {"n_samples": 8}, "integrated-gradcam": {"steps": 8}}
    explanations = {}
    for method in METHODS:
        exp = kg.explain(model, test.images, method=method, layer="last_conv", **options.get(method, {}))
        explanations[method] = exp
        print(f"{method:>20}: share of the map inside the objects {energy_inside(exp.heatmaps, test.masks):.2f}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = len(test), len(METHODS) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(1.8 * cols, 1.8 * rows), squeeze=False)
    for i in range(rows):
        axes[i, 0].imshow(test.images[i])
        axes[i, 0].set_title(test.class_names[test.labels[i]], fontsize=8)
        for j, method in enumerate(METHODS, start=1):
            exp = explanations[method]
            axes[i, j].imshow(test.images[i])
            axes[i, j].imshow(exp.heatmaps[i], cmap="jet", alpha=0.45, vmin=0, vmax=1)
            if i == 0:
                axes[i, j].set_title(method, fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    fig.savefig(args.out, dpi=100)
    plt.close(fig)
    print(f"wrote {os.path.abspath(args.out)}")
    return args.out


if __name__ == "__main__":
    main()
