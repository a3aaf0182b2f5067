"""kg.plot figures, the PNG writer and Explanation.save / to_dict / load.

Figures are checked by what a reader sees: the number and layout of panels, their titles (class
names and scores), the colorbar, and the pixels of the overlay panels, which must be exactly
kg.overlay's output. Saved PNGs are decoded with an independent decoder (TensorFlow's) and compared
with the arrays they came from.
"""

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_gradcam as kg  # noqa: E402
from keras_gradcam.core.explanation import Explanation  # noqa: E402
from keras_gradcam.io import encode_png, write_png
from keras_gradcam.methods.registry import display_name
from keras_gradcam.viz.overlay import overlay  # noqa: E402
from keras_gradcam.viz.plots import plot  # noqa: E402

RNG = np.random.default_rng(0)
CLASSES = ["circle", "square", "triangle"]


def make_exp(n=3, shape=(16, 16), method="gradcam++", layer="conv", seed=0):
    heat = np.random.default_rng(seed).random((n,) + shape).astype(np.float32)
    return Explanation(
        heatmaps=heat,
        layer_heatmaps=heat[:, ::2] if len(shape) > 1 else heat,
        targets=np.arange(n) % 3,
        scores=np.linspace(1.0, 2.0, n).astype(np.float32),
        layer=layer,
        method=method,
        predictions=np.arange(n) % 3,
    )


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def panels(fig):
    """The image panels of a figure (the colorbar axes has a label and no images)."""
    return [a for a in fig.axes if a.images]


# -- plot: layout and titles ----------------------------------------------------------------------
def test_one_method_rows_are_image_heatmap_overlay_with_titles_and_colorbar():
    exp = make_exp()
    images = RNG.random((3, 16, 16, 3)).astype(np.float32)
    fig = plot(exp, images, class_names=CLASSES, labels=[0, 1, 1])
    axes = panels(fig)
    assert len(axes) == 9  # 3 rows x (image, heatmap, overlay)
    titles = [a.get_title() for a in axes]
    assert titles[0] == "true: circle"
    assert titles[1] == "Grad-CAM++ heatmap\ncircle (1.00)"
    assert titles[2] == "Grad-CAM++ overlay\ncircle (1.00)"
    assert titles[4] == "square (1.50)"  # later rows: class and score only
    assert titles[6] == "true: square"
    # one colorbar, for the [0, 1] scale
    bars = [a for a in fig.axes if a not in axes]
    assert len(bars) == 1 and "heatmap" in bars[0].get_ylabel()
    assert bars[0].get_ylim() == (0.0, 1.0)


def test_overlay_panels_show_exactly_kg_overlay():
    exp = make_exp(n=2)
    images = (RNG.random((2, 16, 16, 3)) * 255).astype(np.uint8)
    fig = plot(exp, images, alpha=0.5, colormap="viridis")
    axes = panels(fig)
    np.testing.assert_array_equal(axes[2].images[0].get_array(), overlay(images[0], exp.heatmaps[0], 0.5, "viridis"))
    np.testing.assert_array_equal(axes[5].images[0].get_array(), overlay(images[1], exp.heatmaps[1], 0.5, "viridis"))
    heat = axes[1].images[0]
    np.testing.assert_array_equal(heat.get_array(), exp.heatmaps[0])
    assert heat.get_clim() == (0.0, 1.0) and heat.get_cmap().name == "viridis"
    # the image column shows the image itself (uint8 is used as is)
    np.testing.assert_array_equal(axes[0].images[0].get_array(), images[0])


def test_several_methods_side_by_side_titled_by_method_or_key():
    images = RNG.random((2, 16, 16, 3)).astype(np.float32)
    a, b = make_exp(2, method="gradcam"), make_exp(2, method="layercam", seed=1)
    fig = plot([a, b], images)
    titles = [ax.get_title() for ax in panels(fig)]
    assert len(titles) == 6  # image + one overlay per method
    assert titles[1].startswith("Grad-CAM\n") and titles[2].startswith("LayerCAM\n")
    fig = plot({"before": a, "after": b}, images, show=("image", "heatmap", "overlay"))
    titles = [ax.get_title() for ax in panels(fig)]
    assert len(titles) == 10
    assert [t.split("\n")[0] for t in titles[1:5]] == ["before heatmap", "before overlay", "after heatmap", "after overlay"]


def test_same_method_at_two_layers_names_the_layers():
    images = RNG.random((1, 16, 16, 3)).astype(np.float32)
    fig = plot([make_exp(1, layer="a"), make_exp(1, layer="b")], images)
    titles = [ax.get_title() for ax in panels(fig)]
    assert titles[1].startswith("Grad-CAM++ @ a") and titles[2].startswith("Grad-CAM++ @ b")


