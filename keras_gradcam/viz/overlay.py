"""Pictures: a heatmap blended over its image, as uint8 RGB.

:func:`overlay` is the one function that turns an image and a heatmap into something to look at;
the TensorBoard callback uses it too. It needs only NumPy (Matplotlib is imported lazily, for its
colormaps, never ``pyplot``).
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from ..core.postprocess import resize

__all__ = ["overlay", "colormap_table"]

# A float image whose values all lie in [0, 1 + _TOL_UNIT] is read as [0, 1] (small overshoots from
# augmentation or noise are clipped rather than mistaken for a [0, 255] image). One in
# [-_TOL_BYTE, 255 + _TOL_BYTE] is read as [0, 255], except when it has values below -_TOL_UNIT and
# none above _BYTE_PEAK: that is a preprocessed input ([-1, 1], or ImageNet mean/std-normalised,
# whose maximum is 2.64), not a [0, 255] photo, and it is min-max rescaled like any other range.
_TOL_UNIT = 0.05
_TOL_BYTE = 1.0
_BYTE_PEAK = 3.0


@functools.lru_cache(maxsize=32)
def _lut(colormap: str) -> np.ndarray:
    """The colormap sampled at 256 levels: uint8 ``(256, 3)``."""
    import matplotlib  # lazy: only for the colormap table, never pyplot

    try:
        cmap = matplotlib.colormaps[colormap]
    except KeyError:
        names = sorted(n for n in matplotlib.colormaps if not n.endswith("_r"))
        raise ValueError(
            f"unknown colormap {colormap!r}; use a Matplotlib colormap name such as 'jet', 'turbo', "
            f"'inferno' or 'viridis' (available: {', '.join(names[:40])}, ...)."
        ) from None
    return _table(cmap)


def _table(cmap) -> np.ndarray:
    rgba = np.asarray(cmap(np.linspace(0.0, 1.0, 256)), dtype=np.float64)
    return np.round(rgba[:, :3] * 255.0).astype(np.uint8)


def colormap_table(colormap) -> np.ndarray:
    if isinstance(colormap, str):
        return _lut(colormap)
    if callable(colormap) and hasattr(colormap, "N"):  # a matplotlib Colormap object
        return _table(colormap)
    raise TypeError(f"colormap must be a Matplotlib colormap name (e.g. 'jet') or a Colormap; got {colormap!r}.")


def _scale_offset(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image ``(scale, offset)`` so that ``images * scale + offset`` lies in [0, 1]."""
    n = images.shape[0]
    if images.dtype == np.bool_ or images.dtype.kind in "iu":
        scale = 1.0 if images.dtype == np.bool_ else 1.0 / 255.0
        return np.full((n, 1, 1, 1), scale, np.float32), np.zeros((n, 1, 1, 1), np.float32)
    if images.dtype.kind != "f":
        raise TypeError(f"image must be a numeric array; got dtype {images.dtype}.")
    flat = images.reshape(n, -1)
    lo, hi = flat.min(axis=1), flat.max(axis=1)
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise ValueError("image contains NaN or inf values; pass a finite image.")
    unit = (lo >= -_TOL_UNIT) & (hi <= 1.0 + _TOL_UNIT)
    byte = ~unit & (lo >= -_TOL_BYTE) & (hi <= 255.0 + _TOL_BYTE) & ((lo >= -_TOL_UNIT) | (hi > _BYTE_PEAK))
    span = np.where(hi > lo, hi - lo, 1.0)
    scale = np.where(unit, 1.0, np.where(byte, 1.0 / 255.0, 1.0 / span))
    offset = np.where(unit | byte, 0.0, -lo / span)
    return scale.astype(np.float32).reshape(n, 1, 1, 1), offset.astype(np.float32).reshape(n, 1, 1, 1)


