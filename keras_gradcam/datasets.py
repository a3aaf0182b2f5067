"""Seeded synthetic shape images with pixel-exact ground truth.

This module generates small image-classification datasets of coloured
geometric shapes on textured, noisy backgrounds.  Every sample comes with
the ground truth needed to *evaluate* an explanation: the class mask, the
bounding box, per-object masks and, optionally, a *spurious cue* (a small
class-coloured watermark in a fixed corner) whose pixels are also known.

Nothing is ever downloaded: all data is drawn from
:func:`numpy.random.default_rng` streams derived from a single integer
``seed``, so the same arguments always give bit-identical arrays.  The module
only needs NumPy (no TensorFlow import).

Generation model
----------------
* **Background** -- a per-image random base colour plus two octaves of smooth
  random texture (bilinearly up-sampled random grids).  Background values are
  mostly below ``0.55`` before the pixel noise is added.
* **Objects** -- each object is a shape of one of :data:`SUPPORTED_SHAPES`,
  fitted inside a *circumscribed circle* of radius ``size * image_size / 2``
  where ``size`` is drawn uniformly from ``size_range``; it is randomly
  rotated and filled with a random colour (random hue, saturation in
  ``[0.3, 1]``, value in ``[0.75, 1]``).  The colour is drawn independently
  of the class, so **only the shape identifies the class** (unless the
  spurious cue is switched on).  Objects never overlap or touch: their
  circumscribed circles are at least 2 px apart.
* **Spurious cue** (``cue="corner"``) -- see :func:`cue_region` and
  :func:`cue_colors`.  The cue is a solid square patch of side
  ``max(2, round(0.1 * image_size))`` pixels whose top-left pixel is at
  ``(m, m)`` with ``m = max(1, round(0.03 * image_size))``, i.e. in the
  top-left corner.  Its colour identifies a class: class ``k`` of ``K`` gets
  the fully saturated, full-value colour of hue ``k / K`` (class 0 is pure
  red).  The square ``[0, 2m + side)`` x ``[0, 2m + side)`` (see
  :func:`reserved_region`) is reserved in **every** image, with or without
  cue: objects never enter it, so the cue never overlaps an object and the
  object layout does not depend on ``spurious_rate``.
* **Noise** -- i.i.d. Gaussian noise of standard deviation ``noise`` is added
  to every pixel and channel (cue and objects included), then the image is
  clipped to ``[0, 1]``.  For speed the noise values are resampled from a
  seeded table of 65,536 exact normal draws.

Examples
--------
>>> from keras_gradcam import datasets
>>> ds = datasets.make_shapes(n=64, image_size=32, seed=1)
>>> ds.images.shape, ds.labels.dtype.name, ds.num_classes
((64, 32, 32, 3), 'int64', 3)
>>> train, val = ds.split(0.75, seed=0)
>>> len(train), len(val)
(48, 16)
"""

from __future__ import annotations

import dataclasses
import math
import operator
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "SUPPORTED_SHAPES",
    "SUPPORTED_CUES",
    "CUE_CLASS_MODES",
    "SyntheticShapes",
    "make_shapes",
    "make_probe_set",
    "make_biased_pair",
    "cue_colors",
    "cue_region",
    "reserved_region",
]

#: Names of the shapes :func:`make_shapes` can draw (any subset, any order).
SUPPORTED_SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "ring")

#: Kinds of spurious cue :func:`make_shapes` can add.
SUPPORTED_CUES: tuple[str, ...] = ("corner",)

#: Which class colour a cue-carrying sample gets (``cue_class`` argument).
CUE_CLASS_MODES: tuple[str, ...] = ("own", "shifted", "random")

# Minimum distance (px) between the circumscribed circles of two objects.
# > sqrt(2) so that two objects are never 8-connected neighbours.
_GAP = 2.0
# Minimum distance (px) between an object's circumscribed circle and the
# reserved cue corner.
_EDGE = 1.0
# Rejection sampling: candidates per round, shrink factor and rounds.
_ATTEMPTS = 32
_SHRINK = 0.85
_SHRINK_LEVELS = 8
# Smallest object radius (px) the deterministic grid fallback may use.
_MIN_FALLBACK_RADIUS = 1.5
# Objects rasterised per chunk (bounds temporary memory).
_CHUNK = 256

