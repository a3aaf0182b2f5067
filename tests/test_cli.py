"""The keras-gradcam command: explain, layers, methods, evaluate, --help, exit codes and messages.

Commands run in-process through ``main(argv)`` (one TensorFlow import for the whole file) on a
tiny nested model saved as ``.keras`` and ``.h5``; one test runs ``python -m keras_gradcam`` as a
person would, to check the entry point and that errors reach stderr.
"""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gradcam as kg
from keras_gradcam import cli
from keras_gradcam.cli import EXIT_CODES, main, preprocess
from keras_gradcam.cli.commands import target_classes
from keras_gradcam.cli.errors import EXIT_TARGET
from keras_gradcam.io import write_png

SIZE = 24


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A nested model saved both ways, three PNG images, a JPEG, a broken file and masks."""
    root = tmp_path_factory.mktemp("cli")
    keras.utils.set_random_seed(0)
    inner_in = keras.Input((SIZE, SIZE, 3))
    inner = keras.Model(inner_in, keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inner_in),
                        name="backbone")
    inputs = keras.Input((SIZE, SIZE, 3))
    x = inner(inputs)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="head")(x), name="outer")
    model.save(root / "m.keras")
    model.save(root / "m.h5")
    rng = np.random.default_rng(0)
    images = []
    for i in range(3):
        img = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)  # another size: resized on load
        write_png(root / f"img{i}.png", img)
        images.append(str(root / f"img{i}.png"))
    tf.io.write_file(str(root / "photo.jpg"), tf.io.encode_jpeg(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)))
    (root / "broken.png").write_bytes(b"\x89PNG this is not an image")
    (root / "notes.txt").write_text("not a model")
    masks = root / "masks"
    masks.mkdir()
    for i in range(3):
        m = np.zeros((30, 40), np.uint8)
        m[5:20, 10:30] = 255
        write_png(masks / f"img{i}.png", m)
    (root / "names.txt").write_text("cat\ndog\nbird\n")
    return {"root": root, "keras": str(root / "m.keras"), "h5": str(root / "m.h5"), "images": images, "model": model}


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def cells(line):
    """The cells of a Markdown table row (the CLI prints its tables with kg.format_table)."""
    return [c.strip() for c in line.strip().strip("|").split("|")]


# -- explain --------------------------------------------------------------------------------------
def test_explain_writes_overlays_maps_manifest_and_prints_a_table(files, tmp_path, capsys):
    out_dir = tmp_path / "cams"
    code, out, err = run(["explain", files["keras"], *files["images"], "--out", out_dir, "--size", SIZE,
                          "--class-names", files["root"] / "names.txt"], capsys)
    assert code == 0, err
    assert sorted(os.listdir(out_dir)) == sorted(
        [f"img{i}_{k}.png" for i in range(3) for k in ("heatmap", "overlay")]
        + ["heatmaps.npy", "layer_heatmaps.npy", "manifest.json"]
    )
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["method"] == "gradcam++" and manifest["layer"] == "c2"
    assert manifest["class_names"] == ["cat", "dog", "bird"]
    assert [s["name"] for s in manifest["samples"]] == ["img0", "img1", "img2"]
    heat = np.load(out_dir / "heatmaps.npy")
    assert heat.shape == (3, SIZE, SIZE) and heat.min() >= 0 and heat.max() <= 1

    # the same as the library on the same preprocessed pixels
    raw = np.stack([cli.load_image(p, (SIZE, SIZE)) for p in files["images"]])
    expected = kg.explain(files["model"], raw.astype(np.float32) / 255.0, method="gradcam++")
    np.testing.assert_allclose(heat, expected.heatmaps, atol=1e-5)
    np.testing.assert_allclose(manifest["scores"], expected.scores, rtol=1e-5, atol=1e-6)

    lines = out.splitlines()
    assert lines[0].startswith("Grad-CAM++ at layer 'c2'; 3 image(s) at 24x24, preprocess 'unit'")
    assert cells(lines[1]) == ["image", "explained", "score", "predicted", "overlay"]
    name = ["cat", "dog", "bird"][int(expected.targets[0])]
    assert cells(lines[3])[1] == name and cells(lines[3])[2] == f"{expected.scores[0]:.3f}"
    assert lines[-1].startswith("wrote 3 overlay(s)")
    assert "explaining" not in err and "error" not in err  # no progress bar when stderr is not a terminal


def test_explain_h5_nested_layer_target_method_and_progress(files, tmp_path, capsys):
    out_dir = tmp_path / "h5"
    code, out, err = run(["explain", files["h5"], files["images"][0], files["root"] / "photo.jpg", "--layer", "c1",
                          "--method", "gradcam", "--target", 2, "--batch-size", 1, "--progress", "always",
                          "--out", out_dir], capsys)
    assert code == 0, err
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["layer"] == "backbone/c1" and manifest["method"] == "gradcam"
    assert manifest["targets"] == [2, 2]
    # keras.utils.Progbar on stderr, one step per image (non-terminal stderr: one line per update)
    assert "explaining 2 image(s) with gradcam" in err
    assert "1/2" in err and "2/2" in err and "/image" in err
    assert "1/2" not in out
    assert "photo.jpg" in out


def test_explain_one_target_per_image_and_preprocessing(files, tmp_path, capsys):
    code, out, err = run(["explain", files["keras"], *files["images"], "--target", 0, 1, 2, "--preprocess", "tf",
                          "--out", tmp_path], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "manifest.json").read_text())["targets"] == [0, 1, 2]
    assert "preprocess 'tf'" in out


def test_same_file_names_in_two_folders_do_not_overwrite(files, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    copy = other / "img0.png"
    copy.write_bytes(open(files["images"][0], "rb").read())
    code, _, err = run(["explain", files["keras"], files["images"][0], copy, "--out", tmp_path / "o"], capsys)
    assert code == 0, err
    assert {"img0_overlay.png", "img0_2_overlay.png"} <= set(os.listdir(tmp_path / "o"))


# -- errors: exit codes and messages --------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, code, message",
    [
        (["explain", "{root}/missing.keras", "{img}"], 3, "model file '.*missing.keras' does not exist"),
        (["explain", "{keras}", "{root}/missing.png"], 3, "image '.*missing.png' does not exist"),
        (["explain", "{keras}", "{root}/broken.png"], 4, "cannot read image '.*broken.png'.*Supported formats"),
        (["explain", "{root}/notes.txt", "{img}"], 5, r"MODEL must be a Keras file ending in \.keras"),
        (["explain", "{root}/broken.png.keras", "{img}"], 5, r"model file '.*broken.png.keras' exists \(7 bytes\) but is not a readable Keras archive"),
        (["explain", "{keras}", "{img}", "--layer", "nope"], 6, "--layer: layer 'nope' is not in model 'outer'.*'c2'"),
        (["explain", "{keras}", "{img}", "--layer", "gap"], 6, "--layer: .*spatial"),
        (["explain", "{keras}", "{img}", "--target", "7"], 7, r"--target 7 is not a class of the model; valid classes are 0 \.\. 2"),
        (["explain", "{keras}", "{img}", "{img}", "--target", "0", "1", "2"], 7, "one per image"),
        (["explain", "{keras}", "{img}", "--method", "magic"], 2, "unknown method 'magic'.*gradcam"),
        (["explain", "{keras}", "{img}", "--preprocess", "weird"], 2, "invalid choice: 'weird'"),
        (["explain", "{keras}", "{img}", "--size", "0"], 2, "positive size like 224"),
        (["explain", "{keras}", "{img}", "--size", "32"], 2, "does not fit the model, which takes 24x24"),
        (["explain", "{keras}", "{img}", "--alpha", "3"], 2, r"number in \[0, 1\]"),
        (["explain", "{keras}", "{img}", "--colormap", "nope"], 2, "unknown colormap 'nope'"),
        (["explain", "{keras}"], 2, "the following arguments are required: IMAGE"),
        (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
        (["layers", "{root}/missing.keras"], 3, "does not exist"),
        (["evaluate", "{keras}", "{img}", "--masks", "{root}/nomasks"], 3, "mask folder"),
        (["evaluate", "{keras}", "{img}", "--metrics", "accuracy"], 2, "--metrics: unknown"),
    ],
)
def test_errors_go_to_stderr_with_distinct_exit_codes(files, tmp_path, capsys, argv, code, message):
    if "{root}/broken.png.keras" in argv:
        (files["root"] / "broken.png.keras").write_bytes(b"garbage")
    fill = {"root": files["root"], "keras": files["keras"], "img": files["images"][0]}
    argv = [a.format(**fill) for a in argv] + (["--out", str(tmp_path)] if argv[0] == "explain" else [])
    got, out, err = run(argv, capsys)
    assert got == code, err
    assert out == ""
    errors = [line for line in err.splitlines() if line.startswith("keras-gradcam: error: ")]
    assert len(errors) == 1, err  # (TensorFlow may log its own warnings before it)
    assert re.search(message, err[err.index("keras-gradcam: error: "):], re.S), err


def test_every_exit_code_is_documented_in_help(capsys):
    for argv in ([], ["explain"], ["layers"], ["methods"], ["evaluate"]):
        code, out, _ = run([*argv, "--help"], capsys)
        assert code == 0
        assert "usage: keras-gradcam" in out
        for number, meaning in EXIT_CODES.items():
            assert f"  {number}  {meaning}" in out
    code, out, _ = run(["explain", "--help"], capsys)
    for option in ("--method", "--layer", "--target", "--size", "--preprocess", "--out", "--progress"):
        assert option in out
    for mode in ("none", "unit", "imagenet-caffe", "imagenet-torch", "tf"):
        assert mode in out


def test_no_command_prints_help_and_fails(capsys):
    code, out, err = run([], capsys)
    assert code == 2 and "usage: keras-gradcam" in err


# -- layers, methods, evaluate --------------------------------------------------------------------
def test_layers_lists_nested_paths_and_marks_the_default(files, capsys):
    code, out, err = run(["layers", files["keras"]], capsys)
    assert code == 0, err
    rows = [cells(line) for line in out.splitlines()[3:]]
    assert [r[0].lstrip("* ") for r in rows] == ["backbone", "backbone/c1", "c2"]
    assert cells(out.splitlines()[-1])[0].startswith("* c2")
    code, out, _ = run(["layers", files["h5"], "--all"], capsys)
    assert code == 0 and "gap" in out and "head" in out


def test_layers_of_a_model_without_spatial_layers(tmp_path, capsys):
    dense = keras.Sequential([keras.Input((5,)), keras.layers.Dense(2)])
    dense.save(tmp_path / "dense.keras")
    code, out, err = run(["layers", tmp_path / "dense.keras"], capsys)
    assert code == 6 and "no layer with a spatial output" in err


def test_methods_lists_the_registry(capsys):
    code, out, _ = run(["methods"], capsys)
    assert code == 0
    names = [cells(line)[0] for line in out.splitlines()[2:]]
    assert names == list(kg.METHODS)


def test_evaluate_prints_a_table_per_method(files, capsys):
    code, out, err = run(["evaluate", files["keras"], *files["images"], "--methods", "gradcam", "layercam",
                          "--masks", files["root"] / "masks", "--metrics", "energy_pointing_game", "pointing_game",
                          "--tolerance", 2], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert "2 method(s) on 3 image(s) at 24x24" in lines[0]
    assert "energy_pointing_game" in lines[1] and "pointing_game" in lines[1]
    assert lines[3].strip("| ").startswith("gradcam ") and lines[4].strip("| ").startswith("layercam ")



def test_evaluate_leaves_the_slow_metrics_out_by_default_and_shows_progress(files, capsys):
    """The default: the fast metrics, a step bar on stderr and the seconds per step; --metrics all adds the slow ones."""
    slow_columns = ("road", "occlusion_correlation", "randomization_similarity")
    code, out, err = run(["evaluate", files["keras"], *files["images"], "--progress", "always"], capsys)
    assert code == 0, err
    header = cells(out.splitlines()[1])
    assert {"deletion_auc", "insertion_auc", "average_drop", "map_area"} <= set(header)
    assert not set(slow_columns) & set(header)
    assert "note: road, occlusion_correlation, randomization are not computed by default" in out
    assert "--metrics all" in out
    # 2 methods x (explain, confidence on E = L * I, deletion, insertion) = 8 steps, each timed
    assert "8/8" in err and "/step" in err
    timed = err.split("seconds per step: ")[1].splitlines()[0]
    assert "gradcam: explain" in timed and "gradcam++: deletion_auc" in timed and "road" not in timed
    code, out, err = run(["evaluate", files["keras"], files["images"][0], "--methods", "gradcam", "--metrics", "all",
                          "--progress", "never"], capsys)
    assert code == 0, err
    assert set(slow_columns) <= set(cells(out.splitlines()[1])) and "not computed by default" not in out
    assert "seconds per step" not in err

# -- pieces ---------------------------------------------------------------------------------------
def test_preprocessing_modes_against_their_definitions():
    x = np.array([[[[0, 128, 255]]]], np.uint8)
    np.testing.assert_allclose(preprocess(x, "none"), [[[[0, 128, 255]]]])
    np.testing.assert_allclose(preprocess(x, "unit"), [[[[0, 128 / 255, 1]]]], rtol=1e-6)
    np.testing.assert_allclose(preprocess(x, "tf"), [[[[-1, 128 / 127.5 - 1, 1]]]], atol=1e-6)
    np.testing.assert_allclose(preprocess(x, "imagenet-caffe"), [[[[255 - 103.939, 128 - 116.779, 0 - 123.68]]]], rtol=1e-6)
    np.testing.assert_allclose(
        preprocess(x, "imagenet-torch"),
        [[[[(0 - 0.485) / 0.229, (128 / 255 - 0.456) / 0.224, (1 - 0.406) / 0.225]]]], rtol=1e-5,
    )
    # Keras' own ImageNet preprocessing agrees ("caffe" and "torch" modes)
    batch = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3)).astype(np.uint8)
    from keras.applications import imagenet_utils

    for mode, ours in (("caffe", "imagenet-caffe"), ("torch", "imagenet-torch"), ("tf", "tf")):
        theirs = imagenet_utils.preprocess_input(batch.astype(np.float32), mode=mode)
        np.testing.assert_allclose(preprocess(batch, ours), theirs, rtol=1e-5, atol=1e-4)


def test_python_dash_m_entry_point(files):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "keras_gradcam", "layers", files["root"] / "nothing.keras"],
                          capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode == 3
    assert done.stdout == ""
    assert "keras-gradcam: error: model file" in done.stderr


def test_python_dash_m_cli_entry_point(files):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "keras_gradcam.cli", "layers", files["root"] / "nothing.keras"],
                          capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode == 3 and done.stdout == ""
    assert "keras-gradcam: error: model file" in done.stderr


def test_targets_go_through_the_core_target_handling():
    np.testing.assert_array_equal(target_classes([1], 3, 3), [1, 1, 1])  # one class for all images
    np.testing.assert_array_equal(target_classes([0, 2, 1], 3, None), [0, 2, 1])
    assert target_classes(None, 3, 3) is None  # top-1
    for values, classes, message in (([5, -1, 0], 3, "--target 5 is not a class of the model; valid classes are 0 .. 2."),
                                     ([-1], None, "--target -1 is not a class of the model; valid classes are >= 0."),
                                     ([0, 1], 3, "--target takes one class for all images or one per image (3); got 2.")):
        with pytest.raises(cli.CLIError) as info:
            target_classes(values, 3, classes)
        assert info.value.code == EXIT_TARGET and str(info.value) == message


# -- --out, --class-names: user errors without tracebacks -------------------------------------------
@pytest.mark.parametrize("where, message", [("file", "is a file; --out must name a folder"),
                                            ("file/below", "cannot be created: '.*names.txt' is a file"),
                                            ("", "--out is empty")])
def test_out_that_is_a_file_or_below_one_is_a_usage_error(files, capsys, where, message):
    target = files["root"] / "names.txt"
    out_arg = {"file": target, "file/below": target / "sub" / "cams", "": ""}[where]
    code, out, err = run(["explain", files["keras"], files["images"][0], "--out", out_arg], capsys)
    assert code == 2 and out == ""
    errors = [line for line in err.splitlines() if line.startswith("keras-gradcam: error: ")]
    assert len(errors) == 1 and re.search(message, errors[0]), err
    assert "Traceback" not in err
    assert target.read_text() == "cat\ndog\nbird\n"  # untouched


def test_class_names_that_are_a_folder_or_not_text_are_usage_errors(files, tmp_path, capsys):
    binary = tmp_path / "names.bin"
    binary.write_bytes(b"\xff\xfe\x00\x81 not utf-8")
    for path, message in ((files["root"] / "masks", "is a folder"), (binary, "is not UTF-8 text")):
        code, out, err = run(["explain", files["keras"], files["images"][0], "--class-names", path,
                              "--out", tmp_path / "o"], capsys)
        assert code == 2 and out == "" and message in err, err


@pytest.mark.parametrize(
    "argv, code, message",
    [
        (["layers", "{root}/notes.txt"], 5, r"MODEL must be a Keras file"),
        (["layers", "{root}/masks"], 5, "is a folder"),
        (["evaluate", "{root}/missing.keras", "{img}"], 3, "does not exist"),
        (["evaluate", "{keras}", "{root}/broken.png"], 4, "cannot read image"),
        (["evaluate", "{keras}", "{root}/missing.png"], 3, "image '.*missing.png' does not exist"),
        (["evaluate", "{keras}", "{img}", "--layer", "nope"], 6, "--layer: layer 'nope'"),
        (["evaluate", "{keras}", "{img}", "--target", "9"], 7, "--target 9 is not a class"),
    ],
)
def test_other_commands_report_user_errors_in_one_line(files, capsys, argv, code, message):
    fill = {"root": files["root"], "keras": files["keras"], "img": files["images"][0]}
    got, out, err = run([a.format(**fill) for a in argv], capsys)
    assert got == code and out == "", err
    errors = [line for line in err.splitlines() if line.startswith("keras-gradcam: error: ")]
    assert len(errors) == 1 and re.search(message, errors[0]), err


# -- --preprocess auto ------------------------------------------------------------------------------
def _rescaling_models():
    """A model starting with Rescaling; one whose first layer is a nested Sequential (Resizing, Rescaling)."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255.0, name="scale")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c")(x)
    flat = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)), name="flat")
    prep = keras.Sequential([keras.layers.Resizing(SIZE, SIZE), keras.layers.Rescaling(1 / 127.5, offset=-1)],
                            name="prep")
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c")(prep(inputs))
    nested = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)), name="nested")
    return flat, nested


