"""Removing the shortcut: guided training with masks for 10 % of the biased training set.

The end of the dataset-bias story (``examples/dataset_bias.py`` runs it as its step 5, so
``make demo`` shows it; this script runs it alone, with the options to vary it):

1. The same watermark-biased training set (a small coloured square in the top-left corner gives
   the class away in every image) and the same small CNN.
2. Object masks for 10 % of the training images (the rest count as "no annotation"), and
   ``kg.GuidedTraining`` with its defaults: the task loss plus the share of the Grad-CAM evidence
   at the last convolutional layer that lies outside the mask (the map of the label's margin over
   the other classes) plus the cross-entropy of composites, each annotated object pasted on
   another annotated image's background (see docs/guided-training.md).
3. On held-out images WITHOUT the watermark: the accuracy of the biased model (plain training
   on the biased set), the clean model (plain training on the same images without the
   watermark) and the guided model, the share of their Grad-CAM++ energy inside the objects,
   and their accuracy when the watermark names the wrong class.

``--curve`` instead trains the guided model for several shares of masked images (0 / 2 / 5 / 10 /
25 % by default) and seeds, and prints the accuracy without the watermark for each (the table in
``docs/guided-training.md``).

Nothing is downloaded: the data come from :mod:`keras_gradcam.datasets`.

    python examples/guided_training.py [--quick] [--mask-share 0.1] [--weight 1] [--score contrast]
                                       [--loss rrr|hint] [--no-counterfactual] [--layer last_conv] [--epochs N]
    python examples/guided_training.py --curve [--shares 0,0.02,0.05,0.1,0.25] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_gradcam as kg  # noqa: E402
from keras_gradcam import datasets  # noqa: E402
from keras_gradcam.metrics import energy_pointing_game  # noqa: E402


def small_cnn(image_size: int, num_classes: int) -> keras.Model:
    """The CNN of ``examples/dataset_bias.py``: three conv blocks with BatchNorm, pooling, softmax."""
    inputs = keras.Input((image_size, image_size, 3))
    x = inputs
    for i, filters in enumerate((16, 32, 64), start=1):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(momentum=0.9)(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="last_conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def annotate(data, share: float, seed: int) -> np.ndarray:
    """Object masks for a random ``share`` of ``data``'s images; all zeros ("no annotation") elsewhere."""
    rng = np.random.default_rng(seed)
    chosen = np.zeros(len(data), bool)
    chosen[rng.choice(len(data), int(round(share * len(data))), replace=False)] = True
    return (data.masks & chosen[:, None, None]).astype("float32")


def train(data, epochs: int, seed: int, masks=None, verbose: int = 0, **options) -> keras.Model:
    """A fresh CNN trained on ``data``: plain ``fit`` if ``masks`` is None, else ``GuidedTraining(**options)``."""
    keras.utils.set_random_seed(seed)
    model = small_cnn(data.images.shape[1], data.num_classes)
    trainer = model if masks is None else kg.GuidedTraining(model, **options)
    trainer.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    parts = (data.images, data.labels) if masks is None else (data.images, data.labels, masks)
    ds = tf.data.Dataset.from_tensor_slices(parts).shuffle(len(data), seed=seed).batch(32)
    trainer.fit(ds, epochs=epochs, verbose=verbose)
    return model


def accuracy(model: keras.Model, ds) -> float:
    """Top-1 accuracy of ``model`` on a dataset."""
    probs = model.predict(ds.images, batch_size=128, verbose=0)
    return float((probs.argmax(axis=1) == ds.labels).mean())


def energy(model: keras.Model, ds) -> float:
    """Mean share of the Grad-CAM++ energy (explaining the true class) inside the objects."""
    explained = kg.explain(model, ds.images, targets=ds.labels, method="gradcam++", layer="last_conv")
    return float(energy_pointing_game(explained.heatmaps, ds.masks))


def sizes(quick: bool) -> tuple[int, int, int, int]:
    """(training images, image side, epochs of plain training, epochs of guided training)."""
    return (96, 32, 1, 1) if quick else (1200, 64, 10, GUIDED_EPOCHS)


# the share of masked images and the guided epochs the docs' figures were measured with (docs/guided-training.md);
# every option of GuidedTraining is its default unless given on the command line
SHARE, GUIDED_EPOCHS = 0.1, 15


