"""The pixels behind and over the objects: textured backgrounds and Gaussian pixel noise."""

from __future__ import annotations

import numpy as np

__all__ = ["backgrounds", "gaussian_noise"]


def _interp_matrix(size: int, points: int) -> np.ndarray:
    """Linear up-sampling matrix ``(size, points)``.

    Output pixel ``i`` samples the grid at ``t = (i + 0.5) / size * (points - 1)``.

    This is not :func:`keras_gradcam.core.postprocess.resize` on purpose: the texture is a
    random grid stretched so that its first and last points sit at the image's edges, not
    the half-pixel-centre grid of ``tf.image.resize`` (the two differ by up to 0.7 on a
    4-point grid), and it is computed in NumPy float32 matrix products. Either change would
    alter every pixel of every seeded dataset, which must stay bit-identical.
    """
    t = (np.arange(size) + 0.5) / size * (points - 1)
    i0 = np.clip(np.floor(t).astype(np.int64), 0, points - 2)
    w = t - i0
    m = np.zeros((size, points), dtype=np.float32)
    m[np.arange(size), i0] = 1.0 - w
    m[np.arange(size), i0 + 1] = w
    return m


def _smooth_field(rng: np.random.Generator, n: int, size: int, points: int) -> np.ndarray:
    """Smooth random field ``(n, size, size)`` in ``[-1, 1]``: a random square grid, up-sampled."""
    coarse = rng.uniform(-1.0, 1.0, size=(n, points, points)).astype(np.float32)
    m = _interp_matrix(size, points)
    cols = (coarse.reshape(n * points, points) @ m.T).reshape(n, points, size)
    return np.matmul(m, cols)


def backgrounds(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
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


def gaussian_noise(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    """Gaussian noise of std ``std`` drawn from a seeded table of 65,536 normal samples.

    Resampling a large table of exact normal draws is statistically
    indistinguishable from direct sampling for image noise and about twice as
    fast as ``Generator.standard_normal`` for large arrays.
    """
    table = rng.standard_normal(1 << 16, dtype=np.float32) * np.float32(std)
    return table[rng.integers(0, 1 << 16, size=shape, dtype=np.uint16)]
