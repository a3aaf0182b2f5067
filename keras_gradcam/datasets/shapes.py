"""The shapes: inside tests in a unit frame, and the rasteriser that turns objects into masks."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["SUPPORTED_SHAPES", "rasterise"]

SUPPORTED_SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "ring")
"""Names of the shapes ``make_shapes`` can draw (any subset, any order)."""

# Objects rasterised per chunk (bounds temporary memory).
_CHUNK = 256

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


def rasterise(
    shape: str, cy: np.ndarray, cx: np.ndarray, r: np.ndarray, theta: np.ndarray, size: int
) -> np.ndarray:
    """Rasterise ``m`` objects of one shape.

    Parameters
    ----------
    shape : str
        One of :data:`SUPPORTED_SHAPES`.
    cy, cx, r, theta : ndarray of shape (m,)
        Centre (pixels), circumradius (pixels) and rotation (radians) of each object.
    size : int
        Side length of the square images.

    Returns
    -------
    ndarray of shape (m, size, size), bool
        One mask per object, sampled at pixel centres; never empty (an object too small to
        cover a pixel centre gets its centre pixel).
    """
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
