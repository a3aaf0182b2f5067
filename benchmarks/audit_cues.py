"""The table of docs/audit.md, "What it finds, and what it does not": the audit on each cue.

For each cue made with ``keras_gradcam.datasets`` (corner watermark, coloured border, tinted
background, none) a small CNN (``tests/models.py``'s ``audit_cnn``, the one ``tests/test_audit.py`` trains: two conv blocks with batch
norm, a last conv, global pooling, softmax) is trained on 900 32x32 shapes, 4 epochs (6 for the
clean one, as in the tests), and audited with Grad-CAM++ on 300 held-out shapes with their object
masks. Prints one markdown row per cue and writes the numbers as JSON.

    python benchmarks/audit_cues.py [--out outputs/audit_cues.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

import keras_gradcam as kg
from keras_gradcam import datasets

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from models import trained_audit_cnn  # noqa: E402  the tests' CNN, so the table is what the tests check

SIZE, N_TRAIN, N_TEST = 32, 900, 300


def images(ds: datasets.SyntheticShapes, cue: str | None) -> np.ndarray:
    """The images of ``ds``, regenerated with ``cue`` on every image (same seed: same objects)."""
    if cue is None:
        return ds.images
    return datasets.make_shapes(**{**ds.config, "spurious_rate": 1.0, "cue": cue}).images


def measure(cue: str | None) -> dict:
    train = datasets.make_shapes(n=N_TRAIN, image_size=SIZE, seed=0)
    test = datasets.make_shapes(n=N_TEST, image_size=SIZE, seed=1)
    model = trained_audit_cnn(images(train, cue), train.labels, epochs=4 if cue else 6)
    x = images(test, cue)
    kg.audit(model, x[:8], test.labels[:8], masks=test.masks[:8], layer="last_conv")  # compiled once, not timed
    start = time.perf_counter()
    report = kg.audit(model, x, test.labels, masks=test.masks, layer="last_conv")
    seconds = time.perf_counter() - start
    return {
        "cue": cue or "none",
        "audit_seconds": round(seconds, 2),
        "flagged": report.flagged,
        "classes": [
            {"name": c.name, "images": c.images, "accuracy": c.accuracy, "flagged": c.flagged, "region": c.region,
             "accuracy_after": c.accuracy_after, "energy": c.energy, "wrong_reason": c.wrong_reason}
            for c in report.classes
        ],
    }


def span(values, fmt) -> str:
    lo, hi = min(values), max(values)
    return fmt(lo) if fmt(lo) == fmt(hi) else f"{fmt(lo)}-{fmt(hi)}"


def row(m: dict) -> str:
    cs = m["classes"]
    flagged = [c for c in cs if c["flagged"]]
    pct = lambda v: f"{100 * v:.0f} %"  # noqa: E731
    regions = sorted({c["region"] for c in flagged})
    covered = (f"{span([c['accuracy'] for c in flagged], pct)} -> "
               + ", ".join(pct(c["accuracy_after"]) for c in flagged)) if flagged else "-"
    return " | ".join([
        f"| {m['cue']}", f"{len(flagged)} of {len(cs)} classes" if flagged else "none",
        "; ".join(regions) or "-", covered,
        span([c["energy"] for c in cs], lambda v: f"{100 * v:.0f}") + " %",
        span([c["wrong_reason"] / c["images"] for c in cs], lambda v: f"{100 * v:.0f}") + " %",
        span([c["accuracy"] for c in cs], pct) + f" | {m['audit_seconds']} s |",
    ])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="outputs/audit_cues.json")
    args = p.parse_args()
    results = [measure(cue) for cue in ("corner", "border", "background", None)]
    print("| cue | flagged | region | accuracy, covered | energy on the object | right for the wrong reason "
          "| accuracy | audit time |")
    for m in results:
        print(row(m))
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
