"""Where the objects go: non-overlapping circles outside the reserved cue corner."""

from __future__ import annotations

import numpy as np

__all__ = ["MIN_FALLBACK_RADIUS", "grid_layout", "place_objects"]

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

MIN_FALLBACK_RADIUS = 1.5
"""Smallest object radius (px) the deterministic grid fallback may use."""


def grid_layout(count: int, size: int, reserved: int) -> tuple[float, np.ndarray]:
    """Lay ``count`` equal circles on a grid below the cue corner (the deterministic fallback).

    Parameters
    ----------
    count : int
        Number of circles.
    size : int
        Side length of the square images.
    reserved : int
        Side of the reserved top-left square (see :func:`~keras_gradcam.datasets.reserved_region`).

    Returns
    -------
    radius : float
        The largest radius that fits (the grid cell less the gap between objects).
    centres : ndarray of shape (count, 2)
        ``(y, x)`` centres, row by row.
    """
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


def place_objects(
    rng: np.random.Generator, counts: np.ndarray, radii: np.ndarray, size: int, reserved: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Place non-overlapping circles avoiding the reserved corner.

    Vectorised rejection sampling over images, one object slot at a time;
    a slot that finds no free spot has its radius shrunk (bounded number of
    times); images that still fail get the :func:`grid_layout`.

    Parameters
    ----------
    rng : numpy.random.Generator
        The layout stream.
    counts : ndarray of shape (n,)
        Objects in each image.
    radii : ndarray of shape (n, k)
        Wanted radius of each slot, descending along a row.
    size, reserved : int
        Image side and side of the reserved top-left square.

    Returns
    -------
    cy, cx, radii : ndarray of shape (n, k)
        Centres and the radii used, NaN for padding slots.
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
        r_grid, centres = grid_layout(c, size, reserved)
        radii[i, :c] = np.minimum(original[i, :c], r_grid)
        cy[i, :c] = centres[:, 0]
        cx[i, :c] = centres[:, 1]
    radii[counts[:, None] <= np.arange(k_max)[None, :]] = np.nan
    return cy, cx, radii