def test_auto_preprocessing_finds_a_leading_rescaling_or_normalization_layer(files):
    flat, nested = _rescaling_models()
    assert cli.auto_preprocessing(flat)[0] == "none" and "Rescaling" in cli.auto_preprocessing(flat)[1]
    assert cli.auto_preprocessing(nested)[0] == "none"
    assert cli.auto_preprocessing(files["model"])[0] == "unit"
    for data, expected in ((np.full((4, 3), 200.0), "none"), (np.full((4, 3), 0.5), "unit")):
        norm = keras.layers.Normalization()
        norm.adapt(data + np.linspace(0.0, 0.4, 4)[:, None])
        inputs = keras.Input((SIZE, SIZE, 3))
        x = keras.layers.Conv2D(2, 3, name="c")(norm(inputs))
        model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x)))
        assert cli.auto_preprocessing(model)[0] == expected


def test_explain_does_not_divide_by_255_twice_for_a_model_with_rescaling(files, tmp_path, capsys):
    for model in _rescaling_models():
        path = tmp_path / f"{model.name}.keras"
        model.save(path)
        code, out, err = run(["explain", path, *files["images"], "--out", tmp_path / model.name], capsys)
        assert code == 0, err
        assert "preprocess 'none'" in out.splitlines()[0]
        assert "keras-gradcam: preprocess 'none'" in err and "Rescaling" in err  # said on stderr
        raw = np.stack([cli.load_image(p, (SIZE, SIZE)) for p in files["images"]])
        expected = kg.explain(model, raw.astype(np.float32), method="gradcam++")  # pixels in [0, 255]
        np.testing.assert_allclose(np.load(tmp_path / model.name / "heatmaps.npy"), expected.heatmaps, atol=1e-5)
    code, out, err = run(["explain", path, files["images"][0], "--preprocess", "unit", "--out", tmp_path / "u"], capsys)
    assert code == 0 and "preprocess 'unit'" in out and "keras-gradcam: preprocess 'unit'" in err


