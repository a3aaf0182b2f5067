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
