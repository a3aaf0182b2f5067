"""``keras-gradcam audit MODEL DATA_DIR --out DIR``: a folder of class folders in, a report out.

The model reads only the top-left 4x4 patch (class 0 = its mean red, class 1 = its mean green,
through a ``Cropping2D`` so that it saves as ``.keras``); the images carry a red or green corner.
The audit must flag both classes at "the top-left 6 %" and write index.html and summary.json.
"""

import json

import keras
import numpy as np
import pytest

from keras_gradcam.cli import main
from keras_gradcam.io import write_png

SIZE = 16


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_audit")
    inp = keras.Input((SIZE, SIZE, 3))
    conv = keras.layers.Conv2D(2, 1, use_bias=False, name="conv")
    h = keras.layers.Cropping2D(((0, SIZE - 4), (0, SIZE - 4)))(conv(inp))
    dense = keras.layers.Dense(2, use_bias=False, name="head")
    model = keras.Model(inp, keras.layers.Softmax()(dense(keras.layers.GlobalAveragePooling2D()(h))))
    conv.set_weights([np.array([[[[1, 0], [0, 1], [0, 0]]]], np.float32)])
    dense.set_weights([100 * np.eye(2, dtype=np.float32)])
    model.save(root / "m.keras")
    data = root / "data"
    for c, name in enumerate(("a_red", "b_green")):
        (data / name).mkdir(parents=True)
        for i in range(6):
            img = np.full((SIZE, SIZE, 3), (25, 75, 125), np.uint8)
            img[:4, :4] = 0
            img[:4, :4, c] = 255
            write_png(data / name / f"{i}.png", img)
    return root


