"""The training callback, the metrics and the command line on vision transformers (token layers).

The model is the functional ViT of ``tests/models.py`` (built-in layers only, so it saves as
``.keras`` and the CLI can load it): 16x16 images, 4x4 patches (a 4x4 grid), a class token, two
blocks. The explicit layer is ``block0_out``, the first block's output: it feeds the second
attention, so the class-token head's gradient reaches its patch tokens (after the last attention
it would not: every op there is per token). Each check compares what the tool reports with the same quantity computed directly from
``kg.explain`` and the metric functions, or from a hand count (the grid column of ``layers``).
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from models import vit_model

import keras_gradcam as kg
from keras_gradcam import datasets
from keras_gradcam.cli import main
from keras_gradcam.cli.errors import EXIT_LAYER
from keras_gradcam.io import write_png

SIZE = 16


@pytest.fixture(scope="module")
def shapes():
    ds = datasets.make_shapes(n=24, image_size=SIZE, seed=3)
    probes = ds[datasets.make_probe_set(ds, per_class=1)]
    return ds, probes


def compiled_vit():
    model = vit_model(image=SIZE, patch=4, depth=2, classes=3, seed=1)
    model.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


# -- the callback --------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:.*maps are all zero:RuntimeWarning")
@pytest.mark.parametrize(
    "layer, options, explained",
    [(None, {}, "block1_norm1"), ("block0_out", {"grid": (4, 4), "prefix_tokens": 1}, "block0_out")],
)
def test_callback_logs_a_token_layer_during_fit(tmp_path, shapes, layer, options, explained):
    ds, probes = shapes
    model = compiled_vit()
    cb = kg.GradCAMCallback(probes.images, tmp_path, probe_labels=probes.labels, probe_masks=probes.masks,
                            method="gradcam", layer=layer, method_options=options or None)
    model.fit(ds.images, ds.labels, epochs=1, batch_size=8, verbose=0, callbacks=[cb])
    assert cb.history["epoch"] == [0] and cb.explainer.layer == explained
    info = cb.explainer.layers[0]
    assert info.grid == (4, 4) and info.prefix_tokens == 1
    # the logged bias score is the energy share of the maps of the trained model, recomputed here
    exp = kg.explain(model, probes.images, method="gradcam", layer=explained, targets=cb._target_arg)
    assert exp.heatmaps.max() == 1.0
    expected = kg.metrics.energy_pointing_game(exp.heatmaps, probes.masks)
    np.testing.assert_allclose(cb.history["energy_inside_object"][-1], expected, rtol=1e-5)
    assert any(p.name.startswith("events") for p in (tmp_path / "gradcam").iterdir())


# -- the metrics ---------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:.*maps are all zero:RuntimeWarning")
def test_evaluate_and_the_metrics_on_a_token_layer(shapes):
    ds, _ = shapes
    model = vit_model(image=SIZE, patch=4, depth=2, classes=3, seed=1)
    x, masks = ds.images[:4], ds.masks[:4]
    rows = kg.evaluate(model, x, methods=("gradcam", "ablationcam"), masks=masks, layer="block0_out",
                       method_options={"ablationcam": {"verbose": 0, "drop": "absolute"}}, steps=4,
                       metrics=["energy_pointing_game", "map_area", "deletion_auc", "average_drop", "win_rate"])
    assert [r["method"] for r in rows] == ["gradcam", "ablationcam"]
    for row in rows:
        options = {"verbose": 0, "drop": "absolute"} if row["method"] == "ablationcam" else {}
        exp = kg.explain(model, x, method=row["method"], layer="block0_out", **options)
        assert exp.layer_heatmaps.shape == (4, 4, 4) and exp.heatmaps.max() == 1.0  # real maps, not zeros
        np.testing.assert_allclose(row["energy_pointing_game"], kg.metrics.energy_pointing_game(exp.heatmaps, masks), rtol=1e-5)
        np.testing.assert_allclose(row["map_area"], kg.metrics.map_area(exp.heatmaps), rtol=1e-6)
        np.testing.assert_allclose(
            row["deletion_auc"], kg.metrics.deletion_auc(model, x, exp.heatmaps, exp.targets, steps=4), rtol=1e-5
        )
        np.testing.assert_allclose(
            row["average_drop"], kg.metrics.average_drop(model, x, exp.heatmaps, exp.targets), rtol=1e-5
        )
        assert row["win_rate"] is not None and 0 <= row["win_rate"] <= 100


def reference_maps_are_real(model, x):
    heat = kg.explain(model, x, method="gradcam", layer="block0_out").heatmaps
    return bool((heat.reshape(len(x), -1).max(axis=1) == 1.0).all())


def test_randomization_check_keeps_the_token_options():
    model = vit_model(image=SIZE, patch=4, depth=2, classes=3, seed=1)
    x = np.random.default_rng(0).random((3, SIZE, SIZE, 3)).astype(np.float32)
    res = kg.metrics.randomization_check(model, x, "gradcam", "block0_out", grid=(4, 4), prefix_tokens=1,
                                         layers=["block0_mlp2"])
    assert res.layer == "block0_out" and res.steps == ("none", "block0_mlp2")
    assert reference_maps_are_real(model, x)
    np.testing.assert_allclose(res.spearman[0], 1.0, atol=1e-6)  # the untouched copy gives the same maps
    assert model.get_layer("logits").get_weights()[0].std() > 0  # and the user's model keeps its weights


# -- the command line ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved_vit(tmp_path_factory):
    root = tmp_path_factory.mktemp("vit_cli")
    model = vit_model(image=SIZE, patch=4, depth=2, classes=3, seed=2)
    model.save(root / "vit.keras")
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    paths = []
    for i, img in enumerate(images):
        write_png(root / f"img{i}.png", img)
        paths.append(str(root / f"img{i}.png"))
    return root, model, images, paths


def cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_cli_layers_shows_the_token_grid(saved_vit, capsys):
    root, *_ = saved_vit
    assert main(["layers", str(root / "vit.keras")]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = cells(lines[1])
    assert header[-1] == "token grid"
    rows = {cells(line)[0].lstrip("* "): cells(line) for line in lines[3:]}
    assert rows["patch"][-1] == "-"  # a feature map: no token grid
    assert rows["tokens"][-1] == "4x4"  # 16 tokens, no class token yet
    for name in ("with_cls", "block0_norm1", "block0_out", "block1_norm1", "final_norm"):
        assert rows[name][-1] == "4x4 +1", name
    assert [line for line in lines if cells(line)[0].startswith("* ")] and cells(
        next(line for line in lines if cells(line)[0].startswith("* "))
    )[0] == "* block1_norm1"


def test_cli_explains_a_token_layer_of_a_saved_vit(saved_vit, tmp_path, capsys):
    root, model, images, paths = saved_vit
    out = tmp_path / "out"
    code = main(["explain", str(root / "vit.keras"), *paths, "--layer", "block0_out", "--method", "gradcam",
                 "--preprocess", "none", "--out", str(out), "--progress", "never"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "'block0_out'" in printed.out
    heat = np.load(out / "heatmaps.npy")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["layer"] == "block0_out" and heat.shape == (3, SIZE, SIZE)
    assert (heat.reshape(3, -1).max(axis=1) == 1.0).all()
    expected = kg.explain(model, images.astype(np.float32), method="gradcam", layer="block0_out")
    np.testing.assert_allclose(heat, expected.heatmaps, atol=1e-5)
    np.testing.assert_allclose(np.load(out / "layer_heatmaps.npy"), expected.layer_heatmaps, rtol=1e-5, atol=1e-7)


def test_cli_grid_and_prefix_tokens_reach_the_explainer(saved_vit, tmp_path, capsys):
    root, model, images, paths = saved_vit
    argv = ["explain", str(root / "vit.keras"), *paths[:1], "--layer", "block0_out", "--method", "gradcam",
            "--preprocess", "none", "--progress", "never"]
    assert main(argv + ["--grid", "4x4", "--prefix-tokens", "1", "--out", str(tmp_path / "a")]) == 0
    expected = kg.explain(model, images[:1].astype(np.float32), method="gradcam", layer="block0_out")
    np.testing.assert_allclose(np.load(tmp_path / "a" / "heatmaps.npy"), expected.heatmaps, atol=1e-5)
    capsys.readouterr()
    assert main(argv + ["--grid", "3x3", "--prefix-tokens", "1", "--out", str(tmp_path / "b")]) == EXIT_LAYER
    err = capsys.readouterr().err
    assert "grid=(3, 3)" in err and "outputs 17" in err
    assert main(argv + ["--prefix-tokens", "x", "--out", str(tmp_path / "c")]) == 2
    assert "expected an int >= 0" in capsys.readouterr().err


@keras.saving.register_keras_serializable(package="kg_test_tokens")
class Patchify(keras.layers.Layer):
    """Cut a (batch, 8, 8, 1) image into ``count`` 4-pixel tokens inside one layer: no patch map in the graph."""

    def __init__(self, count, **kwargs):
        super().__init__(**kwargs)
        self.count = count

    def call(self, x):
        flat = keras.ops.reshape(x, (-1, 64))
        return keras.ops.stack([flat[:, 4 * i : 4 * i + 4] for i in range(self.count)], axis=1)

    def get_config(self):
        return {**super().get_config(), "count": self.count}


def test_cli_asks_for_grid_where_the_model_does_not_tell_it(tmp_path, capsys):
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Dense(3, name="embed")(Patchify(6, name="patches")(inp))  # 6 tokens: no square grid
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(x)))
    model.save(tmp_path / "p.keras")
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 1), dtype=np.uint8)
    write_png(tmp_path / "a.png", np.repeat(image, 3, axis=-1))
    code = main(["layers", str(tmp_path / "p.keras")])
    printed = capsys.readouterr()
    assert code == 0, (printed.out, printed.err)
    rows = {cells(line)[0].lstrip("* "): cells(line) for line in printed.out.splitlines()[3:] if line.startswith("|")}
    assert rows["embed"][-1] == "?"
    assert "no default layer:" in printed.out and "grid=(rows, cols)" in printed.out
    argv = ["explain", str(tmp_path / "p.keras"), str(tmp_path / "a.png"), "--layer", "embed", "--method", "gradcam",
            "--progress", "never"]
    assert main(argv + ["--out", str(tmp_path / "a")]) == EXIT_LAYER
    err = capsys.readouterr().err
    assert "grid=(rows, cols)" in err and "--grid ROWSxCOLS and --prefix-tokens N" in err
    assert main(argv + ["--grid", "2x3", "--prefix-tokens", "0", "--out", str(tmp_path / "b")]) == 0, capsys.readouterr().err
    assert np.load(tmp_path / "b" / "layer_heatmaps.npy").shape == (1, 2, 3)