def overlay(image, heatmap, alpha: float = 0.4, colormap="jet") -> np.ndarray:
    """Blend a heatmap, coloured with a colormap, over its image.

    Parameters
    ----------
    image : array-like of shape (height, width), (height, width, 1 | 3 | 4), or a batch (n, ...) of them
        uint8 in [0, 255], or float. A float image whose values lie in [0, 1] is used as is, one in
        [0, 255] is divided by 255, and any other range (a preprocessed input: ``[-1, 1]``,
        ImageNet mean-subtracted or mean/std-normalised) is min-max rescaled per image, for display
        only. Values down to -1 still count as [0, 255] when the image also exceeds 3 (noise
        around a photo), but an image with negative values and a maximum of at most 3 is a
        preprocessed one. Grayscale is repeated to RGB; an alpha channel is dropped.
    heatmap : array-like of shape (h, w), or (n, h, w) for a batch
        Values in [0, 1] (as in :attr:`Explanation.heatmaps`; values outside are clipped). Resized
        bilinearly (half-pixel centres, as ``tf.image.resize``) to the image size if needed. A
        batch of heatmaps makes the call vectorised: ``image`` is then a batch of the same length.
    alpha : float, default=0.4
        Opacity of the heatmap, in [0, 1]: 0 gives the image, 1 the coloured heatmap alone.
    colormap : str or matplotlib.colors.Colormap, default="jet"
        Any Matplotlib colormap name (``"jet"``, ``"turbo"``, ``"inferno"``, ``"viridis"``, ...).

    Returns
    -------
    ndarray of shape (height, width, 3), or (n, height, width, 3) for a batch, uint8
        ``round((1 - alpha) * image + alpha * colormap(heatmap))``, RGB, at the image's size.

    Raises
    ------
    ValueError
        Shapes that do not fit together, ``alpha`` outside [0, 1], non-finite values, or an
        unknown colormap name (the message lists some valid ones).
    TypeError
        Non-numeric arrays or a colormap that is neither a name nor a Colormap.

    Notes
    -----
    The colormap is sampled at 256 levels once per name and applied by table look-up, so a
    batch costs a few array operations. Matplotlib is imported on first use, ``pyplot`` never.

    Examples
    --------
    >>> import numpy as np
    >>> import keras_gradcam as kg
    >>> image = np.zeros((64, 64, 3), np.float32)
    >>> heat = np.zeros((8, 8), np.float32); heat[2, 3] = 1.0
    >>> out = kg.overlay(image, heat, alpha=0.5, colormap="viridis")
    >>> out.shape, out.dtype.name
    ((64, 64, 3), 'uint8')
    >>> kg.overlay(np.zeros((4, 32, 32)), np.ones((4, 32, 32))).shape   # a batch
    (4, 32, 32, 3)
    """
    number = isinstance(alpha, (int, float, np.integer, np.floating)) and not isinstance(alpha, (bool, np.bool_))
    if not number or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1] (the heatmap's opacity); got {alpha!r}.")
    table = colormap_table(colormap)
    heat = np.asarray(heatmap)
    img = np.asarray(image)
    if heat.dtype.kind not in "fiub":
        raise TypeError(f"heatmap must be a numeric array; got dtype {heat.dtype}.")
    batched = heat.ndim == 3
    if heat.ndim not in (2, 3):
        raise ValueError(
            f"heatmap must have shape (h, w) or, for a batch, (n, h, w); got shape {heat.shape}."
        )
    if not batched:
        heat, img = heat[None], img[None]
    n = heat.shape[0]
    if img.ndim == 3:
        img = img[..., None]  # grayscale (n, H, W)
    if img.ndim != 4 or img.shape[-1] not in (1, 3, 4):
        what = "(H, W), (H, W, 1), (H, W, 3) or (H, W, 4)"
        raise ValueError(
            f"image must have shape {what}" + (" per sample, with a leading batch axis" if batched else "")
            + f"; got shape {np.asarray(image).shape}"
            + (" with a batch of heatmaps" if batched else "")
            + ". Channels-first images need np.moveaxis(image, 0, -1) first."
        )
    if img.shape[0] != n:
        raise ValueError(f"image batch has {img.shape[0]} samples but heatmap has {n}; give one heatmap per image.")
    if min(heat.shape[1:]) < 1 or min(img.shape[1:3]) < 1:
        raise ValueError(f"empty image or heatmap: shapes {img.shape} and {heat.shape}.")
    heat = heat.astype(np.float32, copy=False)
    if not np.isfinite(heat).all():
        raise ValueError("heatmap contains NaN or inf values; pass a finite map, e.g. from kg.explain().")
    height, width = img.shape[1:3]
    heat = np.asarray(resize(tf.constant(np.clip(heat, 0.0, 1.0), tf.float32), (height, width)))
    levels = np.rint(np.clip(heat, 0.0, 1.0) * 255.0).astype(np.intp)
    if img.shape[-1] == 4:
        img = img[..., :3]  # drop the alpha channel
    scale, offset = _scale_offset(img)
    # (1 - alpha) * 255 * clip(image * scale + offset, 0, 1) + alpha * colour, in one float32 buffer
    k = np.float32((1.0 - alpha) * 255.0)
    base = img * (scale * k)  # float32 (scale is float32)
    if offset.any():
        base += offset * k
    np.clip(base, 0.0, k, out=base)
    out = np.take(table.astype(np.float32) * np.float32(alpha), levels, axis=0)  # (n, H, W, 3)
    out += base  # grayscale (n, H, W, 1) broadcasts over the colour channels
    np.rint(out, out=out)
    out = out.astype(np.uint8)  # already within [0, 255]: both terms are, and so is their sum
    return out if batched else out[0]
