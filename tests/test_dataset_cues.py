"""The "border" and "background" cues of ``make_shapes``: the pixels, pinned against the cue-free twin.

With ``noise=0`` a cue-free image is the background with the objects on it, and the cue changes only
its own pixels: the frame becomes the class colour, the background becomes ``0.6 * pixel + 0.4 *
colour``. Each expected image below is built by hand in NumPy from the cue-free twin and
``cue_colors``; nothing is copied from the generator's output.
"""

import numpy as np
import pytest

from keras_gradcam import datasets

N, SIZE = 24, 32


def twins(cue: str, rate: float = 0.5, **kwargs):
    kw = {"n": N, "image_size": SIZE, "seed": 4, "n_objects": (1, 2), **kwargs}
    return datasets.make_shapes(spurious_rate=rate, cue=cue, **kw), datasets.make_shapes(spurious_rate=0.0, **kw)


def test_border_region_is_the_outer_frame_six_percent_wide():
    f = datasets.border_region(32)  # round(0.06 * 32) = 2 px
    assert f[:2].all() and f[-2:].all() and f[:, :2].all() and f[:, -2:].all()
    assert not f[2:-2, 2:-2].any() and f.sum() == 32 * 32 - 28 * 28
    assert datasets.border_region(64).sum() == 64 * 64 - 56 * 56  # 4 px
    assert datasets.border_region(16).sum() == 16 * 16 - 14 * 14  # max(1, round(0.96)) = 1 px


@pytest.mark.parametrize("cue", ["border", "background"])
def test_cue_pixels_by_hand_and_everything_else_unchanged(cue):
    biased, clean = twins(cue, noise=0.0)
    colour = datasets.cue_colors(3)
    objects = clean.object_masks.any(axis=1)
    region = datasets.border_region(SIZE)[None] if cue == "border" else np.ones((1, SIZE, SIZE), bool)
    expected_masks = biased.has_cue[:, None, None] & region & ~objects
    assert 0 < biased.has_cue.sum() < N and np.array_equal(biased.cue_masks, expected_masks)
    expected = clean.images.copy()
    for i in np.flatnonzero(biased.has_cue):
        c = colour[biased.labels[i]]  # cue_class="own": the label's colour
        m = expected_masks[i]
        expected[i][m] = c if cue == "border" else 0.6 * clean.images[i][m] + 0.4 * c
    np.testing.assert_allclose(biased.images, expected, atol=1e-6)
    # the ground truth is the same: objects, labels, masks
    for name in ("labels", "masks", "boxes", "object_masks", "object_labels"):
        assert np.array_equal(getattr(biased, name), getattr(clean, name))
    assert np.array_equal(biased.cue_labels, np.where(biased.has_cue, biased.labels, -1))


def test_with_noise_only_the_cue_pixels_differ_and_the_cue_class_modes_apply():
    biased, clean = twins("border", rate=1.0, cue_class="shifted")
    outside = ~biased.cue_masks
    assert np.array_equal(biased.images[outside], clean.images[outside])
    # shifted: the frame shows the next class's colour (noise 0.05 around it, clipped to [0, 1])
    colour = datasets.cue_colors(3)[(biased.labels + 1) % 3]
    for i in range(N):
        assert np.abs(biased.images[i][biased.cue_masks[i]].mean(0) - colour[i]).max() < 0.05


def test_background_cue_keeps_the_corner_free_like_every_cue():
    biased, clean = twins("background", rate=1.0)
    y0, x0, y1, x1 = datasets.reserved_region(SIZE)
    assert biased.cue_masks[:, y0:y1, x0:x1].all()  # no object there: all background
    assert biased.config["cue"] == "background"


def test_an_unknown_cue_lists_the_three():
    with pytest.raises(ValueError, match="Supported cues are: corner, border, background"):
        datasets.make_shapes(n=4, cue="frame")


def test_position_cue_is_a_white_patch_whose_place_names_the_class():
    # side round(0.1 * 32) = 3, margin round(0.03 * 32) = 1; class k shifted by round(k * (32 - 2 - 3) / (K - 1))
    assert [datasets.position_region(32, k, 3) for k in range(3)] == [(1, 1, 4, 4), (1, 15, 4, 18), (1, 28, 4, 31)]
    assert datasets.position_region(64, 0, 2) == datasets.cue_region(64)  # class 0's patch is the corner patch
    biased, clean = twins("position", rate=1.0, noise=0.0)
    objects = clean.object_masks.any(axis=1)
    for i in range(N):
        y0, x0, y1, x1 = datasets.position_region(SIZE, int(biased.labels[i]), 3)
        box = np.zeros((SIZE, SIZE), bool)
        box[y0:y1, x0:x1] = True
        assert np.array_equal(biased.cue_masks[i], box & ~objects[i])
        expected = clean.images[i].copy()
        expected[box & ~objects[i]] = 1.0  # white, whatever the class
        np.testing.assert_allclose(biased.images[i], expected, atol=1e-6)
    with pytest.raises(ValueError, match="k must be a class index below num_classes=3; got 3"):
        datasets.position_region(32, 3, 3)


def test_cue_classes_puts_the_cue_on_those_classes_only():
    one, clean = twins("corner", rate=1.0, cue_classes=(1,))
    assert np.array_equal(one.has_cue, one.labels == 1)  # every class-1 image, no other
    assert np.array_equal(one.cue_labels, np.where(one.labels == 1, 1, -1))
    outside = ~one.cue_masks
    assert np.array_equal(one.images[outside], clean.images[outside])
    assert one.config["cue_classes"] == (1,)
    # with cue_class="shifted" the class the cue names is what counts: class-0 images show class 1's colour
    shifted, _ = twins("corner", rate=1.0, cue_classes=(1,), cue_class="shifted")
    assert np.array_equal(shifted.has_cue, shifted.labels == 0)
    for bad in ((3,), (), "1", (True,)):
        with pytest.raises(ValueError, match=r"`cue_classes` must be a non-empty sequence of class indices in \[0, 2\]"):
            datasets.make_shapes(n=4, image_size=SIZE, cue_classes=bad)
