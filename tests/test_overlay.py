"""kg.overlay: expected pixels worked out by hand or from Matplotlib / tf.image directly."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import tensorflow as tf

from keras_gradcam.viz.overlay import overlay

ROOT = Path(__file__).resolve().parents[1]


def cmap_rgb(name: str, value: float) -> np.ndarray:
    """The colormap's colour at ``value`` as 0..255 floats, from Matplotlib itself (256 levels)."""
    level = int(round(value * 255))
    return np.asarray(matplotlib.colormaps[name](level / 255.0)[:3]) * 255.0


def test_single_image_shape_dtype_and_size():
    out = overlay(np.zeros((20, 30, 3), np.float32), np.zeros((5, 6), np.float32))
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8


def test_hand_computed_pixel():
    # grey image 0.5, heat 1 -> jet(1) = dark red (0.5, 0, 0); alpha 0.25:
    # 0.75 * 127.5 + 0.25 * jet(1) * 255
    image = np.full((2, 2, 3), 0.5, np.float32)
    heat = np.ones((2, 2), np.float32)
    out = overlay(image, heat, alpha=0.25, colormap="jet")
    expected = np.rint(0.75 * 127.5 + 0.25 * cmap_rgb("jet", 1.0))
    np.testing.assert_array_equal(out[0, 0], expected.astype(np.uint8))
    assert tuple(out[0, 0]) == (np.rint(0.75 * 127.5 + 0.25 * 127.5), np.rint(0.75 * 127.5), np.rint(0.75 * 127.5))


def test_alpha_zero_is_the_image_and_alpha_one_the_colormap():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    heat = rng.random((8, 8)).astype(np.float32)
    np.testing.assert_array_equal(overlay(image, heat, alpha=0.0), image)
    colours = overlay(image, heat, alpha=1.0, colormap="viridis")
    expected = np.stack([[cmap_rgb("viridis", v) for v in row] for row in heat])
    np.testing.assert_array_equal(colours, np.rint(expected).astype(np.uint8))


@pytest.mark.parametrize("name", ["jet", "turbo", "inferno", "gray", "viridis_r"])
def test_any_matplotlib_colormap(name):
    heat = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    out = overlay(np.zeros((4, 4), np.uint8), heat, alpha=1.0, colormap=name)
    np.testing.assert_array_equal(out[3, 3], np.rint(cmap_rgb(name, 1.0)).astype(np.uint8))
    np.testing.assert_array_equal(out[0, 0], np.rint(cmap_rgb(name, 0.0)).astype(np.uint8))


def test_colormap_object_accepted():
    heat = np.ones((3, 3), np.float32)
    a = overlay(np.zeros((3, 3)), heat, alpha=1.0, colormap=matplotlib.colormaps["plasma"])
    b = overlay(np.zeros((3, 3)), heat, alpha=1.0, colormap="plasma")
    np.testing.assert_array_equal(a, b)


def test_image_ranges_and_kinds_agree():
    rng = np.random.default_rng(1)
    u8 = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    heat = rng.random((3, 3)).astype(np.float32)
    ref = overlay(u8, heat)
    np.testing.assert_array_equal(overlay(u8.astype(np.float32) / 255.0, heat), ref)  # [0, 1]
    np.testing.assert_array_equal(overlay(u8.astype(np.float32), heat), ref)  # [0, 255]
    np.testing.assert_array_equal(overlay(u8.astype(np.float64), heat), ref)
    rgba = np.concatenate([u8, np.full((6, 7, 1), 9, np.uint8)], axis=-1)
    np.testing.assert_array_equal(overlay(rgba, heat), ref)  # alpha channel dropped


