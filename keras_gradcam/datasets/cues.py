"""The spurious cues: the corner patch, the frame, the tinted background and the placed patch, and the colour that names each class."""

from __future__ import annotations

import numpy as np

from .checks import check_image_size, check_int

__all__ = [
    "SUPPORTED_CUES",
    "CUE_CLASS_MODES",
    "BACKGROUND_TINT",
    "cue_region",
    "border_region",
    "position_region",
    "reserved_region",
    "cue_colors",
]

SUPPORTED_CUES: tuple[str, ...] = ("corner", "border", "background", "position")
"""Kinds of spurious cue ``make_shapes`` can add: a corner patch, a frame, a tinted background, a white patch placed by class."""

BACKGROUND_TINT: float = 0.4
"""Weight of the class colour in a ``cue="background"`` pixel: ``(1 - t) * background + t * colour``."""

CUE_CLASS_MODES: tuple[str, ...] = ("own", "shifted", "random")
"""Which class colour a cue-carrying sample gets (the ``cue_class`` argument of ``make_shapes``)."""


def _cue_geometry(image_size: int) -> tuple[int, int]:
    """``(side, margin)`` of the corner patch, in pixels."""
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
    side, margin = _cue_geometry(check_image_size(image_size))
    return (margin, margin, margin + side, margin + side)


def border_region(image_size: int) -> np.ndarray:
    """Return the pixels of the ``"border"`` spurious cue: a frame along the image's edges.

    Parameters
    ----------
    image_size : int
        Side length of the (square) images.

    Returns
    -------
    numpy.ndarray
        ``bool`` ``(image_size, image_size)``, ``True`` on the outer ``w`` rows and columns,
        ``w = max(1, round(0.06 * image_size))`` (2 px for 32 px images, 4 px for 64 px).
        Objects may reach into the frame; where they do, the object is drawn (see
        :func:`make_shapes`).
    """
    size = check_image_size(image_size)
    w = max(1, int(round(0.06 * size)))
    frame = np.zeros((size, size), dtype=bool)
    frame[:w], frame[-w:], frame[:, :w], frame[:, -w:] = True, True, True, True
    return frame


def position_region(image_size: int, k: int, num_classes: int) -> tuple[int, int, int, int]:
    """Return the pixel box of the ``"position"`` cue of class ``k``: the corner patch, moved along the top edge.

    Parameters
    ----------
    image_size : int
        Side length of the (square) images.
    k : int
        The class, ``0 <= k < num_classes``.
    num_classes : int
        Number of classes ``K >= 2``.

    Returns
    -------
    tuple of int
        ``(y_min, x_min, y_max, x_max)``, max exclusive: the patch of :func:`cue_region` (side
        ``s``, margin ``m``) shifted right by ``round(k * (image_size - 2 m - s) / (K - 1))``
        pixels, so class 0's patch is the corner patch and class ``K - 1``'s touches the
        top-right margin; e.g. ``(2, 56, 8, 62)`` for class 2 of 3 at 64 px. Every class's
        patch has the same colour (white): only its position tells the class.
    """
    size = check_image_size(image_size)
    num = check_int("num_classes", num_classes, 2, hint="e.g. num_classes=3")
    k = check_int("k", k, 0, hint=f"a class index below {num}")
    if k >= num:
        raise ValueError(f"k must be a class index below num_classes={num}; got {k}.")
    side, margin = _cue_geometry(size)
    shift = int(round(k * (size - 2 * margin - side) / (num - 1)))
    return (margin, margin + shift, margin + side, margin + shift + side)


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
    side, margin = _cue_geometry(check_image_size(image_size))
    r = 2 * margin + side
    return (0, 0, r, r)


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
    k = check_int("num_classes", num_classes, 2, hint="e.g. num_classes=3")
    hue = np.arange(k, dtype=np.float64) / k
    ones = np.ones_like(hue)
    from matplotlib.colors import hsv_to_rgb  # lazy: importing the package loads no matplotlib

    return hsv_to_rgb(np.stack([hue, ones, ones], axis=-1)).astype(np.float32)