_ARRAY_FIELDS = (
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


# --------------------------------------------------------------------------
# Dataset container
# --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class SyntheticShapes:
    """A synthetic shapes dataset with ground truth (returned by :func:`make_shapes`).

    All array fields share the leading sample axis ``N``.  Indexing
    (``ds[:100]``, ``ds[[3, 1, 4]]``, ``ds[bool_mask]``, ``ds[5]``) applies
    the same NumPy index to every array and returns a new
    :class:`SyntheticShapes`; an integer index keeps the sample axis
    (length-1 dataset).

    Attributes
    ----------
    images : numpy.ndarray
        ``float32`` array ``(N, H, W, 3)`` with values in ``[0, 1]``.
    labels : numpy.ndarray
        ``int64`` array ``(N,)``; index into :attr:`class_names`.  With
        several objects of distinct classes this is the class of object 0,
        the one drawn with the largest size.
    masks : numpy.ndarray
        ``bool`` array ``(N, H, W)``: union of the pixels of all objects of
        the labelled class.  Never empty.
    boxes : numpy.ndarray
        ``int64`` array ``(N, 4)`` of ``(y_min, x_min, y_max, x_max)`` in
        pixel indices, **max exclusive** (``masks[i, y_min:y_max,
        x_min:x_max]`` contains every mask pixel).  It is the tight box of
        :attr:`masks`, i.e. around all instances of the labelled class.
    cue_masks : numpy.ndarray
        ``bool`` array ``(N, H, W)``: pixels of the spurious cue; all
        ``False`` for samples without cue.
    has_cue : numpy.ndarray
        ``bool`` array ``(N,)``: whether the sample carries the cue.
    cue_labels : numpy.ndarray
        ``int64`` array ``(N,)``: class whose colour the cue shows, ``-1``
        where there is no cue.  Equal to :attr:`labels` where ``has_cue``
        when generated with ``cue_class="own"`` (the default).
    object_masks : numpy.ndarray
        ``bool`` array ``(N, max_objects, H, W)``: one mask per object,
        all ``False`` for padding slots.  Objects are pairwise disjoint.
    object_labels : numpy.ndarray
        ``int64`` array ``(N, max_objects)``: class of each object, ``-1``
        for padding slots.
    class_names : tuple of str
        Class names; ``class_names[k]`` is the shape of class ``k``.
    config : Mapping[str, Any]
        The arguments the dataset was generated with (kept unchanged by
        indexing).
    """

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    cue_masks: np.ndarray
    has_cue: np.ndarray
    cue_labels: np.ndarray
    object_masks: np.ndarray
    object_labels: np.ndarray
    class_names: tuple[str, ...]
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        images = np.asarray(self.images)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(
                f"SyntheticShapes.images must have shape (N, H, W, 3), got "
                f"{images.shape}. Build datasets with make_shapes()."
            )
        n, h, w = images.shape[:3]
        expected = {
            "labels": (n,),
            "masks": (n, h, w),
            "boxes": (n, 4),
            "cue_masks": (n, h, w),
            "has_cue": (n,),
            "cue_labels": (n,),
        }
        for name, shape in expected.items():
            got = np.shape(getattr(self, name))
            if got != shape:
                raise ValueError(
                    f"SyntheticShapes.{name} must have shape {shape} to match "
                    f"images {images.shape}, got {got}."
                )
        om, ol = np.shape(self.object_masks), np.shape(self.object_labels)
        if len(om) != 4 or om[0] != n or om[2:] != (h, w) or ol != om[:2]:
            raise ValueError(
                "SyntheticShapes.object_masks must have shape (N, K, H, W) and "
                f"object_labels (N, K) matching images {images.shape}; got "
                f"{om} and {ol}."
            )
        if len(self.class_names) < 2:
            raise ValueError(
                f"SyntheticShapes.class_names must name at least 2 classes, got "
                f"{self.class_names!r}."
            )

    # -- basic protocol -----------------------------------------------------
    def __len__(self) -> int:
        """Return the number of samples ``N``."""
        return int(self.labels.shape[0])

    def __getitem__(self, key: Any) -> "SyntheticShapes":
        """Return the subset selected by a NumPy index along the sample axis.

        Parameters
        ----------
        key : int, slice, sequence of int, or bool array
            Any 1-D NumPy index.  An integer ``i`` is treated as
            ``slice(i, i + 1)`` so the result is always a dataset.

        Returns
        -------
        SyntheticShapes
            A dataset holding the selected samples, in index order.
        """
        if isinstance(key, tuple):
            raise TypeError(
                "SyntheticShapes supports indexing along the sample axis only "
                f"(e.g. ds[:10] or ds[[1, 5]]), got a tuple index {key!r}."
            )
        if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
            i = operator.index(key)
            n = len(self)
            if i < 0:
                i += n
            if not 0 <= i < n:
                raise IndexError(f"index {key} is out of range for a dataset of {n} samples")
            key = slice(i, i + 1)
        arrays = {name: getattr(self, name)[key] for name in _ARRAY_FIELDS}
        return SyntheticShapes(**arrays, class_names=self.class_names, config=self.config)

    def __repr__(self) -> str:
        return (
            f"SyntheticShapes(n={len(self)}, image_size={self.image_size}, "
            f"classes={self.class_names}, max_objects={self.max_objects}, "
            f"with_cue={int(self.has_cue.sum())})"
        )

    # -- properties -----------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """int: Number of classes (``len(class_names)``)."""
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        """int: Side length ``H`` (``== W``) of the square images."""
        return int(self.images.shape[1])

    @property
    def max_objects(self) -> int:
        """int: Number of object slots ``K`` in :attr:`object_masks`."""
        return int(self.object_labels.shape[1])

    @property
    def object_counts(self) -> np.ndarray:
        """numpy.ndarray: ``int64`` ``(N,)`` number of objects in each image."""
        return (self.object_labels >= 0).sum(axis=1).astype(np.int64)

    # -- helpers ----------------------------------------------------------------
    def split(
        self, fraction: float = 0.8, seed: int = 0
    ) -> tuple["SyntheticShapes", "SyntheticShapes"]:
        """Split into two class-stratified, disjoint parts.

        Parameters
        ----------
        fraction : float, default 0.8
            Fraction of each class that goes to the first part, in ``(0, 1)``.
            Per class ``round(fraction * count)`` samples are taken.
        seed : int, default 0
            Seed of the shuffle; the split is deterministic.

        Returns
        -------
        first, second : SyntheticShapes
            The two parts; within each part samples keep their original order.

        Raises
        ------
        ValueError
            If ``fraction`` is not in ``(0, 1)`` or one part would be empty.
        """
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating, np.integer)):
            raise ValueError(f"`fraction` must be a float in (0, 1), got {fraction!r}.")
        fraction = float(fraction)
        if not 0.0 < fraction < 1.0:
            raise ValueError(
                f"`fraction` must be in the open interval (0, 1), got {fraction}. "
                "Use e.g. fraction=0.8 for an 80/20 split."
            )
        seed = _check_seed(seed)
        rng = np.random.default_rng(seed)
        first: list[np.ndarray] = []
        for k in range(self.num_classes):
            idx = np.flatnonzero(self.labels == k)
            take = int(round(fraction * idx.size))
            first.append(rng.permutation(idx)[:take])
        in_first = np.zeros(len(self), dtype=bool)
        in_first[np.concatenate(first)] = True
        if in_first.all() or not in_first.any():
            raise ValueError(
                f"split(fraction={fraction}) of {len(self)} samples leaves one part "
                "empty. Use a fraction closer to 0.5 or a larger dataset."
            )
        return self[in_first], self[~in_first]


