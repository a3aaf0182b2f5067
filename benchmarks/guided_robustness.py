"""Guided training's robustness table: several kinds of shortcut, 2 and 3 classes, three seeds.

For each shortcut kind (built with :mod:`keras_gradcam.datasets`), number of classes and seed, a
tiny CNN is trained three ways: plain on the biased set, plain on the same images without the
cue ("clean"), and ``kg.GuidedTraining`` **with its default arguments** on the biased set, with
object masks for 10 % of the images. Each is scored on held-out images WITHOUT the cue: accuracy,
and the share of its Grad-CAM++ energy (explaining the true class) inside the objects.

The kinds:

- ``watermark``: a corner patch whose colour names the class, on every image (``make demo``'s);
- ``one_class``: a white-ish corner patch (class 1's colour) on every class-1 image only: the
  other classes are told apart by its absence;
- ``background``: the background tinted with the class colour;
- ``border``: a frame of the class colour;
- ``position``: a white patch whose place along the top edge names the class.

Sizes are small so that the whole table runs in well under an hour on 2 shared CPU cores (32x32
images, 600 training images, 10 epochs plain and 15 guided, a 3-conv CNN); they are printed with
the table. Results are appended to ``--out`` (JSON lines) as they come, and the table is printed
(and written as markdown to ``--table``) at the end; ``--table-only`` rebuilds it from ``--out``.

    nice -n 10 python benchmarks/guided_robustness.py [--kinds one_class,watermark] [--classes 2,3]
        [--seeds 0,1,2] [--variant 'name:score=contrast,weight=5'] [--out runs/guided_robustness.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_gradcam as kg  # noqa: E402
from keras_gradcam import datasets  # noqa: E402
from keras_gradcam.metrics import energy_pointing_game  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from models import shortcut_cnn  # noqa: E402  the tests' CNN, so the table is what the tests check

KINDS = {
    "watermark": {"cue": "corner"},
    "one_class": {"cue": "corner", "cue_classes": (1,)},
    "background": {"cue": "background"},
    "border": {"cue": "border"},
    "position": {"cue": "position"},
}
CLASSES = {2: ("circle", "cross"), 3: ("circle", "cross", "triangle"), 4: ("circle", "cross", "triangle", "square")}
N, SIZE, EPOCHS, GUIDED_EPOCHS, SHARE = 600, 32, 10, 15, 0.1
SIZE_RANGE = (0.4, 0.6)  # objects 13-19 px across: a clean model learns them from 600 images at 32x32


def annotate(data, share: float, seed: int) -> np.ndarray:
    """Object masks for a random ``share`` of the images, all zeros ("no annotation") elsewhere."""
    chosen = np.zeros(len(data), bool)
    chosen[np.random.default_rng(seed).choice(len(data), int(round(share * len(data))), replace=False)] = True
    return (data.masks & chosen[:, None, None]).astype("float32")


def train(data, epochs: int, seed: int, masks=None, options=None):
    """A fresh CNN: plain ``fit`` without masks, else ``GuidedTraining(**options)``; (model, history)."""
    keras.utils.set_random_seed(seed)
    model = shortcut_cnn(data.images.shape[1], data.num_classes)
    trainer = model if masks is None else kg.GuidedTraining(model, **(options or {}))
    trainer.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    parts = (data.images, data.labels) if masks is None else (data.images, data.labels, masks)
    ds = tf.data.Dataset.from_tensor_slices(parts).shuffle(len(data), seed=seed).batch(32)
    history = trainer.fit(ds, epochs=epochs, verbose=0)
    return model, history.history


def scores(model, ds) -> dict:
    """Accuracy and Grad-CAM++ energy inside the objects, on ``ds``."""
    acc = float((model.predict(ds.images, batch_size=256, verbose=0).argmax(axis=1) == ds.labels).mean())
    maps = kg.explain(model, ds.images, targets=ds.labels, method="gradcam++", layer="last_conv").heatmaps
    return {"accuracy": acc, "energy": float(energy_pointing_game(maps, ds.masks))}


def parse_variant(text: str) -> tuple[str, dict]:
    """``'name:key=value,...'`` as (name, GuidedTraining keyword arguments); ``'defaults'`` is ``{}``."""
    name, _, rest = text.partition(":")
    options = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        try:
            options[key] = float(value) if key == "weight" else {"True": True, "False": False}.get(value, value)
        except ValueError:
            options[key] = value
    return name, options


def run(args) -> None:
    variants = [parse_variant(v) for v in (args.variant or ["defaults"])]
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    for k in args.classes:
        for seed in args.seeds:
            held_out = datasets.make_shapes(n=300, image_size=SIZE, classes=CLASSES[k], seed=100 + seed,
                                            size_range=SIZE_RANGE)
            clean = None
            for kind in args.kinds:
                biased, clean_twin = datasets.make_biased_pair(
                    n=N, image_size=SIZE, classes=CLASSES[k], spurious_rate=1.0, seed=seed, size_range=SIZE_RANGE,
                    **KINDS[kind]
                )
                row = {"kind": kind, "classes": k, "seed": seed, "n": N, "size": SIZE, "share": SHARE}
                if "clean" in args.models:
                    if clean is None:  # the same images whatever the kind: trained once per (classes, seed)
                        start = time.perf_counter()
                        clean = scores(train(clean_twin, EPOCHS, seed)[0], held_out)
                        clean["seconds"] = time.perf_counter() - start
                    row["clean"] = clean
                if "plain" in args.models:
                    start = time.perf_counter()
                    row["plain"] = scores(train(biased, EPOCHS, seed)[0], held_out)
                    row["plain"]["seconds"] = time.perf_counter() - start
                masks = annotate(biased, SHARE, seed)
                for name, options in variants:
                    start = time.perf_counter()
                    model, history = train(biased, args.guided_epochs, seed, masks, options)
                    row[name] = scores(model, held_out)
                    row[name].update(options=options, seconds=time.perf_counter() - start,
                                     alignment=[float(a) for a in history["alignment_loss"]])
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps({key: (v if not isinstance(v, dict) else {a: b for a, b in v.items()
                                                                         if a in ("accuracy", "energy", "seconds")})
                                  for key, v in row.items()}), flush=True)


def table(path: str, guided: str = "defaults") -> str:
    """The markdown table of ``path``'s rows: per kind and classes, mean (and per-seed) accuracy and energy."""
    rows = [json.loads(line) for line in open(path)]
    lines = [
        "| shortcut | classes | accuracy without the cue: plain / clean / **guided** (per seed) | "
        "guided within 10 pts of clean | energy inside: plain / clean / guided |",
        "|---|---|---|---|---|",
    ]
    groups = {}
    for r in rows:
        if guided in r and "plain" in r and "clean" in r:
            groups.setdefault((r["kind"], r["classes"]), {})[r["seed"]] = r  # a later run replaces an earlier one
    for (kind, k), by_seed in sorted(groups.items(), key=lambda item: (list(KINDS).index(item[0][0]), item[0][1])):
        seeds = [by_seed[s] for s in sorted(by_seed)]

        def mean(model, key, seeds=seeds):
            return np.mean([r[model][key] for r in seeds])

        per_seed = " / ".join(f"{r[guided]['accuracy']:.0%}" for r in seeds)
        within = sum(r[guided]["accuracy"] >= r["clean"]["accuracy"] - 0.10 for r in seeds)
        lines.append(
            f"| {kind} | {k} | {mean('plain', 'accuracy'):.0%} / {mean('clean', 'accuracy'):.0%} / "
            f"**{mean(guided, 'accuracy'):.0%}** ({per_seed}) | {within} of {len(seeds)} | "
            f"{mean('plain', 'energy'):.0%} / {mean('clean', 'energy'):.0%} / {mean(guided, 'energy'):.0%} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--classes", default="2,3")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--models", default="plain,clean", help="the plain models to train besides the guided ones")
    p.add_argument("--variant", action="append", help="'name:key=value,...' GuidedTraining options (default: "
                   "'defaults', no options); repeat to compare")
    p.add_argument("--guided-epochs", type=int, default=GUIDED_EPOCHS)
    p.add_argument("--out", default="runs/guided_robustness.jsonl")
    p.add_argument("--table", default=None, help="also write the markdown table here")
    p.add_argument("--table-only", action="store_true", help="rebuild the table from --out, train nothing")
    args = p.parse_args(argv)
    args.kinds = args.kinds.split(",")
    args.classes = [int(c) for c in args.classes.split(",")]
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.models = args.models.split(",") if args.models else []
    if not args.table_only:
        run(args)
    text = table(args.out)
    print(f"\n{N} training images of {SIZE}x{SIZE}, masks on {SHARE:.0%}, {EPOCHS} epochs plain, "
          f"{args.guided_epochs} guided; held-out: 300 images without the cue\n{text}")
    if args.table:
        with open(args.table, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
