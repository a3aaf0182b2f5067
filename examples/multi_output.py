"""A model with two heads: explain a class of one output, and a regression value with a callable target.

The model reads a synthetic shapes image and predicts both the shape's class (``"shape"``, a
softmax) and the object's centre (``"centre"``, two numbers in [0, 1]). A class target needs to
know which output it refers to (``output="shape"``); any other differentiable score -- here the
predicted horizontal position -- is explained with a callable target that receives the model's
outputs and returns one score per sample.

    python examples/multi_output.py [--quick] [--out outputs/multi_output.png]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_gradcam as kg  # noqa: E402
from keras_gradcam import datasets  # noqa: E402
from keras_gradcam.metrics import energy_pointing_game  # noqa: E402


def build_model(image_size: int, num_classes: int) -> keras.Model:
    """A shared CNN trunk with a classification head and a centre-regression head (dict outputs)."""
    inputs = keras.Input((image_size, image_size, 3))
    x = inputs
    for filters in (16, 32, 64):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.MaxPooling2D()(x)
    features = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="last_conv")(x)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    shape = keras.layers.Dense(num_classes, activation="softmax", name="shape")(pooled)
    # position needs *where*, which global pooling forgets: a flattened branch keeps it
    flat = keras.layers.Flatten()(keras.layers.Conv2D(8, 1, activation="relu")(features))
    centre = keras.layers.Dense(2, activation="sigmoid", name="centre")(flat)
    return keras.Model(inputs, {"shape": shape, "centre": centre}, name="two_heads")


def centres(ds) -> np.ndarray:
    """Centre of each labelled object's box, (y, x) in [0, 1]."""
    b = ds.boxes.astype(np.float32)
    return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], axis=1) / ds.images.shape[1]


def horizontal_position(outputs):
    """A callable target: the predicted x coordinate of the centre, one score per sample."""
    return outputs["centre"][:, 1]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, for the test suite")
    p.add_argument("--out", default="outputs/multi_output.png")
    args = p.parse_args(argv)
    n, size, epochs = (96, 32, 1) if args.quick else (1500, 64, 12)

    keras.utils.set_random_seed(0)
    data = datasets.make_shapes(n=n, image_size=size, seed=0)
    held_out = datasets.make_shapes(n=max(60, n // 5), image_size=size, seed=1)
    probes = held_out[datasets.make_probe_set(held_out, per_class=2)]

    model = build_model(size, data.num_classes)
    model.compile(
        keras.optimizers.Adam(2e-3),
        loss={"shape": "sparse_categorical_crossentropy", "centre": "mse"},
        loss_weights={"shape": 1.0, "centre": 10.0},
        metrics={"shape": ["accuracy"]},
    )
    model.fit(data.images, {"shape": data.labels, "centre": centres(data)}, epochs=epochs, batch_size=32,
              verbose=0 if args.quick else 2)
    pred = model.predict(held_out.images, verbose=0)
    acc = float((pred["shape"].argmax(1) == held_out.labels).mean())
    err = float(np.abs(pred["centre"] - centres(held_out)).mean() * size)
    print(f"held-out: shape accuracy {acc:.2f}, centre error {err:.1f} px")

    # 1. a class of one output: say which output with output=
    by_class = kg.explain(model, probes.images, method="gradcam++", layer="last_conv", output="shape")
    # 2. any differentiable score: a callable target (the outputs as the model returns them)
    by_position = kg.explain(model, probes.images, method="gradcam++", layer="last_conv", targets=horizontal_position)
    report = {}
    for name, exp in (("class (output='shape')", by_class), ("x position (callable)", by_position)):
        energy = float(energy_pointing_game(exp.heatmaps, probes.masks))
        report[name] = energy
        print(f"{name:>24}: {energy:.0%} of the Grad-CAM++ energy inside the objects")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = kg.plot({"class of 'shape'": by_class, "x of 'centre'": by_position}, probes.images,
                  labels=probes.labels, class_names=probes.class_names, show=("image", "overlay"))
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    fig.savefig(args.out, dpi=100)
    plt.close(fig)
    print(f"wrote {os.path.abspath(args.out)}")
    report["figure"] = args.out
    return report


if __name__ == "__main__":
    main()
