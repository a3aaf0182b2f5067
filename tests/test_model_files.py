"""Model files that exist but cannot be read: said so, with their size, by the Python helper and every command.

Keras reports a truncated ``.keras`` file, or a text file renamed ``.keras``, as "File not found";
:func:`keras_gradcam.io.load_model_file` (used by the command line and the Beam handler) says
that the file is there, how large it is and what is wrong with it.
"""

import re

import keras
import numpy as np
import pytest

from keras_gradcam.cli import CLIError, main
from keras_gradcam.cli.files import load_model
from keras_gradcam.io import ModelFileError, load_model_file, model_file_problem, write_png


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("model_files")
    inp = keras.Input((8, 8, 3))
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3)(inp))))
    model.save(root / "good.keras")
    model.save(root / "good.h5")
    whole = (root / "good.keras").read_bytes()
    (root / "half.keras").write_bytes(whole[: len(whole) // 2])  # a half-finished copy
    (root / "notes.keras").write_text("these are my notes, not a model\n")  # a text file renamed .keras
    (root / "empty.keras").write_bytes(b"")
    (root / "legacy.keras").write_bytes((root / "good.h5").read_bytes())  # an .h5 file named .keras
    h5 = (root / "good.h5").read_bytes()
    (root / "half.h5").write_bytes(h5[: len(h5) // 2])
    write_png(root / "img.png", np.zeros((8, 8, 3), np.uint8))
    (root / "data" / "a").mkdir(parents=True)
    write_png(root / "data" / "a" / "1.png", np.zeros((8, 8, 3), np.uint8))
    return root


BAD = {
    "half.keras": "truncated",
    "notes.keras": "not a .keras file",
    "empty.keras": "is empty",
    "legacy.keras": "rename it to end in .h5",
    "half.h5": "truncated or damaged",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_the_python_helper_says_the_file_exists_with_its_size(files, name):
    path = files / name
    with pytest.raises(ModelFileError) as info:
        load_model_file(path, compile=False)
    text = str(info.value)
    assert isinstance(info.value, ValueError)
    assert f"model file {str(path)!r} exists ({path.stat().st_size} bytes)" in text, text
    assert "not a readable" in text and BAD[name] in text, text
    assert "File not found" not in text
    with pytest.raises(ModelFileError, match=re.escape(f"({path.stat().st_size} bytes)")):
        load_model_file(str(path))  # a str path too


def test_good_files_load_and_a_missing_file_is_not_found(files):
    for name in ("good.keras", "good.h5"):
        assert model_file_problem(files / name) is None
        assert isinstance(load_model_file(files / name, compile=False), keras.Model)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model_file(files / "missing.keras")


@pytest.mark.parametrize("name", ["half.keras", "notes.keras"])
@pytest.mark.parametrize("command", ["explain", "layers", "evaluate", "audit"])
def test_every_command_says_the_model_file_exists_but_is_not_readable(files, tmp_path, capsys, command, name):
    model = str(files / name)
    argv = {
        "explain": ["explain", model, files / "img.png", "--out", tmp_path / "out"],
        "layers": ["layers", model],
        "evaluate": ["evaluate", model, files / "img.png"],
        "audit": ["audit", model, files / "data", "--out", tmp_path / "out"],
    }[command]
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 5 and out == "", err
    (line,) = [line for line in err.splitlines() if line.startswith("keras-gradcam: error: ")]
    size = (files / name).stat().st_size
    assert f"model file {model!r} exists ({size} bytes) but is not a readable Keras archive" in line, line
    assert BAD[name] in line and "File not found" not in line, line


def test_the_cli_helper_raises_the_same_words(files):
    with pytest.raises(CLIError, match=r"exists \(\d+ bytes\) but is not a readable Keras archive.*truncated"):
        load_model(str(files / "half.keras"))