# --------------------------------------------------------------------------
# Cue geometry / colours
# --------------------------------------------------------------------------
def _cue_geometry(image_size: int) -> tuple[int, int]:
    side = max(2, int(round(0.1 * image_size)))
    margin = max(1, int(round(0.03 * image_size)))
    return side, margin


def cue_region(image_size: int) -> tuple[int, int, int, int]:
    """Return the pixel box of the ``"corner"`` spurious cue.

    Parameters
    ----------
    image_size : int
        Side length of the (square) images.

    Returns
    -------
    tuple of int
        ``(y_min, x_min, y_max, x_max)``, max exclusive.  The patch is the
        square of side ``max(2, round(0.1 * image_size))`` starting at
        ``(m, m)``, ``m = max(1, round(0.03 * image_size))``; e.g.
        ``(2, 2, 8, 8)`` for 64 px images.
    """
    size = _check_int("image_size", image_size, 16, hint="e.g. image_size=64")
    side, margin = _cue_geometry(size)
    return (margin, margin, margin + side, margin + side)


def reserved_region(image_size: int) -> tuple[int, int, int, int]:
    """Return the top-left square that objects never enter.

    Parameters
    ----------
    image_size : int
        Side length of the (square) images.

    Returns
    -------
    tuple of int
        ``(0, 0, r, r)``, max exclusive, with ``r = 2 * m + side`` (the cue
        patch of :func:`cue_region` plus its margin on every side), e.g.
        ``(0, 0, 10, 10)`` for 64 px images.  No object pixel lies inside it
        in any image, whether or not the image carries a cue.
    """
    size = _check_int("image_size", image_size, 16, hint="e.g. image_size=64")
    side, margin = _cue_geometry(size)
    r = 2 * margin + side
    return (0, 0, r, r)


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB for arrays of equal shape; returns ``(..., 3)``."""
    h = np.mod(h, 1.0) * 6.0
    i = np.floor(h).astype(np.int64) % 6
    f = h - np.floor(h)
    p = v * (1.0 - s)
    q = v * (1.0 - s * f)
    t = v * (1.0 - s * (1.0 - f))
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    b = np.choose(i, [p, p, t, v, v, q])
    return np.stack([r, g, b], axis=-1)


def cue_colors(num_classes: int) -> np.ndarray:
    """Return the RGB colour of the spurious cue of every class.

    Parameters
    ----------
    num_classes : int
        Number of classes ``K >= 2``.

    Returns
    -------
    numpy.ndarray
        ``float32`` ``(K, 3)``; row ``k`` is the fully saturated, full-value
        colour of hue ``k / K`` (row 0 is pure red ``(1, 0, 0)``).
    """
    k = _check_int("num_classes", num_classes, 2, hint="e.g. num_classes=3")
    hue = np.arange(k, dtype=np.float64) / k
    ones = np.ones_like(hue)
    return _hsv_to_rgb(hue, ones, ones).astype(np.float32)


# --------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------
def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_int(name: str, value: Any, minimum: int, *, hint: str) -> int:
    if not _is_int(value) or int(value) < minimum:
        raise ValueError(
            f"`{name}` must be an integer >= {minimum}, got {value!r}. Pass {hint}."
        )
    return int(value)


def _check_seed(seed: Any) -> int:
    if not _is_int(seed) or int(seed) < 0:
        raise ValueError(
            f"`seed` must be a non-negative integer, got {seed!r}. Pass e.g. seed=0; "
            "the same seed always gives the same data."
        )
    return int(seed)


def _check_float(name: str, value: Any, low: float, high: float | None, *, hint: str) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )
    if ok:
        value_f = float(value)
        ok = math.isfinite(value_f) and value_f >= low and (high is None or value_f <= high)
    if not ok:
        expected = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"`{name}` must be a finite number {expected}, got {value!r}. {hint}")
    return value_f


def _check_classes(classes: Any) -> tuple[str, ...]:
    if isinstance(classes, str) or not isinstance(classes, Sequence):
        raise ValueError(
            f"`classes` must be a sequence of shape names, got {classes!r}. "
            f"Pass e.g. classes=('circle', 'square'); supported: {', '.join(SUPPORTED_SHAPES)}."
        )
    names: list[str] = []
    for c in classes:
        if not isinstance(c, str) or c.strip().lower() not in SUPPORTED_SHAPES:
            raise ValueError(
                f"Unknown shape {c!r} in `classes`={tuple(classes)!r}. Supported shape "
                f"names are: {', '.join(SUPPORTED_SHAPES)}."
            )
        names.append(c.strip().lower())
    if len(names) < 2:
        raise ValueError(
            f"`classes` must contain at least 2 shape names, got {tuple(classes)!r}. "
            f"Add another of: {', '.join(SUPPORTED_SHAPES)}."
        )
    if len(set(names)) != len(names):
        raise ValueError(
            f"`classes` must not contain duplicates, got {tuple(classes)!r}. "
            "List each shape once."
        )
    return tuple(names)


def _check_n_objects(n_objects: Any) -> tuple[int, int]:
    if _is_int(n_objects):
        lo = hi = int(n_objects)
    elif (
        isinstance(n_objects, (tuple, list))
        and len(n_objects) == 2
        and all(_is_int(v) for v in n_objects)
    ):
        lo, hi = int(n_objects[0]), int(n_objects[1])
    else:
        raise ValueError(
            f"`n_objects` must be an int or a (min, max) tuple of ints, got {n_objects!r}. "
            "Pass e.g. n_objects=1 or n_objects=(1, 3)."
        )
    if lo < 1 or hi < lo:
        raise ValueError(
            f"`n_objects` must satisfy 1 <= min <= max, got {n_objects!r}. "
            "Pass e.g. n_objects=2 or n_objects=(1, 3)."
        )
    return lo, hi


def _check_size_range(size_range: Any, image_size: int) -> tuple[float, float]:
    ok = (
        isinstance(size_range, (tuple, list))
        and len(size_range) == 2
        and all(
            isinstance(v, (int, float, np.integer, np.floating))
            and not isinstance(v, (bool, np.bool_))
            and math.isfinite(float(v))
            for v in size_range
        )
    )
    if ok:
        lo, hi = float(size_range[0]), float(size_range[1])
        ok = 0.0 < lo <= hi <= 1.0
    if not ok:
        raise ValueError(
            f"`size_range` must be a (min, max) pair of fractions of image_size with "
            f"0 < min <= max <= 1, got {size_range!r}. Pass e.g. size_range=(0.25, 0.45)."
        )
    if lo * image_size < 3.0:
        raise ValueError(
            f"`size_range`={tuple(size_range)!r} with image_size={image_size} gives objects "
            f"only {lo * image_size:.1f} px across; the minimum is 3 px. Increase "
            f"size_range[0] to at least {3.0 / image_size:.3f} or use a larger image_size."
        )
    return lo, hi


# --------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------
def _grid_layout(count: int, size: int, reserved: int) -> tuple[float, np.ndarray]:
    """Deterministic fallback: ``count`` equal circles on a grid below the cue corner."""
    top = reserved + _EDGE
    height, width = size - top, float(size)
    best = (-1.0, 1, count)
    for rows in range(1, count + 1):
        cols = -(-count // rows)
        cell = min(height / rows, width / cols)
        if cell > best[0]:
            best = (cell, rows, cols)
    cell, _, cols = best
    radius = (cell - _GAP) / 2.0
    idx = np.arange(count)
    centres = np.stack(
        [top + (idx // cols + 0.5) * cell, (idx % cols + 0.5) * cell], axis=1
    )
    return radius, centres


def _place_objects(
    rng: np.random.Generator, counts: np.ndarray, radii: np.ndarray, size: int, reserved: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Place non-overlapping circles avoiding the reserved corner.

    Vectorised rejection sampling over images, one object slot at a time;
    a slot that finds no free spot has its radius shrunk (bounded number of
    times); images that still fail get the deterministic grid layout.
    Returns ``(cy, cx, radii)``, NaN for padding slots.
    """
    n, k_max = radii.shape
    original = radii.copy()
    radii = radii.copy()
    cy = np.full((n, k_max), np.nan)
    cx = np.full((n, k_max), np.nan)
    failed = np.zeros(n, dtype=bool)
    for j in range(k_max):
        todo = np.flatnonzero((counts > j) & ~failed)
        for _ in range(_SHRINK_LEVELS + 1):
            if todo.size == 0:
                break
            r = radii[todo, j]
            u = rng.random((todo.size, _ATTEMPTS, 2))
            span = (size - 2.0 * r)[:, None]
            py = r[:, None] + u[..., 0] * span
            px = r[:, None] + u[..., 1] * span
            dist = np.hypot(np.maximum(py - reserved, 0.0), np.maximum(px - reserved, 0.0))
            ok = dist >= r[:, None] + _EDGE
            if j:
                d = np.hypot(
                    py[:, :, None] - cy[todo, None, :j], px[:, :, None] - cx[todo, None, :j]
                )
                need = r[:, None, None] + radii[todo, None, :j] + _GAP
                ok &= np.all(d >= need, axis=2)
            found = ok.any(axis=1)
            first = ok.argmax(axis=1)
            rows = np.flatnonzero(found)
            cy[todo[rows], j] = py[rows, first[rows]]
            cx[todo[rows], j] = px[rows, first[rows]]
            todo = todo[~found]
            radii[todo, j] *= _SHRINK
        failed[todo] = True
    for i in np.flatnonzero(failed):
        c = int(counts[i])
        r_grid, centres = _grid_layout(c, size, reserved)
        radii[i, :c] = np.minimum(original[i, :c], r_grid)
        cy[i, :c] = centres[:, 0]
        cx[i, :c] = centres[:, 1]
    radii[counts[:, None] <= np.arange(k_max)[None, :]] = np.nan
    return cy, cx, radii


