"""Which layer of a vision transformer localises best: the evidence behind ``layer=None``.

Small functional ViTs (``examples/vision_transformer.py``'s ``build_vit``: patch embedding, class
token, pre-norm blocks, final LayerNorm, head) are trained for 20 epochs each (about a minute on
two idle CPU cores) on ``keras_gradcam.datasets`` shapes, in two head variants (the class token;
the mean of the patch tokens) and several seeds. On held-out images, Grad-CAM and Grad-CAM++ explain the true class at
each candidate layer:

- ``block_input``: the last block's input (the residual stream before it);
- ``attn_input``: the last attention's input, the last block's first LayerNorm (``norm1``);
- ``block_output``: the last block's output, before the final norm;
- ``final_norm``: the final LayerNorm's output.

Reported: the share of the map's energy inside the object masks (``metrics.energy_pointing_game``)
and the pointing game (tolerance 0 px), against the uniform baseline (the objects' area share,
which both a map spread evenly and a random point score), and the share of maps that are all zero
(those have no energy share and are left out of it). Medians over seeds.

    python benchmarks/vit_layers.py [--seeds 0 1 2] [--epochs 20] [--json outputs/vit_layers.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_gradcam as kg  # noqa: E402
from keras_gradcam import datasets, metrics  # noqa: E402

_EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "vision_transformer.py"
_spec = importlib.util.spec_from_file_location("vision_transformer_example", _EXAMPLE)
vit = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vit)

METHODS = ("gradcam", "gradcam++")


def candidates(depth: int) -> dict[str, str]:
    return {
        "block_input": f"block{depth - 1}_out" if depth > 1 else "pos_embed",
        "attn_input": f"block{depth}_norm1",
        "block_output": f"block{depth}_out",
        "final_norm": "final_norm",
    }


def measure(model, test, layer: str, method: str) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # all-zero maps are counted below
        exp = kg.explain(model, test.images, method=method, layer=layer, targets=test.labels, batch_size=100)
        heat = exp.heatmaps
        zero = heat.reshape(len(heat), -1).max(axis=1) <= 0
        energy = metrics.energy_pointing_game(heat[~zero], test.masks[~zero]) if (~zero).any() else float("nan")
        point = metrics.pointing_game(heat[~zero], test.masks[~zero], tolerance=0) if (~zero).any() else float("nan")
    return {"energy": float(energy), "pointing": float(point), "zero_maps": float(zero.mean())}


def run(seeds, epochs: int, depth: int, n_train: int, n_test: int) -> list[dict]:
    data = datasets.make_shapes(n=n_train, image_size=32, seed=100)
    test = datasets.make_shapes(n=n_test, image_size=32, seed=101)
    rows = []
    for head in ("cls", "mean"):
        for seed in seeds:
            keras.utils.set_random_seed(seed)
            model = vit.build_vit(depth=depth, classes=data.num_classes, head=head)
            ran = vit.train(model, data, epochs)
            accuracy = float(model.evaluate(test.images, test.labels, verbose=0)[1])
            default = kg.GradCAM(model).layer  # what layer=None picks
            row = {"head": head, "seed": seed, "epochs": ran, "accuracy": accuracy, "default": default,
                   "uniform": float(test.masks.mean()), "layers": {}}
            for name, layer in candidates(depth).items():
                row["layers"][name] = {"layer": layer, **{m: measure(model, test, layer, m) for m in METHODS}}
            rows.append(row)
            print(f"[{head} seed {seed}] {ran} epochs, accuracy {accuracy:.2f}, layer=None -> {default!r}: "
                  + ", ".join(f"{k} {v['gradcam']['energy']:.2f}/{v['gradcam++']['energy']:.2f}"
                              for k, v in row["layers"].items()), flush=True)
    return rows


def _median(rows: list[dict], layer: str, method: str, key: str) -> str:
    vals = [r["layers"][layer][method][key] for r in rows]
    return "n/a" if all(np.isnan(vals)) else f"{np.nanmedian(vals):.2f}"


def table(rows: list[dict]) -> str:
    """Markdown: per head and layer, medians over seeds of each method's energy, pointing, zero maps."""
    lines = ["| head | layer | Grad-CAM energy | Grad-CAM pointing | Grad-CAM++ energy | Grad-CAM++ pointing "
             "| all-zero maps (Grad-CAM / ++) |", "|---|---|---|---|---|---|---|"]
    for head in ("cls", "mean"):
        mine = [r for r in rows if r["head"] == head]
        if not mine:
            continue
        acc, uni = np.median([r["accuracy"] for r in mine]), np.median([r["uniform"] for r in mine])
        for name in mine[0]["layers"]:
            cells = [_median(mine, name, m, k) for m in METHODS for k in ("energy", "pointing")]
            zero = " / ".join(f"{np.median([r['layers'][name][m]['zero_maps'] for r in mine]):.0%}" for m in METHODS)
            lines.append(f"| {head} (accuracy {acc:.2f}) | `{name}` | " + " | ".join(cells) + f" | {zero} |")
        lines.append(f"| {head} | uniform baseline | {uni:.2f} | {uni:.2f} | {uni:.2f} | {uni:.2f} | |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=20, help="training epochs per model (20: about a minute on 2 idle cores)")
    p.add_argument("--depth", type=int, default=3, help="transformer blocks")
    p.add_argument("--n-train", type=int, default=2400)
    p.add_argument("--n-test", type=int, default=300)
    p.add_argument("--json", default="outputs/vit_layers.json")
    p.add_argument("--table", metavar="JSON", help="print the table of a finished run's JSON and stop")
    args = p.parse_args(argv)
    if args.table:
        with open(args.table) as f:
            rows = json.load(f)
        print(table(rows))
        return rows
    rows = run(args.seeds, args.epochs, args.depth, args.n_train, args.n_test)
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(rows, f, indent=1)
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()