# -- overlays at the photo's size --------------------------------------------------------------------
def test_overlays_are_written_at_the_original_image_size_by_default(files, tmp_path, capsys):
    code, out, err = run(["explain", files["keras"], *files["images"], "--alpha", 0.5, "--out", tmp_path / "o"], capsys)
    assert code == 0, err
    heat = np.load(tmp_path / "o" / "heatmaps.npy")
    for i, path in enumerate(files["images"]):
        png = tf.io.decode_png(tf.io.read_file(str(tmp_path / "o" / f"img{i}_overlay.png"))).numpy()
        photo = tf.io.decode_png(tf.io.read_file(path)).numpy()
        assert png.shape == (30, 40, 3)  # the photo's size, not the model's 24x24
        np.testing.assert_array_equal(png, kg.overlay(photo, heat[i], alpha=0.5))  # the map resized to the photo
        small = tf.io.decode_png(tf.io.read_file(str(tmp_path / "o" / f"img{i}_heatmap.png"))).numpy()
        assert small.shape == (SIZE, SIZE, 3)  # heatmap PNGs stay at the map's size
    code, out, err = run(["explain", files["keras"], files["images"][0], "--overlay-size", "model",
                          "--out", tmp_path / "m"], capsys)
    assert code == 0, err
    png = tf.io.decode_png(tf.io.read_file(str(tmp_path / "m" / "img0_overlay.png"))).numpy()
    raw = cli.load_image(files["images"][0], (SIZE, SIZE))
    np.testing.assert_array_equal(png, kg.overlay(raw, np.load(tmp_path / "m" / "heatmaps.npy")[0]))