# --------------------------------------------------------------------------
# Rasterisation
# --------------------------------------------------------------------------
_TRI_NORMALS = np.array(
    [[math.cos(a), math.sin(a)] for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
)


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside test in normalised, rotated coordinates (circumradius 1)."""
    if shape == "circle":
        return u * u + v * v <= 0.85**2
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.7
    if shape == "triangle":
        # Equilateral triangle with circumradius 1 (inradius 0.5).
        inside = np.ones(u.shape, dtype=bool)
        for nx, ny in _TRI_NORMALS:
            inside &= u * nx + v * ny <= 0.5
        return inside
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95))
    if shape == "ring":
        rr = u * u + v * v
        return (rr <= 0.9**2) & (rr >= 0.5**2)
    raise AssertionError(shape)  # pragma: no cover - validated earlier


def _rasterise(
    shape: str, cy: np.ndarray, cx: np.ndarray, r: np.ndarray, theta: np.ndarray, size: int
) -> np.ndarray:
    """Masks ``(m, size, size)`` of ``m`` objects of one shape."""
    grid = np.arange(size, dtype=np.float32) + 0.5
    out = np.empty((cy.size, size, size), dtype=bool)
    for s in range(0, cy.size, _CHUNK):
        sl = slice(s, s + _CHUNK)
        inv_r = (1.0 / r[sl]).astype(np.float32)[:, None, None]
        c = np.cos(theta[sl]).astype(np.float32)[:, None, None]
        si = np.sin(theta[sl]).astype(np.float32)[:, None, None]
        dy = grid[None, :, None] - cy[sl].astype(np.float32)[:, None, None]
        dx = grid[None, None, :] - cx[sl].astype(np.float32)[:, None, None]
        u = (c * dx + si * dy) * inv_r
        v = (c * dy - si * dx) * inv_r
        out[sl] = _shape_mask(shape, u, v)
    # Guarantee non-empty masks for (tiny) objects: mark the centre pixel.
    empty = ~out.reshape(out.shape[0], -1).any(axis=1)
    if empty.any():
        e = np.flatnonzero(empty)
        yi = np.clip(np.floor(cy[e]).astype(np.int64), 0, size - 1)
        xi = np.clip(np.floor(cx[e]).astype(np.int64), 0, size - 1)
        out[e, yi, xi] = True
    return out


def _interp_matrix(size: int, points: int) -> np.ndarray:
    """Bilinear up-sampling matrix ``(size, points)``."""
    t = (np.arange(size) + 0.5) / size * (points - 1)
    i0 = np.clip(np.floor(t).astype(np.int64), 0, points - 2)
    w = t - i0
    m = np.zeros((size, points), dtype=np.float32)
    m[np.arange(size), i0] = 1.0 - w
    m[np.arange(size), i0 + 1] = w
    return m


def _smooth_field(rng: np.random.Generator, n: int, size: int, points: int) -> np.ndarray:
    """Smooth random field ``(n, size, size)`` in ``[-1, 1]`` (bilinear up-sampling)."""
    coarse = rng.uniform(-1.0, 1.0, size=(n, points, points)).astype(np.float32)
    m = _interp_matrix(size, points)
    cols = (coarse.reshape(n * points, points) @ m.T).reshape(n, points, size)
    return np.matmul(m, cols)


def _backgrounds(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Textured random backgrounds, channel-first ``(n, 3, size * size)`` float32.

    A random base colour plus a coarse and a fine smooth texture, each
    tinted with its own random colour vector.
    """
    base = rng.uniform(0.08, 0.35, size=(n, 3, 1)).astype(np.float32)
    images = np.empty((n, 3, size * size), dtype=np.float32)
    images[...] = base
    buffer = np.empty_like(images)
    for points, amplitude in ((4, 0.12), (max(4, size // 5), 0.06)):
        tint = rng.uniform(-amplitude, amplitude, size=(n, 3, 1)).astype(np.float32)
        field = _smooth_field(rng, n, size, points).reshape(n, 1, size * size)
        images += np.multiply(field, tint, out=buffer)
    return images


def _gaussian_noise(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    """Gaussian noise of std ``std`` drawn from a seeded table of 65,536 normal samples.

    Resampling a large table of exact normal draws is statistically
    indistinguishable from direct sampling for image noise and about twice as
    fast as ``Generator.standard_normal`` for large arrays.
    """
    table = rng.standard_normal(1 << 16, dtype=np.float32) * np.float32(std)
    return table[rng.integers(0, 1 << 16, size=shape, dtype=np.uint16)]


# --------------------------------------------------------------------------
# Public generators
# --------------------------------------------------------------------------
def make_shapes(
    n: int = 512,
    image_size: int = 64,
    classes: Sequence[str] = ("circle", "square", "triangle"),
    *,
    spurious_rate: float = 0.0,
    cue: str = "corner",
    cue_class: str = "own",
    n_objects: int | tuple[int, int] = 1,
    same_class: bool = True,
    noise: float = 0.05,
    seed: int = 0,
    size_range: tuple[float, float] = (0.25, 0.45),
) -> SyntheticShapes:
    """Generate a seeded synthetic shapes dataset with ground truth.

    Parameters
    ----------
    n : int, default 512
        Number of images, ``>= 1``.  Labels are exactly balanced: the
        multiset ``arange(n) % K`` randomly permuted.
    image_size : int, default 64
        Side length of the square RGB images, ``>= 16``.
    classes : sequence of str, default ("circle", "square", "triangle")
        At least 2 distinct names from :data:`SUPPORTED_SHAPES`; class ``k``
        is ``classes[k]``.  Case-insensitive.
    spurious_rate : float, default 0.0
        Probability in ``[0, 1]`` that a sample carries the spurious cue
        (drawn independently per sample).  ``0`` means no image has a cue.
    cue : str, default "corner"
        Kind of spurious cue.  ``"corner"``: a solid square patch at
        :func:`cue_region` (about 10 % of the image side, top-left corner)
        whose colour :func:`cue_colors` ``[c]`` identifies class ``c``.
        Objects never enter :func:`reserved_region`, so cue and objects never
        overlap.
    cue_class : {"own", "shifted", "random"}, default "own"
        Which class colour the cue shows: ``"own"`` the sample's label (a
        spurious shortcut), ``"shifted"`` ``(label + 1) % K`` (a conflicting
        cue, for testing whether a model relies on it), ``"random"`` a
        uniformly random class (an uninformative cue).
    n_objects : int or (int, int), default 1
        Objects per image, or an inclusive ``(min, max)`` range drawn
        uniformly per image.
    same_class : bool, default True
        With several objects: ``True`` draws all objects of the image's
        class (multi-instance); ``False`` draws distinct classes, object 0
        (the largest) having the label; then ``max(n_objects) <= K`` is
        required.
    noise : float, default 0.05
        Standard deviation of the Gaussian pixel noise, ``>= 0``.
    seed : int, default 0
        Non-negative seed; all randomness comes from
        ``numpy.random.SeedSequence(seed)`` sub-streams, so output is
        deterministic.  Labels, object layout, colours, background and noise
        use streams independent of the cue, hence datasets differing only in
        ``spurious_rate`` / ``cue_class`` have identical pixels outside the cue.
    size_range : (float, float), default (0.25, 0.45)
        Range of the object size: diameter of its circumscribed circle as a
        fraction of ``image_size``, ``0 < min <= max <= 1``.  Objects that
        cannot be placed without overlap are shrunk (by up to ``0.85**8``)
        and, as a last resort, laid out on a deterministic grid, so sizes
        can fall below ``min`` when many objects are requested.

    Returns
    -------
    SyntheticShapes
        The images, labels and ground truth (see :class:`SyntheticShapes`).

    Raises
    ------
    ValueError
        If any argument is out of range or of the wrong kind, if too many
        objects are requested for ``image_size``, or ``same_class=False``
        with more objects than classes.

    Notes
    -----
    Generating 2000 images of 64 x 64 takes well under a second.
    """
    n = _check_int("n", n, 1, hint="the number of images, e.g. n=512")
    size = _check_int("image_size", image_size, 16, hint="e.g. image_size=64")
    names = _check_classes(classes)
    k = len(names)
    rate = _check_float(
        "spurious_rate", spurious_rate, 0.0, 1.0,
        hint="It is the probability that a sample carries the cue; use 0.0 for no cue.",
    )
    if cue not in SUPPORTED_CUES:
        raise ValueError(
            f"Unknown `cue`={cue!r}. Supported cues are: {', '.join(SUPPORTED_CUES)}."
        )
    if cue_class not in CUE_CLASS_MODES:
        raise ValueError(
            f"Unknown `cue_class`={cue_class!r}. Expected one of: "
            f"{', '.join(CUE_CLASS_MODES)}."
        )
    lo_obj, hi_obj = _check_n_objects(n_objects)
    if not isinstance(same_class, (bool, np.bool_)):
        raise ValueError(f"`same_class` must be True or False, got {same_class!r}.")
    same_class = bool(same_class)
    noise_f = _check_float("noise", noise, 0.0, None, hint="Use e.g. noise=0.05, or 0 for none.")
    seed = _check_seed(seed)
    size_lo, size_hi = _check_size_range(size_range, size)
    if not same_class and hi_obj > k:
        raise ValueError(
            f"same_class=False needs distinct classes for the objects of an image, but "
            f"n_objects={n_objects!r} allows {hi_obj} objects with only {k} classes. "
            f"Use at most {k} objects, more classes, or same_class=True."
        )
    reserved = reserved_region(size)[2]
    r_grid, _ = _grid_layout(hi_obj, size, reserved)
    if r_grid < _MIN_FALLBACK_RADIUS:
        raise ValueError(
            f"n_objects={n_objects!r} is too many for image_size={size}: non-overlapping "
            f"objects would be under {2 * _MIN_FALLBACK_RADIUS:.0f} px across. Use fewer "
            "objects or a larger image_size."
        )

    s_labels, s_layout, s_colour, s_back, s_noise, s_cue = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6)
    )

    # Labels: exactly balanced, shuffled.
    labels = s_labels.permutation(np.arange(n, dtype=np.int64) % k)

    # Layout: counts, classes, sizes, rotations, positions.
    counts = s_layout.integers(lo_obj, hi_obj + 1, size=n)
    slots = np.arange(hi_obj)[None, :]
    valid = slots < counts[:, None]
    if same_class:
        object_labels = np.where(valid, labels[:, None], -1)
    else:
        keys = s_layout.random((n, k))
        keys[np.arange(n), labels] = -1.0  # the label sorts first
        order = np.argsort(keys, axis=1)[:, :hi_obj]
        object_labels = np.where(valid, order, -1)
    object_labels = object_labels.astype(np.int64)
    raw = s_layout.uniform(size_lo, size_hi, size=(n, hi_obj)) * size / 2.0
    raw = np.where(valid, raw, -1.0)
    radii = -np.sort(-raw, axis=1)  # descending: object 0 is the largest
    theta = s_layout.uniform(0.0, 2.0 * math.pi, size=(n, hi_obj))
    cy, cx, radii = _place_objects(s_layout, counts, radii, size, reserved)

    # Object masks.
    object_masks = np.zeros((n, hi_obj, size, size), dtype=bool)
    img_idx, slot_idx = np.nonzero(valid)
    obj_cls = object_labels[img_idx, slot_idx]
    for c, shape in enumerate(names):
        sel = np.flatnonzero(obj_cls == c)
        if sel.size:
            ii, jj = img_idx[sel], slot_idx[sel]
            object_masks[ii, jj] = _rasterise(
                shape, cy[ii, jj], cx[ii, jj], radii[ii, jj], theta[ii, jj], size
            )

    # Colours, independent of the class.
    hsv = s_colour.random((n, hi_obj, 3))
    colours = _hsv_to_rgb(hsv[..., 0], 0.3 + 0.7 * hsv[..., 1], 0.75 + 0.25 * hsv[..., 2])
    colours = colours.astype(np.float32)

    # Background, then objects (channel-first while painting: faster).
    images = _backgrounds(s_back, n, size)
    ii, jj, yy, xx = np.nonzero(object_masks)
    images[ii, :, yy * size + xx] = colours[ii, jj]
    images = images.reshape(n, 3, size, size)

    # Spurious cue.
    u_cue = s_cue.random(n)
    random_cls = s_cue.integers(0, k, size=n)
    has_cue = u_cue < rate
    if cue_class == "own":
        shown = labels
    elif cue_class == "shifted":
        shown = (labels + 1) % k
    else:
        shown = random_cls.astype(np.int64)
    cue_labels = np.where(has_cue, shown, -1).astype(np.int64)
    y0, x0, y1, x1 = cue_region(size)
    cue_masks = np.zeros((n, size, size), dtype=bool)
    cue_masks[has_cue, y0:y1, x0:x1] = True
    if has_cue.any():
        palette = cue_colors(k)
        images[has_cue, :, y0:y1, x0:x1] = palette[cue_labels[has_cue]][:, :, None, None]

    # Pixel noise (same stream whatever the cue), clip, channels-last.
    if noise_f > 0:
        images += _gaussian_noise(s_noise, images.shape, noise_f)
    np.clip(images, 0.0, 1.0, out=images)
    images = np.ascontiguousarray(images.transpose(0, 2, 3, 1))

    # Class masks and tight boxes (max exclusive).
    masks = np.any(object_masks & (object_labels == labels[:, None])[:, :, None, None], axis=1)
    rows = masks.any(axis=2)
    cols = masks.any(axis=1)
    boxes = np.stack(
        [
            rows.argmax(axis=1),
            cols.argmax(axis=1),
            size - rows[:, ::-1].argmax(axis=1),
            size - cols[:, ::-1].argmax(axis=1),
        ],
        axis=1,
    ).astype(np.int64)

    config = {
        "n": n,
        "image_size": size,
        "classes": names,
        "spurious_rate": rate,
        "cue": cue,
        "cue_class": cue_class,
        "n_objects": (lo_obj, hi_obj),
        "same_class": same_class,
        "noise": noise_f,
        "seed": seed,
        "size_range": (size_lo, size_hi),
    }
    return SyntheticShapes(
        images=images.astype(np.float32, copy=False),
        labels=labels,
        masks=masks,
        boxes=boxes,
        cue_masks=cue_masks,
        has_cue=has_cue,
        cue_labels=cue_labels,
        object_masks=object_masks,
        object_labels=object_labels,
        class_names=names,
        config=config,
    )


def make_probe_set(
    ds: SyntheticShapes, per_class: int = 2, seed: int = 0, *, with_cue: bool | None = None
) -> np.ndarray:
    """Pick a fixed, class-balanced set of probe samples.

    Parameters
    ----------
    ds : SyntheticShapes
        Dataset to pick from.
    per_class : int, default 2
        Number of samples per class, ``>= 1``.
    seed : int, default 0
        Seed of the choice; the result is deterministic.
    with_cue : bool or None, default None
        ``None`` picks from all samples, ``True`` only from samples carrying
        the spurious cue, ``False`` only from samples without it.

    Returns
    -------
    numpy.ndarray
        ``int64`` indices into ``ds``, grouped by class (class 0 first),
        ascending within a class; ``len == per_class * ds.num_classes``.
        Use ``ds[indices]`` to get the probe dataset.

    Raises
    ------
    ValueError
        If ``per_class`` is invalid or a class has too few eligible samples.
    """
    if not isinstance(ds, SyntheticShapes):
        raise ValueError(
            f"`ds` must be a SyntheticShapes dataset (from make_shapes), got "
            f"{type(ds).__name__}."
        )
    per_class = _check_int("per_class", per_class, 1, hint="e.g. per_class=2")
    seed = _check_seed(seed)
    if with_cue is not None and not isinstance(with_cue, (bool, np.bool_)):
        raise ValueError(f"`with_cue` must be None, True or False, got {with_cue!r}.")
    eligible = np.ones(len(ds), dtype=bool) if with_cue is None else ds.has_cue == bool(with_cue)
    rng = np.random.default_rng(seed)
    picked = []
    for c in range(ds.num_classes):
        idx = np.flatnonzero((ds.labels == c) & eligible)
        if idx.size < per_class:
            extra = "" if with_cue is None else f" with with_cue={with_cue}"
            raise ValueError(
                f"Class {c} ({ds.class_names[c]!r}) has only {idx.size} samples{extra}, "
                f"but per_class={per_class} were requested. Use a smaller per_class or "
                "a larger dataset."
            )
        picked.append(np.sort(rng.choice(idx, size=per_class, replace=False)))
    return np.concatenate(picked).astype(np.int64)


def make_biased_pair(
    n: int = 512,
    image_size: int = 64,
    spurious_rate: float = 0.95,
    seed: int = 0,
    **kwargs: Any,
) -> tuple[SyntheticShapes, SyntheticShapes]:
    """Generate a biased dataset and its cue-free twin.

    Parameters
    ----------
    n : int, default 512
        Number of images in each dataset.
    image_size : int, default 64
        Side length of the images.
    spurious_rate : float, default 0.95
        Cue probability of the biased dataset (``cue_class="own"`` unless
        given in ``kwargs``).
    seed : int, default 0
        Seed shared by both datasets.
    **kwargs
        Further keyword arguments of :func:`make_shapes` (``classes``,
        ``n_objects``, ``noise``, ...), applied to both.

    Returns
    -------
    biased, clean : SyntheticShapes
        Same labels, objects, colours, backgrounds and noise; ``clean`` has
        ``spurious_rate=0``, so the two differ only inside
        ``biased.cue_masks``.
    """
    biased = make_shapes(n, image_size, spurious_rate=spurious_rate, seed=seed, **kwargs)
    clean = make_shapes(n, image_size, spurious_rate=0.0, seed=seed, **kwargs)
    return biased, clean
