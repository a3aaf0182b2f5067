"""``evaluate()`` and ``format_table()``: every metric for every method, as a table."""

from __future__ import annotations

import sys

import keras
import numpy as np
import pytest

import keras_gradcam as kg
from keras_gradcam import metrics as M
from keras_gradcam.evaluate import COLUMNS, METRICS, SLOW_METRICS, evaluate, format_table


@pytest.fixture(scope="module")
def setup():
    keras.utils.set_random_seed(7)
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="c1")(inp)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(3, activation="softmax", name="head")(x)
    model = keras.Model(inp, out)
    x = np.random.default_rng(0).random((6, 16, 16, 3)).astype(np.float32)
    masks = np.zeros((6, 16, 16), bool)
    masks[:, 3:9, 5:12] = True
    return model, x, masks


def test_full_table_has_every_metric_for_every_method(setup):
    model, x, masks = setup
    weights = [w.copy() for w in model.get_weights()]
    rows = evaluate(model, x, ["gradcam", "gradcam++"], masks=masks, tolerance=2, steps=8, occlusion_patch=4,
                    occlusion_stride=4, randomization_images=3)
    for a, b in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert [r["method"] for r in rows] == ["gradcam", "gradcam++"]
    for row in rows:
        assert set(COLUMNS) <= set(row), set(COLUMNS) - set(row)
        assert row["n_images"] == 6 and row["seconds"] >= 0
        for key in ("energy_pointing_game", "pointing_game", "localization_accuracy", "localization_iou",
                    "deletion_auc", "insertion_auc", "map_area", "map_entropy"):
            assert 0.0 <= row[key] <= 1.0, key
        assert 0.0 <= row["average_drop"] <= 100.0 and 0.0 <= row["increase_in_confidence"] <= 100.0
        assert -1.0 <= row["occlusion_correlation"] <= 1.0
    assert rows[0]["win_rate"] + rows[1]["win_rate"] <= 100.0
    table = format_table(rows)
    assert table.splitlines()[0].startswith("| method ")
    assert len(table.splitlines()) == 4 and "gradcam++" in table



def test_fast_metrics_leave_out_the_slow_ones_and_keep_the_values(setup):
    model, x, masks = setup
    kw = {"masks": masks, "tolerance": 2, "steps": 8}
    fast = evaluate(model, x, ["gradcam"], metrics="fast", **kw)[0]
    assert set(SLOW_METRICS) == {"road", "occlusion_correlation", "randomization"}
    assert not {"road", "road_morf", "road_lerf", "occlusion_correlation", "randomization_similarity"} & set(fast)
    named = [m for m in METRICS if m not in SLOW_METRICS]
    ref = evaluate(model, x, ["gradcam"], metrics=named, **kw)[0]
    assert set(fast) == set(ref)
    for key in ("energy_pointing_game", "deletion_auc", "insertion_auc", "average_drop", "map_area"):
        assert fast[key] == pytest.approx(ref[key]), key
    assert "road" in evaluate(model, x[:2], ["gradcam"], metrics="all", steps=4, randomization_images=1,
                              occlusion_patch=8, occlusion_stride=8)[0]

def test_values_agree_with_the_metric_functions(setup):
    model, x, masks = setup
    labels = np.array([0, 1, 2, 0, 1, 2])
    rows = evaluate(model, x, ["gradcam"], masks=masks, targets=labels, tolerance=3, steps=8,
                    metrics=["energy_pointing_game", "pointing_game", "localization", "average_drop",
                             "deletion_auc", "insertion_auc", "win_rate"])
    h = kg.explain(model, x, method="gradcam", targets=labels).heatmaps
    row = rows[0]
    assert row["energy_pointing_game"] == pytest.approx(M.energy_pointing_game(h, masks))
    assert row["pointing_game"] == pytest.approx(M.pointing_game(h, masks, tolerance=3))
    assert row["localization_accuracy"] == M.localization(h, M.masks_to_boxes(masks)).accuracy
    assert row["average_drop"] == pytest.approx(M.average_drop(model, x, h, labels), rel=1e-6)
    assert row["deletion_auc"] == pytest.approx(M.deletion_auc(model, x, h, labels, steps=8), rel=1e-6)
    assert row["insertion_auc"] == pytest.approx(M.insertion_auc(model, x, h, labels, steps=8), rel=1e-6)
    assert row["win_rate"] is None  # one method: nothing to win against
    assert "occlusion_correlation" not in row


def test_boxes_alone_give_box_masks(setup):
    model, x, _ = setup
    boxes = np.tile([2, 2, 10, 12], (6, 1))
    row = evaluate(model, x, ["gradcam"], boxes=boxes, metrics=["energy_pointing_game", "localization"])[0]
    h = kg.explain(model, x, method="gradcam").heatmaps
    assert row["energy_pointing_game"] == pytest.approx(M.energy_pointing_game(h, M.boxes_to_masks(boxes, (16, 16))))
    assert row["localization_iou"] == pytest.approx(M.localization(h, boxes).ious.mean())


def test_without_ground_truth_localisation_is_skipped_or_refused(setup):
    model, x, _ = setup
    rows = evaluate(model, x, "gradcam", metrics=None, steps=4, occlusion_patch=8, occlusion_stride=8,
                    randomization_images=2)
    assert "pointing_game" not in rows[0] and "deletion_auc" in rows[0]
    with pytest.raises(ValueError, match="need ground truth"):
        evaluate(model, x, ["gradcam"], metrics=["pointing_game"])


