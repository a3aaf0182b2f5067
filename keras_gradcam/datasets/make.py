"""The generators: :func:`make_shapes`, :func:`make_probe_set` and :func:`make_biased_pair`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..core import validate
from .background import backgrounds, gaussian_noise
from .checks import (
    check_bool,
    check_classes,
    check_float,
    check_image_size,
    check_int,
    check_n_objects,
    check_seed,
    check_size_range,
    reworded,
)
from .container import SyntheticShapes
from .cues import (
    BACKGROUND_TINT,
    CUE_CLASS_MODES,
    SUPPORTED_CUES,
    border_region,
    cue_colors,
    cue_region,
    position_region,
    reserved_region,
)
from .layout import MIN_FALLBACK_RADIUS, grid_layout, place_objects
from .shapes import rasterise

__all__ = ["make_shapes", "make_probe_set", "make_biased_pair"]


def make_shapes(
    n: int = 512,
    image_size: int = 64,
    classes: Sequence[str] = ("circle", "square", "triangle"),
    *,
    spurious_rate: float = 0.0,
    cue: str = "corner",
    cue_class: str = "own",
    cue_classes: Sequence[int] | None = None,
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
    cue : {"corner", "border", "background", "position"}, default "corner"
        Kind of spurious cue; in each, the colour :func:`cue_colors` ``[c]``
        identifies class ``c``.  ``"corner"``: a solid square patch at
        :func:`cue_region` (about 10 % of the image side, top-left corner).
        Objects never enter :func:`reserved_region`, so cue and objects never
        overlap.  ``"border"``: a solid frame on :func:`border_region` (6 % of
        the side wide).  ``"background"``: every background pixel mixed with
        the colour, ``(1 - t) * pixel + t * colour``, ``t =``
        :data:`BACKGROUND_TINT` (0.4).  ``"position"``: a white patch the size
        of the corner patch whose *place* names the class,
        :func:`position_region` (class 0 in the top-left corner, the last
        class at the top right).  For the last three an object reaching into
        the cue is drawn on top: ``cue_masks`` holds the cue's pixels not
        covered by an object.  The layout, colours, background and noise do
        not depend on ``cue``, so datasets differing only in ``cue`` have the
        same objects.
    cue_class : {"own", "shifted", "random"}, default "own"
        Which class colour the cue shows: ``"own"`` the sample's label (a
        spurious shortcut), ``"shifted"`` ``(label + 1) % K`` (a conflicting
        cue, for testing whether a model relies on it), ``"random"`` a
        uniformly random class (an uninformative cue).
    cue_classes : sequence of int or None, default None
        The classes whose cue is ever shown (the class the cue names, after
        ``cue_class``); ``None``: every class.  E.g. ``cue_classes=(1,)``
        with ``spurious_rate=1`` puts the cue on every class-1 image and on
        no other: class 0 is then told apart by the cue's *absence*.
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
    n = check_int("n", n, 1, hint="the number of images, e.g. n=512")
    size = check_image_size(image_size)
    names = check_classes(classes)
    k = len(names)
    rate = check_float(
        "spurious_rate", spurious_rate, 1.0,
        hint="It is the probability that a sample carries the cue; use 0.0 for no cue.",
    )
    with reworded(f"Unknown `cue`={cue!r}. Supported cues are: {', '.join(SUPPORTED_CUES)}."):
        validate.one_of("cue", cue, SUPPORTED_CUES)
    with reworded(
        f"Unknown `cue_class`={cue_class!r}. Expected one of: {', '.join(CUE_CLASS_MODES)}."
    ):
        validate.one_of("cue_class", cue_class, CUE_CLASS_MODES)
    if cue_classes is not None:
        listed = list(cue_classes) if isinstance(cue_classes, (list, tuple, np.ndarray, range)) else None
        if not listed or not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) and 0 <= c < k for c in listed):
            raise ValueError(
                f"`cue_classes` must be a non-empty sequence of class indices in [0, {k - 1}], or None for every "
                f"class; got {cue_classes!r}."
            )
        cue_classes = tuple(sorted({int(c) for c in listed}))
    lo_obj, hi_obj = check_n_objects(n_objects)
    same_class = check_bool("same_class", same_class)
    noise_f = check_float("noise", noise, hint="Use e.g. noise=0.05, or 0 for none.")
    seed = check_seed(seed)
    size_lo, size_hi = check_size_range(size_range, size)
    if not same_class and hi_obj > k:
        raise ValueError(
            f"same_class=False needs distinct classes for the objects of an image, but "
            f"n_objects={n_objects!r} allows {hi_obj} objects with only {k} classes. "
            f"Use at most {k} objects, more classes, or same_class=True."
        )
    reserved = reserved_region(size)[2]
    r_grid, _ = grid_layout(hi_obj, size, reserved)
    if r_grid < MIN_FALLBACK_RADIUS:
        raise ValueError(
            f"n_objects={n_objects!r} is too many for image_size={size}: non-overlapping "
            f"objects would be under {2 * MIN_FALLBACK_RADIUS:.0f} px across. Use fewer "
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
    cy, cx, radii = place_objects(s_layout, counts, radii, size, reserved)

    # Object masks.
    object_masks = np.zeros((n, hi_obj, size, size), dtype=bool)
    img_idx, slot_idx = np.nonzero(valid)
    obj_cls = object_labels[img_idx, slot_idx]
    for c, shape in enumerate(names):
        sel = np.flatnonzero(obj_cls == c)
        if sel.size:
            ii, jj = img_idx[sel], slot_idx[sel]
            object_masks[ii, jj] = rasterise(
                shape, cy[ii, jj], cx[ii, jj], radii[ii, jj], theta[ii, jj], size
            )

    # Colours, independent of the class: hue in [0, 1), saturation in [0.3, 1], value in [0.75, 1].
    hsv = s_colour.random((n, hi_obj, 3)) * (1.0, 0.7, 0.25) + (0.0, 0.3, 0.75)
    from matplotlib.colors import hsv_to_rgb  # lazy: importing the package loads no matplotlib

    colours = hsv_to_rgb(hsv).astype(np.float32)

    # Background, then objects (channel-first while painting: faster).
    images = backgrounds(s_back, n, size)
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
    if cue_classes is not None:
        has_cue &= np.isin(shown, cue_classes)
    cue_labels = np.where(has_cue, shown, -1).astype(np.int64)
    cue_masks = np.zeros((n, size, size), dtype=bool)
    if cue == "corner":
        y0, x0, y1, x1 = cue_region(size)
        cue_masks[has_cue, y0:y1, x0:x1] = True
        if has_cue.any():
            palette = cue_colors(k)
            images[has_cue, :, y0:y1, x0:x1] = palette[cue_labels[has_cue]][:, :, None, None]
    elif has_cue.any():
        # the frame, or every background pixel; objects stay on top, so the masks stay exact
        free = ~object_masks[has_cue].any(axis=1)
        if cue == "position":
            boxes = np.zeros((k, size, size), dtype=bool)
            for c in range(k):
                y0, x0, y1, x1 = position_region(size, c, k)
                boxes[c, y0:y1, x0:x1] = True
            cue_masks[has_cue] = free & boxes[cue_labels[has_cue]]
            colour = np.ones((int(has_cue.sum()), 3, 1), np.float32)  # white: the place tells the class
        else:
            cue_masks[has_cue] = free & border_region(size) if cue == "border" else free
            colour = cue_colors(k)[cue_labels[has_cue]][:, :, None]  # (m, 3, 1)
        sub = images[has_cue].reshape(-1, 3, size * size)
        where = cue_masks[has_cue].reshape(-1, 1, size * size)
        if cue in ("border", "position"):
            painted = np.broadcast_to(colour, sub.shape)
        else:
            painted = (1.0 - BACKGROUND_TINT) * sub + BACKGROUND_TINT * colour
        images[has_cue] = np.where(where, painted, sub).reshape(-1, 3, size, size).astype(np.float32)

    # Pixel noise (same stream whatever the cue), clip, channels-last.
    if noise_f > 0:
        images += gaussian_noise(s_noise, images.shape, noise_f)
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
        "cue_classes": cue_classes,
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
    per_class = check_int("per_class", per_class, 1, hint="e.g. per_class=2")
    seed = check_seed(seed)
    with_cue = check_bool("with_cue", with_cue, allow_none=True)
    eligible = np.ones(len(ds), dtype=bool) if with_cue is None else ds.has_cue == with_cue
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