def test_grayscale_shapes_agree():
    rng = np.random.default_rng(2)
    grey = rng.random((9, 9)).astype(np.float32)
    heat = rng.random((9, 9)).astype(np.float32)
    a = overlay(grey, heat)
    b = overlay(grey[..., None], heat)
    c = overlay(np.repeat(grey[..., None], 3, axis=-1), heat)
    assert a.shape == (9, 9, 3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_other_float_range_is_rescaled_per_image():
    # a mean-subtracted image (values -120 .. 130) is min-max rescaled: same as its [0, 1] version
    base = np.linspace(0, 1, 25, dtype=np.float32).reshape(5, 5)
    heat = np.zeros((5, 5), np.float32)
    np.testing.assert_array_equal(overlay(base * 250 - 120, heat, alpha=0.5), overlay(base, heat, alpha=0.5))


def test_heatmap_resized_bilinearly_like_tf_image_resize():
    rng = np.random.default_rng(3)
    heat = rng.random((4, 5)).astype(np.float32)
    out = overlay(np.zeros((16, 20, 3), np.uint8), heat, alpha=1.0, colormap="gray")
    resized = tf.image.resize(heat[None, ..., None], (16, 20), method="bilinear").numpy()[0, ..., 0]
    # gray colormap: level k -> (k, k, k) up to Matplotlib's own rounding of its table
    expected = np.array([[cmap_rgb("gray", v)[0] for v in row] for row in resized])
    np.testing.assert_allclose(out[..., 0], expected, atol=1.0)


def test_heatmap_values_outside_unit_range_are_clipped():
    image = np.zeros((2, 2, 3), np.uint8)
    hi = overlay(image, np.full((2, 2), 7.0), alpha=1.0)
    lo = overlay(image, np.full((2, 2), -3.0), alpha=1.0)
    np.testing.assert_array_equal(hi, overlay(image, np.ones((2, 2)), alpha=1.0))
    np.testing.assert_array_equal(lo, overlay(image, np.zeros((2, 2)), alpha=1.0))


def test_batch_equals_one_by_one():
    rng = np.random.default_rng(4)
    images = rng.random((5, 12, 12, 3)).astype(np.float32)
    images[2] *= 255.0  # per-image range detection in a batch
    heats = rng.random((5, 3, 3)).astype(np.float32)
    batch = overlay(images, heats, alpha=0.3, colormap="turbo")
    assert batch.shape == (5, 12, 12, 3)
    for i in range(5):
        np.testing.assert_array_equal(batch[i], overlay(images[i], heats[i], alpha=0.3, colormap="turbo"))
    grey = overlay(images[..., 0], heats)  # (n, H, W) grayscale batch
    assert grey.shape == (5, 12, 12, 3)


@pytest.mark.parametrize(
    "image, heat, kwargs, error, match",
    [
        (np.zeros((4, 4, 3)), np.zeros((4, 4)), {"alpha": 1.5}, ValueError, r"alpha must be a number in \[0, 1\]"),
        (np.zeros((4, 4, 3)), np.zeros((4, 4)), {"colormap": "nope"}, ValueError, "unknown colormap 'nope'.*'jet'"),
        (np.zeros((4, 4, 3)), np.zeros((4, 4)), {"colormap": 3}, TypeError, "colormap must be a Matplotlib colormap"),
        (np.zeros((4, 4, 3)), np.zeros((4,)), {}, ValueError, r"heatmap must have shape \(h, w\)"),
        (np.zeros((3, 4, 4, 3)), np.zeros((2, 4, 4)), {}, ValueError, "3 samples but heatmap has 2"),
        (np.zeros((3, 8, 8)), np.zeros((4, 4)), {}, ValueError, "Channels-first images need np.moveaxis"),
        (np.zeros((4, 4, 3)), np.full((4, 4), np.nan), {}, ValueError, "heatmap contains NaN"),
        (np.full((4, 4, 3), np.inf), np.zeros((4, 4)), {}, ValueError, "image contains NaN or inf"),
        (np.array([["a"]]), np.zeros((4, 4)), {}, TypeError, "numeric"),
    ],
)
def test_errors_say_what_to_fix(image, heat, kwargs, error, match):
    with pytest.raises(error, match=match):
        overlay(image, heat, **kwargs)


def test_no_pyplot_import():
    """viz/overlay.py needs Matplotlib's colormaps only, never pyplot, and imports them lazily.

    (Keras imports Matplotlib and pyplot itself, so this is checked in the source, where the
    module itself is concerned, and by drawing with a colormap that is not loaded yet.)"""
    source = (ROOT / "keras_gradcam" / "viz" / "overlay.py").read_text()
    assert not [line for line in source.splitlines() if line.startswith(("import matplotlib", "from matplotlib"))]
    assert "import matplotlib.pyplot" not in source and "from matplotlib import pyplot" not in source
    out = overlay(np.zeros((8, 8, 3)), np.ones((2, 2)), colormap="inferno")
    assert out.shape == (8, 8, 3)


def test_docstring_examples_run():
    overlay_module = importlib.import_module("keras_gradcam.viz.overlay")  # the package attribute is the function
    result = doctest.testmod(overlay_module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def test_preprocessed_ranges_are_min_max_rescaled_not_read_as_bytes():
    # values in [-1, 1] (Keras "tf" preprocessing) fit inside [-1, 256], the [0, 255] range with its
    # tolerance, but are not a photo: read as bytes they would come out black (<= 1/255 of white)
    rng = np.random.default_rng(5)
    u8 = rng.integers(0, 256, (6, 7, 3)).astype(np.float32)
    u8[0, 0], u8[0, 1] = 0.0, 255.0  # the full range, so min-max rescaling gives u8 back
    zero = np.zeros((6, 7), np.float32)
    tf_style = u8 / 127.5 - 1.0
    np.testing.assert_allclose(overlay(tf_style, zero, alpha=0.0), u8, atol=1.0)
    # a bright picture, ImageNet mean/std-normalised (torch style): values in [-0.9, 2.6]
    torch_style = (rng.uniform(0.25, 1.0, (6, 7, 3)) - 0.45) / 0.225
    lo, hi = torch_style.min(), torch_style.max()
    expected = np.rint((torch_style - lo) / (hi - lo) * 255.0)
    np.testing.assert_allclose(overlay(torch_style, zero, alpha=0.0), expected, atol=1.0)


def test_a_photo_with_small_negative_noise_is_still_read_as_bytes():
    rng = np.random.default_rng(6)
    x = rng.uniform(0.0, 200.0, (5, 5, 3))
    x[0, 0, 0] = -0.6  # e.g. an interpolation overshoot
    np.testing.assert_allclose(overlay(x, np.zeros((5, 5)), alpha=0.0), np.rint(np.clip(x, 0.0, 255.0)), atol=1.0)