def held_out(n: int, size: int):
    """Held-out images without the watermark, and the same images with the watermark of the *next* class."""
    no_mark = datasets.make_shapes(n=max(60, n // 4), image_size=size, spurious_rate=0.0, seed=2)
    wrong_mark = datasets.make_shapes(n=max(60, n // 4), image_size=size, spurious_rate=1.0, cue_class="shifted", seed=2)
    return no_mark, wrong_mark


def compare(models: dict, no_mark, wrong_mark) -> dict:
    """Accuracy and Grad-CAM++ energy inside the objects without the watermark (and accuracy with a wrong one)."""
    report = {}
    print(f"\nheld-out images WITHOUT the watermark ({len(no_mark)}):")
    print(f"{'model':<8} {'accuracy':>9} {'Grad-CAM++ energy inside objects':>33} {'(accuracy, wrong watermark)':>28}")
    for name, m in models.items():
        report[name] = {"accuracy_no_watermark": accuracy(m, no_mark), "energy_inside_object": energy(m, no_mark),
                        "accuracy_wrong_watermark": accuracy(m, wrong_mark)}
        r = report[name]
        print(f"{name:<8} {r['accuracy_no_watermark']:>9.0%} {r['energy_inside_object']:>33.0%} "
              f"{r['accuracy_wrong_watermark']:>28.0%}")
    print(f"(a map spread evenly over the image would put {float(no_mark.masks.mean()):.0%} of its energy inside)")
    return report


def guided_model(biased, epochs: int, share: float = SHARE, seed: int = 0, verbose: int = 0, **options):
    """The CNN trained on the biased set with object masks for ``share`` of its images: (model, masks).

    ``options`` go to ``kg.GuidedTraining`` (its defaults where absent)."""
    masks = annotate(biased, share, seed=seed)
    model = train(biased, epochs, seed, masks=masks, verbose=verbose, **options)
    return model, masks


def options(args) -> dict:
    """The GuidedTraining options given on the command line (the others keep their defaults)."""
    given = {"weight": args.weight, "score": args.score, "loss": args.loss, "layer": args.layer}
    found = {k: v for k, v in given.items() if v is not None}
    if args.no_counterfactual:
        found["counterfactual"] = False
    return found


def story(args) -> dict:
    n, size, epochs, guided_epochs = sizes(args.quick)
    epochs, guided_epochs = args.epochs or epochs, args.epochs or guided_epochs
    biased, clean = datasets.make_biased_pair(n=n, image_size=size, spurious_rate=1.0, seed=0)
    no_mark, wrong_mark = held_out(n, size)
    models, timings = {}, {}
    for name, data in (("biased", biased), ("clean", clean)):
        if name in args.models:
            start = time.perf_counter()
            models[name] = train(data, epochs, 0)
            timings[name] = time.perf_counter() - start
            print(f"[{name}] plain training, {epochs} epochs in {timings[name]:.0f} s")
    start = time.perf_counter()
    models["guided"], masks = guided_model(biased, guided_epochs, args.mask_share, 0, verbose=0 if args.quick else 2,
                                           **options(args))
    timings["guided"] = time.perf_counter() - start
    annotated = int(masks.any(axis=(1, 2)).sum())
    print(f"[guided] {annotated} of {n} biased training images annotated ({args.mask_share:.0%}), "
          f"options {options(args) or 'all defaults'}: {guided_epochs} epochs in {timings['guided']:.0f} s")
    report = compare(models, no_mark, wrong_mark)
    for name in models:
        report[name]["train_seconds"] = timings[name]
    report.update(annotated_images=annotated, training_images=n)
    return report


def curve(args) -> dict:
    n, size, _, epochs = sizes(args.quick)
    epochs = args.epochs or epochs
    biased, _ = datasets.make_biased_pair(n=n, image_size=size, spurious_rate=1.0, seed=0)
    no_mark, _ = held_out(n, size)
    shares = [float(s) for s in args.shares.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = {}
    print(f"{'masked':>7} " + " ".join(f"{'seed ' + str(s):>8}" for s in seeds) + f" {'mean':>6}   (accuracy without the watermark)")
    for share in shares:
        accs = []
        for seed in seeds:
            # share 0: no annotation at all, i.e. plain training on the biased set
            model, _ = guided_model(biased, epochs, share, seed, **options(args))
            accs.append(accuracy(model, no_mark))
        rows[share] = accs
        print(f"{share:>7.0%} " + " ".join(f"{a:>8.0%}" for a in accs) + f" {np.mean(accs):>6.0%}", flush=True)
    return {"shares": shares, "seeds": seeds, "accuracy_no_watermark": rows}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, for the test suite (a few seconds)")
    p.add_argument("--mask-share", type=float, default=SHARE, help="share of training images with a mask (0.1)")
    p.add_argument("--weight", type=float, default=None, help="weight of the alignment terms (default: GuidedTraining's)")
    p.add_argument("--loss", default=None, choices=("rrr", "hint"), help="the map term (default: GuidedTraining's)")
    p.add_argument("--score", default=None, choices=("logit", "contrast", "log_prob", "sum_log_prob"),
                   help="the score whose Grad-CAM is aligned (default: GuidedTraining's)")
    p.add_argument("--no-counterfactual", action="store_true", help="leave the composites out (counterfactual=False)")
    p.add_argument("--layer", default=None, help="the layer whose Grad-CAM is aligned (default: the last conv layer)")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"epochs of every model (default: 10 plain, {GUIDED_EPOCHS} guided; 1 with --quick)")
    p.add_argument("--curve", action="store_true", help="accuracy without the watermark vs share of masked images")
    p.add_argument("--shares", default="0,0.02,0.05,0.1,0.25", help="with --curve: the shares of masked images")
    p.add_argument("--seeds", default="0,1,2", help="with --curve: the seeds (mask choice, init, shuffling)")
    p.add_argument("--models", default="biased,clean", help="the plain models to compare with (biased,clean)")
    p.add_argument("--json", default=None, help="also write the report to this JSON file")
    args = p.parse_args(argv)
    args.models = args.models.split(",")
    report = curve(args) if args.curve else story(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=str)
    return report


if __name__ == "__main__":
    main()