def test_audit_command_flags_the_corner_and_writes_the_report(files, capsys):
    out = files / "audit"
    code = main(["audit", str(files / "m.keras"), str(files / "data"), "--out", str(out), "--method", "hirescam",
                 "--layer", "conv", "--batch-size", "4"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    # folders in alphabetical order: a_red = class 0, as the model reads red
    assert "| 0 a_red" in printed.out and "the top-left 6 %" in printed.out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 12 and [c["name"] for c in summary["classes"]] == ["a_red", "b_green"]
    assert all(c["flagged"] and c["region"] == "the top-left 6 %" for c in summary["classes"])
    assert [c["accuracy"] for c in summary["classes"]] == [1.0, 1.0]
    # the mean colour has more green than red (the background is (25, 75, 125)): covered, all read green
    assert [c["accuracy_after"] for c in summary["classes"]] == [0.0, 1.0]
    assert "data:image/png;base64," in (out / "index.html").read_text()
    assert "Found 12 files" in printed.err  # Keras's own message kept off stdout


def test_audit_command_errors(files, capsys):
    code = main(["audit", str(files / "m.keras"), str(files / "nowhere"), "--out", str(files / "o")])
    assert code == 3 and "data folder" in capsys.readouterr().err
    code = main(["audit", str(files / "m.keras"), str(files / "m.keras"), "--out", str(files / "o")])
    assert code == 2 and "one subfolder of images per class" in capsys.readouterr().err
    (files / "empty").mkdir()
    code = main(["audit", str(files / "m.keras"), str(files / "empty"), "--out", str(files / "o")])
    assert code == 4 and "cannot read DATA_DIR" in capsys.readouterr().err


def _write_masks(root, corner_classes=("a_red",)):
    """Masks at 32 px (twice the image size) in DATA_DIR's layout: grey 200 = object, grey 100 = background.

    a_red's masks mark the top-left 8x8 (the image's 4x4 corner, where the model looks), b_green's
    the centre; the background's grey 100 is nonzero, so a threshold at "nonzero" would make
    every mask the whole image.
    """
    masks = root / "masks"
    for name in ("a_red", "b_green"):
        (masks / name).mkdir(parents=True, exist_ok=True)
        for i in range(6):
            m = np.full((2 * SIZE, 2 * SIZE, 1), 100, np.uint8)
            if name in corner_classes:
                m[:8, :8] = 200
            else:
                m[8:24, 8:24] = 200
            write_png(masks / name / f"{i}.png", m)
    return masks


def test_audit_command_reads_masks_laid_out_like_the_data(files, capsys):
    masks = _write_masks(files)
    out = files / "audit_masks"
    code = main(["audit", str(files / "m.keras"), str(files / "data"), "--out", str(out), "--method", "hirescam",
                 "--layer", "conv", "--batch-size", "4", "--masks", str(masks)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    summary = json.loads((out / "summary.json").read_text())
    red, green = summary["classes"]
    # HiResCAM's map is zero outside the 4x4 corner the model reads: all of it lies on a_red's
    # objects (the corner, 8x8 at 32 px -> 4x4 at 16 px), none on b_green's (the centre)
    assert red["energy"] == pytest.approx(1.0) and green["energy"] == pytest.approx(0.0)
    # right (probability ~1) while the map's maximum misses the object: all of b_green, none of a_red
    assert red["wrong_reason"] == 0 and green["wrong_reason"] == 6


def test_audit_command_mask_errors(files, capsys):
    masks = _write_masks(files)
    (masks / "b_green" / "3.png").unlink()
    args = ["audit", str(files / "m.keras"), str(files / "data"), "--out", str(files / "o"), "--layer", "conv"]
    code = main(args + ["--masks", str(masks)])
    err = capsys.readouterr().err
    assert code == 3 and "no mask for image" in err and str(masks / "b_green" / "3") + ".png" in err and "1 of 12" in err
    assert main(args + ["--masks", str(files / "nowhere")]) == 3 and "mask folder" in capsys.readouterr().err
    assert main(args + ["--masks", str(files / "m.keras")]) == 2
    (masks / "b_green" / "3.png").write_bytes(b"not a png")
    code = main(args + ["--masks", str(masks)])
    assert code == 4 and f"cannot read mask {str(masks / 'b_green' / '3.png')!r}" in capsys.readouterr().err


# -- class folders matched to classes by name; a broken image named ------------------------------
def _copy_classes(files, dest, folders):
    """A DATA_DIR holding only ``folders`` (copies of the fixture's class folders, or new names for them)."""
    for source, name in folders.items():
        (dest / name).mkdir(parents=True)
        for image in sorted((files / "data" / source).iterdir()):
            (dest / name / image.name).write_bytes(image.read_bytes())
    return dest


def test_audit_command_matches_class_folders_to_classes_by_name(files, tmp_path, capsys):
    """DATA_DIR with only b_green/: with --class-names [a_red, b_green] its images are class 1, not class 0."""
    data = _copy_classes(files, tmp_path / "data", {"b_green": "b_green"})
    names = tmp_path / "names.txt"
    names.write_text("a_red\nb_green\n")
    args = ["audit", str(files / "m.keras"), str(data), "--method", "hirescam", "--layer", "conv", "--batch-size", "4"]
    code = main(args + ["--out", str(tmp_path / "out"), "--class-names", str(names)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    red, green = summary["classes"]
    # the model reads the green corner as class 1: every image is right once it is labelled class 1
    assert (red["name"], red["images"]) == ("a_red", 0)
    assert (green["name"], green["images"], green["accuracy"]) == ("b_green", 6, 1.0)
    # a folder that names no class is refused, naming the folders and the classes
    _copy_classes(files, data, {"a_red": "c_blue"})
    assert main(args + ["--out", str(tmp_path / "o2"), "--class-names", str(names)]) == 2
    err = capsys.readouterr().err
    assert "folder(s) ['c_blue'] that name no class of --class-names ['a_red', 'b_green']" in err
    assert "DATA_DIR's folders: ['b_green', 'c_blue']" in err
    # without --class-names, 1 folder for 2 classes cannot be matched by order: said as it is
    only = _copy_classes(files, tmp_path / "only", {"b_green": "b_green"})
    code = main(["audit", str(files / "m.keras"), str(only), "--out", str(tmp_path / "o3"), "--layer", "conv"])
    err = capsys.readouterr().err
    assert code == 2 and "has 1 class folder(s) ['b_green'], but the model has 2 classes" in err
    assert "pass --class-names" in err.lower() and "class_names has" not in err


def test_audit_command_names_the_one_broken_image_among_good_ones(files, tmp_path, capsys):
    data = _copy_classes(files, tmp_path / "data", {"a_red": "a_red", "b_green": "b_green"})
    broken = data / "b_green" / "3.png"
    broken.write_bytes(broken.read_bytes()[:40])  # a half-copied PNG
    code = main(["audit", str(files / "m.keras"), str(data), "--out", str(tmp_path / "o"), "--layer", "conv",
                 "--batch-size", "4"])
    err = capsys.readouterr().err
    assert code == 4 and f"cannot read image {str(broken)!r}" in err, err
    assert "IteratorGetNext" not in err and "Traceback" not in err