def test_arguments_in_either_order_and_a_bare_heatmap_array():
    exp = make_exp(2)
    images = RNG.random((2, 16, 16, 3)).astype(np.float32)
    assert len(panels(plot(images, exp))) == len(panels(plot(exp, images))) == 6
    fig = plot(images, exp.heatmaps)  # no explanation: images then heatmaps
    assert len(panels(fig)) == 6 and panels(fig)[1].get_title() == "heatmap heatmap"
    fig = plot(exp)  # no images: the heatmaps alone
    assert len(panels(fig)) == 2


def test_max_samples_and_show():
    exp = make_exp(5)
    images = RNG.random((5, 16, 16, 3)).astype(np.float32)
    assert len(panels(plot(exp, images, max_samples=2))) == 6
    assert len(panels(plot(exp, images, show="overlay"))) == 5


def test_draws_into_user_axes():
    exp = make_exp(1)
    images = RNG.random((1, 16, 16, 3)).astype(np.float32)
    fig, ax = plt.subplots()
    out = plot(exp, images, show="overlay", ax=ax)
    assert out is fig and len(fig.axes) == 1  # no colorbar added by default
    np.testing.assert_array_equal(ax.images[0].get_array(), overlay(images[0], exp.heatmaps[0]))
    fig, axes = plt.subplots(1, 3)
    assert plot(exp, images, ax=axes) is fig
    assert [a.get_title().split("\n")[0] for a in axes] == ["sample 0", "Grad-CAM++ heatmap", "Grad-CAM++ overlay"]


def test_wrong_axes_shape_says_what_is_needed():
    exp = make_exp(2)
    images = RNG.random((2, 16, 16, 3)).astype(np.float32)
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match=r"grid of 2 x 3 .*plt.subplots\(2, 3\)"):
        plot(exp, images, ax=ax)
    with pytest.raises(TypeError, match="Matplotlib Axes"):
        plot(exp, images, ax="not axes")


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda e, i: plot(e, i[:1]), ValueError, "images has 1 samples but the explanations have 2"),
        (lambda e, i: plot(e, i, show="picture"), ValueError, "show must name panels"),
        (lambda e, i: plot(e, show="overlay"), ValueError, "needs the images"),
        (lambda e, i: plot(e, i, alpha=2), ValueError, r"alpha must be a number in \[0, 1\]"),
        (lambda e, i: plot(e, i, colormap="nope"), ValueError, "unknown colormap 'nope'"),
        (lambda e, i: plot(e, i, max_samples=0), ValueError, "max_samples"),
        (lambda e, i: plot(i), TypeError, "needs something to explain the images with"),
        (lambda e, i: plot(e, e), TypeError, "two sets of explanations"),
        (lambda e, i: plot([e, make_exp(3)], i), ValueError, "same samples"),
        (lambda e, i: plot(e, i, labels=[0]), ValueError, "labels has 1 entries"),
    ],
)
def test_errors_say_what_was_wrong(call, error, match):
    with pytest.raises(error, match=match):
        call(make_exp(2), RNG.random((2, 16, 16, 3)).astype(np.float32))


def test_time_series_band_behind_the_signal():
    exp = make_exp(2, shape=(40,))
    signals = RNG.normal(size=(2, 40, 2)).astype(np.float32)
    fig = plot(exp, signals, labels=[0, 1], class_names=CLASSES)
    axes = panels(fig)
    assert len(axes) == 2
    a = axes[0]
    assert len(a.lines) == 2  # one line per channel
    np.testing.assert_array_equal(a.lines[1].get_ydata(), signals[0, :, 1])
    band = a.images[0]
    np.testing.assert_array_equal(band.get_array()[0], exp.heatmaps[0])  # the heatmap, one value per step
    assert band.get_extent()[:2] == [-0.5, 39.5]
    assert a.get_title() == "Grad-CAM++  |  true: circle  |  explained: circle (1.00)"
    assert axes[1].get_xlabel() == "time step"
    with pytest.raises(ValueError, match=r"\(n_samples, 40, channels\)"):
        plot(exp, signals[:, :30])
    # without signals: the heatmap itself as the line
    assert len(panels(plot(exp))[0].lines) == 1


