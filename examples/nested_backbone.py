"""A Keras Applications backbone inside a functional model: explaining layers by their nested path.

Transfer-learning models wrap a backbone (``keras.applications.MobileNetV2(include_top=False)``)
as one layer of an outer model. Its inner layers are addressed as ``"backbone_name/inner_layer"``;
``kg.list_layers(model)`` lists every path. This script builds MobileNetV2 with ``weights=None``
(nothing is downloaded), trains the whole model briefly on synthetic shapes, and compares
Grad-CAM++ at the backbone's last layer (coarse) with a deeper-inside, finer layer.

    python examples/nested_backbone.py [--quick] [--out outputs/nested_backbone.png]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import keras_gradcam as kg  # noqa: E402
from keras_gradcam import datasets  # noqa: E402
from keras_gradcam.metrics import energy_pointing_game  # noqa: E402


def build_model(image_size: int, num_classes: int) -> tuple[keras.Model, keras.Model]:
    """MobileNetV2 (alpha 0.35, random weights) as a nested layer, with a small classification head."""
    backbone = keras.applications.MobileNetV2(
        input_shape=(image_size, image_size, 3), alpha=0.35, include_top=False, weights=None
    )
    for layer in backbone.layers:  # trained from scratch in a few epochs: let BatchNorm's statistics keep up
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Rescaling(2.0, offset=-1.0)(inputs)  # [0, 1] -> [-1, 1], as MobileNetV2 expects
    x = backbone(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="classifier"), backbone


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, for the test suite")
    p.add_argument("--out", default="outputs/nested_backbone.png")
    args = p.parse_args(argv)
    # --quick skips training (building and tracing MobileNetV2 is what the test checks)
    n, size, epochs = (64, 32, 0) if args.quick else (1500, 96, 10)

    keras.utils.set_random_seed(0)
    data = datasets.make_shapes(n=n, image_size=size, seed=0)
    held_out = datasets.make_shapes(n=max(60, n // 5), image_size=size, seed=1)
    probes = held_out[datasets.make_probe_set(held_out, per_class=2)]

    model, backbone = build_model(size, data.num_classes)
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    if epochs:
        start = time.perf_counter()
        model.fit(data.images, data.labels, epochs=epochs, batch_size=32, verbose=2)
        acc = model.evaluate(held_out.images, held_out.labels, verbose=0)[1]
        print(f"trained in {time.perf_counter() - start:.0f} s; held-out accuracy {acc:.2f}")

    # The paths explain() accepts: "<backbone name>/<inner layer>". The last ones:
    paths = [info.path for info in kg.list_layers(model)]
    print(f"{len(paths)} candidate layers, e.g. " + ", ".join(paths[-3:]))
    last = f"{backbone.name}/out_relu"  # the backbone's output: stride 32
    finer = f"{backbone.name}/block_13_expand_relu"  # stride 16: twice the resolution
    explanations = [kg.explain(model, probes.images, method="gradcam++", layer=layer) for layer in (last, finer)]
    report = {}
    for exp in explanations:
        energy = float(energy_pointing_game(exp.heatmaps, probes.masks))
        report[exp.layer] = {"layer_map": exp.layer_heatmaps.shape[1:], "energy_inside_object": energy}
        print(f"{exp.layer:>45}: map {exp.layer_heatmaps.shape[1]}x{exp.layer_heatmaps.shape[2]}, "
              f"{energy:.0%} of the energy inside the objects")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = kg.plot(explanations, probes.images, labels=probes.labels, class_names=probes.class_names,
                  show=("image", "overlay"))
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    fig.savefig(args.out, dpi=100)
    plt.close(fig)
    print(f"wrote {os.path.abspath(args.out)}")
    report["figure"] = args.out
    return report


if __name__ == "__main__":
    main()