def test_clear_errors(setup):
    model, x, masks = setup
    with pytest.raises(ValueError, match="unknown metrics"):
        evaluate(model, x, ["gradcam"], masks=masks, metrics=["accuracy"])
    with pytest.raises(ValueError, match="unknown method"):
        evaluate(model, x, ["gradcamm"], masks=masks)
    with pytest.raises(ValueError, match=r"masks has shape \(6, 8, 8\) but images\[..., 0\] has shape \(6, 16, 16\)"):
        evaluate(model, x, ["gradcam"], masks=masks[:, :8, :8])


def test_format_table_layout():
    rows = [{"method": "a", "x": 0.12345, "n": 3}, {"method": "bb", "x": None, "y": float("nan")}]
    table = format_table(rows, digits=2)
    assert table.splitlines() == [
        "| method |    x | n |   y |",
        "|:-------|-----:|--:|----:|",
        "| a      | 0.12 | 3 |   - |",
        "| bb     |    - | - | nan |",
    ]
    assert format_table(rows, columns=["x"]).splitlines()[0] == "|     x |"
    assert format_table([]) == ""


def test_metric_names_are_documented():
    assert "randomization" in METRICS and "randomization_similarity" in COLUMNS
    assert all(direction in ("higher", "lower", "") for _, direction in COLUMNS.values())


@pytest.mark.slow
def test_claims_script_runs_in_quick_mode(tmp_path, monkeypatch):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "claims.py"
    spec = importlib.util.spec_from_file_location("claims", path)
    claims = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "claims", claims)  # dataclasses look their module up there
    spec.loader.exec_module(claims)
    out = tmp_path / "claims.md"
    assert claims.main(["--quick", "--out", str(out)]) == 0
    page = out.read_text()
    for section in ("## Protocol", "## Every metric for every method", "## Claims", "## Reading the results"):
        assert section in page
    verdicts = [line for line in page.splitlines() if line.startswith(("- HOLDS", "- DIRECTION", "- DOES NOT"))]
    assert len(verdicts) == 7  # one verdict line per claim


def test_one_method_has_no_win_rate_and_the_notes_say_why(setup):
    model, x, masks = setup
    rows = evaluate(model, x, ["gradcam"], metrics=["average_drop", "win_rate"])
    assert rows[0]["win_rate"] is None
    assert any("win_rate: not computed" in note and "two or more" in note for note in rows.notes)
    table = format_table(rows)
    assert "\n\nNotes:\n- win_rate: not computed" in table
    header, _, first = (line.split("|") for line in table.splitlines()[:3])
    assert first[[c.strip() for c in header].index("win_rate")].strip() == "-"  # not computed
    rows2 = evaluate(model, x, ["gradcam", "gradcam++"], metrics=["win_rate"])
    assert rows2.notes == [] and "Notes:" not in format_table(rows2)
    assert rows2[0]["win_rate"] + rows2[1]["win_rate"] <= 100.0


def test_images_without_object_are_left_out_of_the_localisation_metrics(setup):
    model, x, masks = setup
    masks = masks.copy()
    masks[2] = False  # image 2 has no object
    with pytest.warns(UserWarning, match=r"leave out 1 of 6 images whose mask is empty.*\[2\]"):
        rows = evaluate(model, x, ["gradcam"], masks=masks, metrics=["energy_pointing_game", "pointing_game"],
                        tolerance=0)
    h = kg.explain(model, x, method="gradcam").heatmaps.astype(np.float64)
    keep = [0, 1, 3, 4, 5]
    energy = [(h[i] * masks[i]).sum() / h[i].sum() for i in keep]  # all maps are non-zero here
    assert rows[0]["energy_pointing_game"] == pytest.approx(np.mean(energy), rel=1e-6)
    peaks = [np.unravel_index(np.argmax(h[i]), h[i].shape) for i in keep]
    assert rows[0]["pointing_game"] == pytest.approx(np.mean([masks[i][p] for i, p in zip(keep, peaks)]))
    assert any("leave out 1 of 6 images" in note for note in rows.notes)


def test_format_table_prints_notes_given_explicitly():
    table = format_table([{"method": "a"}], notes=["one", "two"])
    assert table.splitlines()[-3:] == ["Notes:", "- one", "- two"]


def test_default_pointing_tolerance_scales_with_the_images(setup):
    """Masks of one pixel 4 px from each map's maximum: a miss with the default (15 px at 224 px
    scaled: 1.07 px at 16 px), a hit with TorchRay's fixed 15 px."""
    model, x, _ = setup
    h = kg.explain(model, x, method="gradcam").heatmaps
    masks = np.zeros(h.shape, bool)
    for i, (py, px) in enumerate(zip(*np.unravel_index(h.reshape(len(h), -1).argmax(1), h.shape[1:]))):
        masks[i, py + 4 if py < 8 else py - 4, px] = True  # d^2 = 16
    rows = evaluate(model, x, ["gradcam"], masks=masks, metrics=["pointing_game"])
    assert rows[0]["pointing_game"] == 0.0
    rows = evaluate(model, x, ["gradcam"], masks=masks, metrics=["pointing_game"], tolerance=15)
    assert rows[0]["pointing_game"] == 1.0
    with pytest.raises(ValueError, match="tolerance must be a finite number >= 0; got -1.0"):
        evaluate(model, x, ["gradcam"], masks=masks, metrics=["pointing_game"], tolerance=-1)