# -- stdout is for results ---------------------------------------------------------------------------
def test_score_cam_progress_stays_off_stdout(files, tmp_path, capsys):
    code, out, err = run(["explain", files["keras"], files["images"][0], "--method", "scorecam", "--progress", "always",
                          "--out", tmp_path], capsys)
    assert code == 0, err
    assert "/pass" not in out and "━" not in out and "/image" not in out
    assert "1/1" in err and "/image" in err
    assert out.splitlines()[2].startswith("|:")  # a Markdown table, as `evaluate` prints


def test_evaluate_explains_every_nan_it_prints(tmp_path, capsys):
    # a dead layer (ReLU of -1 everywhere): all-zero maps and a constant model, so Spearman's rho
    # with the occlusion map is undefined on every image
    inputs = keras.Input((SIZE, SIZE, 3))
    conv = keras.layers.Conv2D(2, 3, padding="same", activation="relu", name="dead")
    x = keras.layers.GlobalAveragePooling2D()(conv(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    conv.set_weights([np.zeros((3, 3, 3, 2), np.float32), np.full((2,), -1.0, np.float32)])
    model.save(tmp_path / "dead.keras")
    write_png(tmp_path / "a.png", np.full((SIZE, SIZE, 3), 90, np.uint8))
    code, out, err = run(["evaluate", tmp_path / "dead.keras", tmp_path / "a.png", "--methods", "gradcam", "layercam",
                          "--metrics", "occlusion_correlation", "map_area"], capsys)
    assert code == 0, err
    assert "nan" in out
    assert re.findall(r"\bnan\b(?! \(\d+\))", out.split("\n(")[0]) == []  # every nan cell has a note mark
    row = cells(out.splitlines()[3])
    assert row[0] == "gradcam" and "nan (1)" in row
    note = [line for line in out.splitlines() if line.startswith("(1) ")]
    assert note == ["(1) occlusion_correlation is undefined (nan) for gradcam, layercam: Spearman's rank "
                    "correlation is undefined on every image: the map is constant (e.g. all zero) or no occlusion "
                    "window changed the model's score."]


# -- --out is made and tried before any image is explained -------------------------------------------
def _out_cases(root):
    """--out values that only the file system refuses (check_out_folder's look-ahead cannot tell)."""
    dangling = root / "dangling_out"
    if not dangling.is_symlink():
        dangling.symlink_to(root / "nowhere" / "cams")
    blocked = root / "blocked_out"
    for name in ("heatmaps.npy", "index.html"):  # a folder where a result file goes
        (blocked / name).mkdir(parents=True, exist_ok=True)
    return {
        "too long": (root / "fresh" / ("x" * 300), "File name too long"),
        "dangling link": (dangling, "is a symbolic link to .*nowhere/cams.*which does not exist"),
        "a result name is a folder": (blocked, "holds a folder '(heatmaps.npy|index.html)' where a result file goes"),
    }


@pytest.mark.parametrize("case", ["too long", "dangling link", "a result name is a folder"])
@pytest.mark.parametrize("command", ["explain", "audit"])
def test_an_out_the_file_system_refuses_fails_before_any_image_is_explained(files, tmp_path, capsys, monkeypatch,
                                                                           command, case):
    root = files["root"]
    out_arg, message = _out_cases(root)[case]
    before = sorted(p.name for p in root.iterdir())
    calls = []
    monkeypatch.setattr(kg.BaseCAM, "__call__", lambda self, *a, **k: calls.append(1) or 1 / 0)
    if command == "explain":
        argv = ["explain", files["keras"], *files["images"], "--out", out_arg, "--progress", "always"]
    else:
        data = tmp_path / "data"
        for k, name in enumerate(("a", "b", "c")):
            (data / name).mkdir(parents=True)
            write_png(data / name / "1.png", np.full((SIZE, SIZE, 3), 80 * k, np.uint8))
        argv = ["audit", files["keras"], data, "--out", out_arg, "--progress", "always"]
    code, out, err = run(argv, capsys)
    assert code in (1, 2) and out == "", err
    errors = [line for line in err.splitlines() if line.startswith("keras-gradcam: error: ")]
    assert len(errors) == 1 and "--out" in errors[0] and re.search(message, errors[0]), err
    assert calls == [] and "explaining" not in err  # nothing was explained
    assert sorted(p.name for p in root.iterdir()) == before  # no partial output (no folder left behind)
    if case == "a result name is a folder":
        assert sorted(p.name for p in out_arg.iterdir()) == ["heatmaps.npy", "index.html"]