def test_video_strip_of_frames():
    exp = make_exp(2, shape=(10, 8, 8))
    videos = RNG.random((2, 10, 8, 8, 3)).astype(np.float32)
    fig = plot(exp, videos, max_frames=4)
    axes = panels(fig)
    assert len(axes) == 8  # 2 samples x 4 frames
    frames = [int(a.get_title().split("frame ")[-1]) for a in axes[:4]]
    assert frames == [0, 3, 6, 9]
    np.testing.assert_array_equal(axes[1].images[0].get_array(), overlay(videos[0, 3], exp.heatmaps[0, 3]))
    with pytest.raises(ValueError, match="videos must have shape"):
        plot(exp, videos[:, :5])


def test_plot_on_a_real_explanation():
    import keras

    model = keras.Sequential([keras.Input((12, 12, 3)), keras.layers.Conv2D(4, 3, activation="relu", name="c"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    images = RNG.random((2, 12, 12, 3)).astype(np.float32)
    exp = kg.explain(model, images, method="gradcam")
    fig = plot(exp, images, class_names=CLASSES)
    assert panels(fig)[1].get_title().startswith("Grad-CAM heatmap\n" + CLASSES[int(exp.targets[0])])


def test_display_name():
    assert display_name("gradcam") == "Grad-CAM"
    assert display_name("something-new") == "something-new"


def test_no_module_imports_matplotlib_at_import_time():
    """Matplotlib is imported inside the functions that draw, never at module level.

    (Keras 3 itself imports matplotlib.pyplot on ``import keras``, so sys.modules cannot tell.)
    """
    import ast

    package = os.path.dirname(kg.__file__)
    offenders = []
    for root, _, files in os.walk(package):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(root, name)
            tree = ast.parse(open(path, encoding="utf-8").read())
            for node in tree.body:  # top-level statements only
                if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                    continue
                for sub in ast.walk(node):
                    if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                        break
                    mods = [a.name for a in sub.names] if isinstance(sub, ast.Import) else (
                        [sub.module or ""] if isinstance(sub, ast.ImportFrom) else [])
                    if any(m.split(".")[0] == "matplotlib" for m in mods):
                        offenders.append(f"{os.path.relpath(path, package)}:{sub.lineno}")
    assert offenders == []


# -- PNG ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 3), (5, 7, 4), (1, 1, 3)])
def test_png_round_trip_through_an_independent_decoder(shape, tmp_path):
    image = RNG.integers(0, 256, shape, dtype=np.uint8)
    path = tmp_path / "x.png"
    write_png(path, image)
    decoded = tf.io.decode_png(tf.io.read_file(str(path)), channels=0).numpy()
    np.testing.assert_array_equal(decoded.reshape(image.shape), image)


def test_png_errors():
    with pytest.raises(TypeError, match="uint8"):
        encode_png(np.zeros((2, 2, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(height, width, 3\)"):
        encode_png(np.zeros((2, 2, 2), np.uint8))


# -- Explanation.save / to_dict / load ------------------------------------------------------------
def test_save_writes_maps_pngs_and_manifest(tmp_path):
    exp = make_exp(2)
    images = (RNG.random((2, 16, 16, 3)) * 255).astype(np.uint8)
    manifest = exp.save(tmp_path / "out", images=images, names=["cat", "dog"], class_names=CLASSES, alpha=0.5)
    folder = tmp_path / "out"
    assert sorted(os.listdir(folder)) == [
        "cat_heatmap.png", "cat_overlay.png", "dog_heatmap.png", "dog_overlay.png",
        "heatmaps.npy", "layer_heatmaps.npy", "manifest.json",
    ]
    np.testing.assert_array_equal(np.load(folder / "heatmaps.npy"), exp.heatmaps)
    png = tf.io.decode_png(tf.io.read_file(str(folder / "dog_overlay.png"))).numpy()
    np.testing.assert_array_equal(png, overlay(images[1], exp.heatmaps[1], alpha=0.5))
    coloured = tf.io.decode_png(tf.io.read_file(str(folder / "cat_heatmap.png"))).numpy()
    np.testing.assert_array_equal(coloured, overlay(np.zeros((16, 16, 3), np.uint8), exp.heatmaps[0], alpha=1.0))

    on_disk = json.loads((folder / "manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(manifest))
    assert on_disk["method"] == "gradcam++" and on_disk["layer"] == "conv"
    assert on_disk["targets"] == [0, 1] and on_disk["target_names"] == ["circle", "square"]
    assert on_disk["scores"] == pytest.approx([1.0, 2.0])
    assert on_disk["samples"][1] == {
        "index": 1, "name": "dog", "target": 1, "score": pytest.approx(2.0), "prediction": 1,
        "files": {"heatmap": "dog_heatmap.png", "overlay": "dog_overlay.png"},
        "target_name": "square", "prediction_name": "square",
    }
    assert set(on_disk["versions"]) == {"keras_gradcam", "keras", "tensorflow", "numpy"}
    assert on_disk["versions"]["numpy"] == np.__version__
    assert on_disk["overlay"] == {"alpha": 0.5, "colormap": "jet"}


def test_save_without_images_and_load_round_trip(tmp_path):
    exp = make_exp(3)
    exp.extras["weights"] = np.ones((3, 4), np.float32)
    exp.save(tmp_path)
    assert "000_heatmap.png" in os.listdir(tmp_path) and "000_overlay.png" not in os.listdir(tmp_path)
    back = Explanation.load(tmp_path)
    np.testing.assert_array_equal(back.heatmaps, exp.heatmaps)
    np.testing.assert_array_equal(back.layer_heatmaps, exp.layer_heatmaps)
    np.testing.assert_array_equal(back.targets, exp.targets)
    np.testing.assert_allclose(back.scores, exp.scores)
    np.testing.assert_array_equal(back.extras["weights"], exp.extras["weights"])
    assert (back.method, back.layer) == (exp.method, exp.layer)


def test_save_1d_maps_as_npy_only_and_errors(tmp_path):
    exp = make_exp(2, shape=(30,))
    exp.save(tmp_path / "a")
    assert sorted(os.listdir(tmp_path / "a")) == ["heatmaps.npy", "layer_heatmaps.npy", "manifest.json"]
    exp = make_exp(2)
    with pytest.raises(ValueError, match="images has 1 samples but the explanation has 2"):
        exp.save(tmp_path / "b", images=np.zeros((1, 16, 16, 3)))
    with pytest.raises(ValueError, match="names has 1 entries"):
        exp.save(tmp_path / "b", names=["x"])
    with pytest.raises(ValueError, match="unique"):
        exp.save(tmp_path / "b", names=["x", "x"])
    with pytest.raises(FileNotFoundError, match="Explanation.save"):
        Explanation.load(tmp_path / "nothing")


def test_to_dict_is_json_and_handles_callable_targets():
    exp = make_exp(2)
    d = exp.to_dict(class_names=CLASSES)
    assert json.loads(json.dumps(d)) == d
    assert d["heatmap_shape"] == [2, 16, 16] and d["prediction_names"] == ["circle", "square"]
    exp.targets = None
    assert exp.to_dict()["targets"] is None
    full = make_exp(1, shape=(2, 2)).to_dict(arrays=True)
    assert np.asarray(full["heatmaps"]).shape == (1, 2, 2)


# -- plot: images in other ranges, display_images ---------------------------------------------------
def test_image_panel_of_a_minus_one_to_one_image_is_min_max_rescaled():
    exp = make_exp(n=1)
    u8 = RNG.integers(0, 256, (1, 16, 16, 3)).astype(np.float32)
    u8[0, 0, 0], u8[0, 0, 1] = 0.0, 255.0  # full range: min-max rescaling gives u8 back
    fig = plot(exp, u8 / 127.5 - 1.0)  # Keras "tf" preprocessing
    shown = panels(fig)[0].images[0].get_array().astype(np.float64)
    assert shown.mean() > 60  # not black
    np.testing.assert_allclose(shown, u8[0], atol=1.0)


def test_display_images_are_drawn_instead_of_the_explained_images():
    exp = make_exp(n=2)
    raw = RNG.integers(0, 256, (2, 32, 24, 3)).astype(np.uint8)  # the photos, at another size
    caffe = raw[:, :16, :16, ::-1].astype(np.float32) - np.array([103.939, 116.779, 123.68], np.float32)
    fig = plot(exp, caffe, display_images=raw, alpha=0.5)
    axes = panels(fig)
    np.testing.assert_array_equal(axes[0].images[0].get_array(), raw[0])
    np.testing.assert_array_equal(axes[2].images[0].get_array(), overlay(raw[0], exp.heatmaps[0], 0.5))
    np.testing.assert_array_equal(axes[5].images[0].get_array(), overlay(raw[1], exp.heatmaps[1], 0.5))
    np.testing.assert_array_equal(axes[1].images[0].get_array(), exp.heatmaps[0])  # maps unchanged
    fig = plot(exp, display_images=raw, show="overlay")  # without the model's images
    np.testing.assert_array_equal(panels(fig)[0].images[0].get_array(), overlay(raw[0], exp.heatmaps[0], 0.4))
    with pytest.raises(ValueError, match="display_images has 1 samples but the explanations have 2"):
        plot(exp, caffe, display_images=raw[:1])
