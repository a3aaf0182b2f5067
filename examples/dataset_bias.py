"""Dataset bias, caught in the act: a CNN that learns a watermark instead of the shapes.

The story of keras-gradcam in one script (``make demo``; its run took 2 min 44 s on 2 CPU cores shared
with other jobs, load average 5-7):

1. Synthetic shapes (circle, square, triangle) where a small coloured square in the top-left
   corner -- a "watermark" -- gives the class away. A small CNN trains on them with
   ``GradCAMCallback`` and ``keras.callbacks.TensorBoard`` writing to ``runs/biased``. It reaches a
   high accuracy; the overlays in TensorBoard show it looking at the corner, not the shapes.
2. The same CNN trains on the same images without the watermark (``runs/clean``).
3. Both models are explained with Grad-CAM++ on the same probe images; one PNG puts the overlays
   side by side, and the share of the heatmap energy inside the objects is printed for both, with
   the accuracy on images whose watermark names the *wrong* class (the biased model falls for it).
4. ``kg.audit`` checks both models on the held-out images, class by class, without being told
   where the watermark is: the biased model's evidence sits in the top-left corner in every
   class, and covering that corner drops its accuracy; the clean model's evidence moves with the
   shapes, so nothing is flagged. The biased model's report is saved as a self-contained page,
   ``outputs/audit_biased/index.html``.
5. Removing the shortcut (``examples/guided_training.py``): object masks for 10 % of the biased
   training images and ``kg.GuidedTraining`` of the same CNN; on held-out images without the
   watermark, the accuracy and the Grad-CAM++ energy inside the objects of the biased, clean and
   guided models.

Nothing is downloaded: the data come from :mod:`keras_gradcam.datasets`.

    python examples/dataset_bias.py [--quick] [--logdir runs] [--out outputs/dataset_bias.png]
                                    [--audit-out outputs/audit_biased]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import keras_gradcam as kg  # noqa: E402
from keras_gradcam import datasets  # noqa: E402
from keras_gradcam.callback import GradCAMCallback  # noqa: E402
from keras_gradcam.metrics import energy_pointing_game  # noqa: E402


def small_cnn(image_size: int, num_classes: int) -> keras.Model:
    """Three conv blocks with BatchNorm, global pooling and a softmax (its logits are explained)."""
    inputs = keras.Input((image_size, image_size, 3))
    x = inputs
    for filters in (16, 32, 64):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        # momentum 0.9: the moving statistics keep up with a model that learns in a few epochs
        x = keras.layers.BatchNormalization(momentum=0.9)(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="last_conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def train(name: str, data, probes, logdir: str, epochs: int, verbose: int) -> keras.Model:
    """Train a fresh CNN on ``data``, logging losses and Grad-CAM++ probe overlays to ``logdir/name``."""
    keras.utils.set_random_seed(0)
    model = small_cnn(data.images.shape[1], data.num_classes)
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    run = os.path.join(logdir, name)
    callbacks = [
        keras.callbacks.TensorBoard(run),
        GradCAMCallback(
            probes.images, log_dir=run, probe_labels=probes.labels, method="gradcam++", layer="last_conv",
            probe_masks=probes.masks, class_names=probes.class_names, warn_below=None,
        ),
    ]
    start = time.perf_counter()
    model.fit(data.images, data.labels, epochs=epochs, batch_size=32, verbose=verbose, callbacks=callbacks)
    print(f"[{name}] trained {epochs} epochs in {time.perf_counter() - start:.0f} s")
    return model


def sibling(name: str):
    """Another script of examples/, loaded from its file (the examples are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", os.path.join(os.path.dirname(__file__), f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def accuracy(model: keras.Model, ds) -> float:
    """Top-1 accuracy of ``model`` on a dataset."""
    probs = model.predict(ds.images, batch_size=128, verbose=0)
    return float((probs.argmax(axis=1) == ds.labels).mean())


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, for the test suite (a few seconds)")
    p.add_argument("--logdir", default="runs", help="TensorBoard log folder (default: runs); its biased/ and "
                   "clean/ runs are replaced")
    p.add_argument("--out", default="outputs/dataset_bias.png", help="the comparison figure")
    p.add_argument("--audit-out", default="outputs/audit_biased",
                   help="folder of the biased model's audit report (index.html, summary.json)")
    p.add_argument("--spurious-rate", type=float, default=1.0,
                   help="share of training images carrying the watermark (default: 1.0)")
    args = p.parse_args(argv)
    n, size, epochs = (96, 32, 1) if args.quick else (1200, 64, 10)

    # 1. data: a biased training set and its twin without the watermark (identical otherwise)
    biased, clean = datasets.make_biased_pair(n=n, image_size=size, spurious_rate=args.spurious_rate, seed=0)
    held_out = datasets.make_shapes(n=max(60, n // 4), image_size=size, spurious_rate=1.0, seed=1)
    probes = held_out[datasets.make_probe_set(held_out, per_class=2, with_cue=True)]
    # watermark of the *next* class: a model that reads the watermark gets these wrong
    conflicting = datasets.make_shapes(n=max(60, n // 4), image_size=size, spurious_rate=1.0, cue_class="shifted", seed=2)
    no_mark = datasets.make_shapes(n=max(60, n // 4), image_size=size, spurious_rate=0.0, seed=2)

    for name in ("biased", "clean"):
        shutil.rmtree(os.path.join(args.logdir, name), ignore_errors=True)
    verbose = 0 if args.quick else 2
    models = {
        "biased": train("biased", biased, probes, args.logdir, epochs, verbose),
        "clean": train("clean", clean, probes, args.logdir, epochs, verbose),
    }

    # 2. the same probes, explained with Grad-CAM++ by both models
    explanations = {name: kg.explain(m, probes.images, method="gradcam++", layer="last_conv") for name, m in models.items()}
    report = {}
    print()
    print(f"{'model':<8} {'acc. (watermark right)':>23} {'acc. (watermark wrong)':>23} {'acc. (no watermark)':>20} "
          f"{'energy inside object':>21}")
    for name, m in models.items():
        energy = energy_pointing_game(explanations[name].heatmaps, probes.masks)
        report[name] = {
            "accuracy_watermark_right": accuracy(m, held_out),
            "accuracy_watermark_wrong": accuracy(m, conflicting),
            "accuracy_no_watermark": accuracy(m, no_mark),
            "energy_inside_object": float(energy),
        }
        r = report[name]
        print(f"{name:<8} {r['accuracy_watermark_right']:>23.0%} {r['accuracy_watermark_wrong']:>23.0%} "
              f"{r['accuracy_no_watermark']:>20.0%} {r['energy_inside_object']:>21.0%}")
    area = float(probes.masks.mean())
    print(f"(a heatmap spread evenly over the image would put {area:.0%} of its energy inside the objects)")

    # 3. one figure: the probes, and where each model looks
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = kg.plot(
        {"trained WITH watermark": explanations["biased"], "trained WITHOUT watermark": explanations["clean"]},
        probes.images, labels=probes.labels, class_names=probes.class_names, show=("image", "overlay"),
    )
    fig.suptitle("Grad-CAM++ on the same probes: the biased model looks at the corner", fontsize=10)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    fig.savefig(args.out, dpi=110)
    plt.close(fig)
    print(f"\nwrote {os.path.abspath(args.out)}")
    print("Watch the overlays change epoch by epoch (TIME SERIES or IMAGES tab) and the bias/energy_inside_object curve (SCALARS):")
    print(f"    tensorboard --logdir {args.logdir}")
    report["figure"] = args.out

    # 4. the audit: where each model's evidence sits, class by class, on the held-out images
    print("\nDataset audit (Grad-CAM++ on the held-out images, told nothing about the watermark):")
    report["audit"] = {}
    for name, m in models.items():
        audited = kg.audit(m, held_out.images, held_out.labels, class_names=held_out.class_names,
                           masks=held_out.masks, method="gradcam++", layer="last_conv")
        print(f"[{name}] {str(audited).splitlines()[0]}")
        for c in audited.classes:
            if c.flagged:
                print(f"    {c.sentence()}")
        report["audit"][name] = {
            "flagged": audited.flagged,
            "regions": {c.name: c.region for c in audited.classes if c.flagged},
            "accuracy": {c.name: c.accuracy for c in audited.classes},
            "accuracy_covered": {c.name: c.accuracy_after for c in audited.classes if c.flagged},
        }
        if name == "biased":
            report["audit_page"] = audited.save(args.audit_out)
            print(f"wrote {os.path.abspath(report['audit_page'])} (open it in a browser)")

    # 5. removing the shortcut: guided training of the same CNN, masks for 10 % of the biased images
    guided = sibling("guided_training")
    guided_epochs = guided.sizes(args.quick)[3]
    print(f"\nGuided training: masks for {guided.SHARE:.0%} of the biased training images, kg.GuidedTraining's "
          f"defaults, {guided_epochs} epochs (examples/guided_training.py)")
    start = time.perf_counter()
    models["guided"], _ = guided.guided_model(biased, guided_epochs, verbose=verbose)
    print(f"[guided] trained in {time.perf_counter() - start:.0f} s")
    report["guided_training"] = guided.compare(models, no_mark, conflicting)
    return report


if __name__ == "__main__":
    main()
