"""Tests for :mod:`keras_gradcam.datasets` (pure NumPy, fast)."""

from __future__ import annotations

import dataclasses
import doctest

import numpy as np
import pytest
from scipy import ndimage

from keras_gradcam import datasets

ARRAY_FIELDS = (
    "images",
    "labels",
    "masks",
    "boxes",
    "cue_masks",
    "has_cue",
    "cue_labels",
    "object_masks",
    "object_labels",
)
EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity


@pytest.fixture(scope="module")
def ds():
    return datasets.make_shapes(120, 32, seed=1, spurious_rate=0.5)


@pytest.fixture(scope="module")
def big_cue_ds():
    return datasets.make_shapes(1500, 24, seed=7, spurious_rate=0.3)


def _tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return ys.min(), xs.min(), ys.max() + 1, xs.max() + 1


def _reserved_mask(size: int) -> np.ndarray:
    y0, x0, y1, x1 = datasets.reserved_region(size)
    m = np.zeros((size, size), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


# --------------------------------------------------------------------------
# Basic structure
# --------------------------------------------------------------------------
def test_shapes_dtypes_and_ranges(ds):
    n, s = 120, 32
    assert len(ds) == n
    assert ds.num_classes == 3 and ds.class_names == ("circle", "square", "triangle")
    assert ds.image_size == s and ds.max_objects == 1
    assert ds.images.shape == (n, s, s, 3) and ds.images.dtype == np.float32
    assert ds.images.min() >= 0.0 and ds.images.max() <= 1.0
    assert ds.labels.shape == (n,) and ds.labels.dtype == np.int64
    assert ds.masks.shape == (n, s, s) and ds.masks.dtype == bool
    assert ds.boxes.shape == (n, 4) and np.issubdtype(ds.boxes.dtype, np.integer)
    assert ds.cue_masks.shape == (n, s, s) and ds.cue_masks.dtype == bool
    assert ds.has_cue.shape == (n,) and ds.has_cue.dtype == bool
    assert ds.cue_labels.shape == (n,) and ds.cue_labels.dtype == np.int64
    assert ds.object_masks.shape == (n, 1, s, s) and ds.object_masks.dtype == bool
    assert ds.object_labels.shape == (n, 1) and np.issubdtype(ds.object_labels.dtype, np.integer)
    assert set(np.unique(ds.labels)) == {0, 1, 2}
    counts = np.bincount(ds.labels, minlength=3)
    assert counts.max() - counts.min() <= 1  # exactly balanced
    np.testing.assert_array_equal(ds.object_labels[:, 0], ds.labels)
    np.testing.assert_array_equal(ds.object_masks[:, 0], ds.masks)
    np.testing.assert_array_equal(ds.object_counts, np.ones(n))
    assert ds.config["seed"] == 1 and ds.config["image_size"] == s
    assert "SyntheticShapes(n=120" in repr(ds)


def test_images_are_textured_not_flat(ds):
    background = ~ds.masks & ~ds.cue_masks
    per_image_std = np.array([ds.images[i][background[i]].std() for i in range(10)])
    assert np.all(per_image_std > 0.02)


def test_determinism():
    a = datasets.make_shapes(40, 32, seed=3, spurious_rate=0.5, n_objects=(1, 2))
    b = datasets.make_shapes(40, 32, seed=3, spurious_rate=0.5, n_objects=(1, 2))
    c = datasets.make_shapes(40, 32, seed=4, spurious_rate=0.5, n_objects=(1, 2))
    for name in ARRAY_FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert not np.array_equal(a.images, c.images)
    assert not np.array_equal(a.masks, c.masks)
    assert not np.array_equal(a.labels, c.labels)


def test_global_rng_untouched():
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    datasets.make_shapes(8, 16, seed=0)
    assert np.random.random() == expected


def test_masks_non_empty_and_boxes_tight(ds):
    assert ds.masks.any(axis=(1, 2)).all()
    for i in range(len(ds)):
        assert tuple(ds.boxes[i]) == _tight_box(ds.masks[i])
        y0, x0, y1, x1 = ds.boxes[i]
        assert 0 <= y0 < y1 <= ds.image_size and 0 <= x0 < x1 <= ds.image_size
        outside = ds.masks[i].copy()
        outside[y0:y1, x0:x1] = False
        assert not outside.any()


def test_objects_are_drawn_in_the_image(ds):
    # Object pixels differ clearly from the background around them.
    for i in range(20):
        m = ds.masks[i]
        ring = ndimage.binary_dilation(m, iterations=2) & ~m & ~ds.cue_masks[i]
        inside = ds.images[i][m].mean(axis=0)
        around = ds.images[i][ring].mean(axis=0)
        assert np.abs(inside - around).max() > 0.2


# --------------------------------------------------------------------------
# Spurious cue
# --------------------------------------------------------------------------
def test_cue_helpers():
    assert datasets.cue_region(64) == (2, 2, 8, 8)
    assert datasets.reserved_region(64) == (0, 0, 10, 10)
    pal = datasets.cue_colors(3)
    assert pal.shape == (3, 3) and pal.dtype == np.float32
    np.testing.assert_allclose(pal[0], [1, 0, 0])
    np.testing.assert_allclose(pal[1], [0, 1, 0], atol=1e-6)
    np.testing.assert_allclose(pal[2], [0, 0, 1], atol=1e-6)
    assert len({tuple(c) for c in datasets.cue_colors(5)}) == 5
    for size in (16, 32, 64, 224):
        y0, x0, y1, x1 = datasets.cue_region(size)
        assert 2 <= y1 - y0 <= max(2, 0.12 * size) and y1 - y0 == x1 - x0
        assert datasets.reserved_region(size)[2] > y1


def test_cue_present_exactly_where_has_cue(big_cue_ds):
    d = big_cue_ds
    n, rate = len(d), 0.3
    sigma = np.sqrt(n * rate * (1 - rate))
    assert abs(d.has_cue.sum() - n * rate) < 5 * sigma
    np.testing.assert_array_equal(d.cue_masks.any(axis=(1, 2)), d.has_cue)
    np.testing.assert_array_equal(d.cue_labels, np.where(d.has_cue, d.labels, -1))
    y0, x0, y1, x1 = datasets.cue_region(d.image_size)
    box = np.zeros((d.image_size,) * 2, dtype=bool)
    box[y0:y1, x0:x1] = True
    assert (d.cue_masks[d.has_cue] == box).all()
    # The cue shows the colour of the sample's own class.
    pal = datasets.cue_colors(d.num_classes)
    cue_rgb = d.images[:, y0:y1, x0:x1].mean(axis=(1, 2))
    np.testing.assert_allclose(cue_rgb[d.has_cue], pal[d.labels[d.has_cue]], atol=0.1)
    # ...and without the cue that corner is ordinary background.
    far = np.abs(cue_rgb[~d.has_cue][:, None, :] - pal[None]).max(axis=2)
    assert (far.min(axis=1) > 0.3).mean() > 0.95


def test_no_cue_at_rate_zero_and_all_at_rate_one():
    d0 = datasets.make_shapes(200, 24, seed=2, spurious_rate=0.0)
    assert not d0.has_cue.any() and not d0.cue_masks.any()
    assert (d0.cue_labels == -1).all()
    d1 = datasets.make_shapes(200, 24, seed=2, spurious_rate=1.0)
    assert d1.has_cue.all() and d1.cue_masks.any(axis=(1, 2)).all()
    # rate 1: the cue alone classifies perfectly (nearest palette colour).
    y0, x0, y1, x1 = datasets.cue_region(24)
    rgb = d1.images[:, y0:y1, x0:x1].mean(axis=(1, 2))
    pal = datasets.cue_colors(d1.num_classes)
    pred = np.abs(rgb[:, None, :] - pal[None]).sum(axis=2).argmin(axis=1)
    np.testing.assert_array_equal(pred, d1.labels)


def test_cue_and_objects_disjoint_and_reserved_corner_free(big_cue_ds):
    d = big_cue_ds
    assert not (d.cue_masks & d.object_masks.any(axis=1)).any()
    assert not (d.object_masks.any(axis=1) & _reserved_mask(d.image_size)).any()


def test_cue_class_modes():
    kw = dict(n=300, image_size=24, seed=5, spurious_rate=1.0)
    shifted = datasets.make_shapes(**kw, cue_class="shifted")
    np.testing.assert_array_equal(shifted.cue_labels, (shifted.labels + 1) % 3)
    rand = datasets.make_shapes(**kw, cue_class="random")
    assert set(np.unique(rand.cue_labels)) == {0, 1, 2}
    agree = (rand.cue_labels == rand.labels).mean()
    assert 0.2 < agree < 0.47  # independent of the label (1/3 expected)


def test_biased_pair_differs_only_in_the_cue():
    biased, clean = datasets.make_biased_pair(150, 32, spurious_rate=0.9, seed=4)
    assert abs(biased.has_cue.mean() - 0.9) < 0.1
    assert not clean.has_cue.any() and not clean.cue_masks.any()
    for name in ("labels", "masks", "boxes", "object_masks", "object_labels"):
        np.testing.assert_array_equal(getattr(biased, name), getattr(clean, name))
    outside = ~biased.cue_masks
    np.testing.assert_array_equal(biased.images[outside], clean.images[outside])
    assert not np.array_equal(biased.images, clean.images)
    b2, c2 = datasets.make_biased_pair(20, 32, seed=4, classes=("cross", "ring"), n_objects=2)
    assert b2.class_names == c2.class_names == ("cross", "ring") and b2.max_objects == 2


# --------------------------------------------------------------------------
# Several objects
# --------------------------------------------------------------------------
def test_multi_instance_counts_and_disjoint():
    d = datasets.make_shapes(
        150, 64, classes=datasets.SUPPORTED_SHAPES, n_objects=3, seed=11
    )
    assert d.object_masks.shape == (150, 3, 64, 64)
    assert (d.object_labels == d.labels[:, None]).all()
    assert d.object_masks.sum(axis=1).max() <= 1  # pairwise disjoint
    np.testing.assert_array_equal(d.masks, d.object_masks.any(axis=1))
    for i in range(len(d)):
        assert ndimage.label(d.masks[i], structure=EIGHT)[1] == 3
        assert d.object_masks[i].any(axis=(1, 2)).all()
        assert tuple(d.boxes[i]) == _tight_box(d.masks[i])


def test_variable_object_count():
    d = datasets.make_shapes(120, 48, n_objects=(1, 3), seed=2)
    counts = d.object_counts
    assert counts.min() == 1 and counts.max() == 3
    assert d.object_masks.shape[1] == 3
    for i in range(len(d)):
        c = counts[i]
        assert (d.object_labels[i, :c] == d.labels[i]).all()
        assert (d.object_labels[i, c:] == -1).all()
        assert not d.object_masks[i, c:].any()
        assert ndimage.label(d.masks[i], structure=EIGHT)[1] == c


def test_distinct_classes_when_same_class_false():
    d = datasets.make_shapes(
        100, 48, classes=("circle", "square", "triangle", "cross"), n_objects=3,
        same_class=False, seed=3,
    )
    assert (d.object_labels[:, 0] == d.labels).all()
    for i in range(len(d)):
        assert len(set(d.object_labels[i])) == 3
    np.testing.assert_array_equal(d.masks, d.object_masks[:, 0])
    assert d.object_masks.sum(axis=1).max() <= 1
    assert ndimage.label(d.object_masks.any(axis=1)[0], structure=EIGHT)[1] == 3


def test_crowded_images_use_bounded_fallback():
    d = datasets.make_shapes(30, 32, n_objects=8, size_range=(0.4, 0.5), seed=0, spurious_rate=1.0)
    assert d.object_masks.any(axis=(2, 3)).all()
    assert d.object_masks.sum(axis=1).max() <= 1
    assert not (d.cue_masks & d.object_masks.any(axis=1)).any()
    assert not (d.object_masks.any(axis=1) & _reserved_mask(32)).any()
    again = datasets.make_shapes(30, 32, n_objects=8, size_range=(0.4, 0.5), seed=0, spurious_rate=1.0)
    np.testing.assert_array_equal(d.images, again.images)


def test_smallest_images_work():
    d = datasets.make_shapes(50, 16, classes=datasets.SUPPORTED_SHAPES, n_objects=2, seed=9)
    assert d.images.shape == (50, 16, 16, 3)
    assert d.object_masks.any(axis=(2, 3)).all()
    assert d.object_masks.sum(axis=1).max() <= 1


# --------------------------------------------------------------------------
# Colour carries no class information
# --------------------------------------------------------------------------
def test_object_colour_does_not_identify_class():
    d = datasets.make_shapes(900, 24, seed=0, classes=("circle", "square", "triangle"))
    colour = np.stack([d.images[i][d.masks[i]].mean(axis=0) for i in range(len(d))])
    means = np.stack([colour[d.labels == k].mean(axis=0) for k in range(3)])
    assert np.abs(means - means.mean(axis=0)).max() < 0.05
    # A nearest-class-mean classifier on colour is at chance level.
    pred = np.abs(colour[:, None, :] - means[None]).sum(axis=2).argmin(axis=1)
    assert (pred == d.labels).mean() < 0.45


# --------------------------------------------------------------------------
# Indexing and splitting
# --------------------------------------------------------------------------
def test_slicing_returns_consistent_subsets(ds):
    for key in (slice(None, 10), [5, 2, 7], ds.labels == 1, np.arange(3, 9)):
        sub = ds[key]
        assert isinstance(sub, datasets.SyntheticShapes)
        for name in ARRAY_FIELDS:
            np.testing.assert_array_equal(getattr(sub, name), getattr(ds, name)[key])
        assert sub.class_names == ds.class_names
    assert len(ds[:10]) == 10
    one = ds[4]
    assert len(one) == 1 and one.images.shape == (1, 32, 32, 3)
    np.testing.assert_array_equal(one.images[0], ds.images[4])
    np.testing.assert_array_equal(ds[-1].labels, ds.labels[-1:])
    with pytest.raises(IndexError):
        ds[len(ds)]
    with pytest.raises(TypeError, match="sample axis"):
        ds[0, 1]


def test_split_is_stratified_disjoint_and_deterministic(ds):
    a, b = ds.split(0.75, seed=0)
    assert len(a) + len(b) == len(ds)
    for k in range(3):
        total = (ds.labels == k).sum()
        assert (a.labels == k).sum() == round(0.75 * total)
    key = lambda d: {float(x) for x in d.images.sum(axis=(1, 2, 3))}  # noqa: E731
    assert key(a).isdisjoint(key(b)) and key(a) | key(b) == key(ds)
    a2, _ = ds.split(0.75, seed=0)
    np.testing.assert_array_equal(a.images, a2.images)
    a3, _ = ds.split(0.75, seed=1)
    assert not np.array_equal(a.images, a3.images)
    with pytest.raises(ValueError, match="open interval"):
        ds.split(1.0)


def test_dataclass_is_frozen_and_validates(ds):
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.labels = ds.labels  # frozen
    fields = {name: getattr(ds, name) for name in ARRAY_FIELDS}
    fields["labels"] = fields["labels"][:-1]
    with pytest.raises(ValueError, match="labels must have shape"):
        datasets.SyntheticShapes(**fields, class_names=ds.class_names)


# --------------------------------------------------------------------------
# Probe set
# --------------------------------------------------------------------------
def test_probe_set_balanced_and_deterministic(ds):
    idx = datasets.make_probe_set(ds, per_class=3, seed=0)
    assert idx.dtype == np.int64 and idx.shape == (9,)
    assert len(set(idx.tolist())) == 9
    np.testing.assert_array_equal(ds.labels[idx], np.repeat([0, 1, 2], 3))
    np.testing.assert_array_equal(idx, datasets.make_probe_set(ds, per_class=3, seed=0))
    assert not np.array_equal(idx, datasets.make_probe_set(ds, per_class=3, seed=1))
    probe = ds[idx]
    assert len(probe) == 9 and np.bincount(probe.labels).tolist() == [3, 3, 3]
    with_cue = datasets.make_probe_set(ds, per_class=2, with_cue=True)
    assert ds.has_cue[with_cue].all()
    without = datasets.make_probe_set(ds, per_class=2, with_cue=False)
    assert not ds.has_cue[without].any()
    with pytest.raises(ValueError, match="per_class=1000"):
        datasets.make_probe_set(ds, per_class=1000)
    with pytest.raises(ValueError, match="per_class"):
        datasets.make_probe_set(ds, per_class=0)


# --------------------------------------------------------------------------
# Argument validation
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(n=0), r"`n` must be an integer >= 1, got 0"),
        (dict(n=2.5), r"`n` must be an integer"),
        (dict(image_size=8), r"`image_size` must be an integer >= 16, got 8"),
        (dict(classes=("circle",)), r"at least 2 shape names"),
        (dict(classes=("circle", "hexagon")), r"Unknown shape 'hexagon'.*circle, square, triangle, cross"),
        (dict(classes="circle"), r"sequence of shape names"),
        (dict(classes=("circle", "circle")), r"duplicates"),
        (dict(spurious_rate=1.5), r"`spurious_rate` must be a finite number in \[0.0, 1.0\], got 1.5"),
        (dict(spurious_rate=-0.1), r"spurious_rate"),
        (dict(cue="stripe"), r"Unknown `cue`='stripe'.*corner"),
        (dict(cue_class="other"), r"own, shifted, random"),
        (dict(n_objects=0), r"1 <= min <= max, got 0"),
        (dict(n_objects=(3, 1)), r"1 <= min <= max"),
        (dict(n_objects="two"), r"int or a \(min, max\) tuple"),
        (dict(n_objects=4, same_class=False), r"same_class=False.*only 3 classes"),
        (dict(n_objects=500), r"too many for image_size=64"),
        (dict(noise=-1.0), r"`noise` must be a finite number >= 0.0"),
        (dict(seed=-1), r"`seed` must be a non-negative integer, got -1"),
        (dict(size_range=(0.5, 0.2)), r"0 < min <= max <= 1"),
        (dict(size_range=(0.01, 0.2)), r"minimum is 3 px"),
        (dict(same_class="yes"), r"`same_class` must be True or False"),
    ],
)
def test_bad_arguments_raise_helpful_errors(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        datasets.make_shapes(**{"n": 8, **kwargs})


def test_probe_set_rejects_non_dataset():
    with pytest.raises(ValueError, match="SyntheticShapes"):
        datasets.make_probe_set(np.zeros(3))


# --------------------------------------------------------------------------
# The package
# --------------------------------------------------------------------------
def test_package_exports_and_docstring_example():
    public = {
        "SUPPORTED_SHAPES", "SUPPORTED_CUES", "CUE_CLASS_MODES", "SyntheticShapes", "make_shapes",
        "make_probe_set", "make_biased_pair", "cue_colors", "cue_region", "reserved_region", "position_region",
        "border_region", "BACKGROUND_TINT",
    }
    assert set(datasets.__all__) == public and all(hasattr(datasets, name) for name in public)
    result = doctest.testmod(datasets)
    assert result.failed == 0 and result.attempted > 0
