"""The causal check: paint a class's flagged region over in its images and measure accuracy again."""

from __future__ import annotations

import numpy as np

from ..metrics.stats import gaussian_blur

__all__ = ["FILLS", "paint"]

#: What covers a flagged region: the dataset's mean colour, or a Gaussian blur of the image.
FILLS: dict[str, str] = {
    "mean": "the mean colour of all the audited images, per channel",
    "blur": "the image blurred (Gaussian, kernel 11, sigma 5: the RISE insertion substrate)",
}


def paint(images: np.ndarray, regions: np.ndarray, fill: str, colour: np.ndarray | None = None) -> np.ndarray:
    """Images with their regions covered, as a new array (the input is not changed).

    Parameters
    ----------
    images : ndarray of shape (n, height, width, channels)
    regions : ndarray of shape (n, height, width), bool
        The pixels to cover in each image (one region per image, so one batch can hold images of
        several classes, each covered where its class is flagged).
    fill : {"mean", "blur"}
        See :data:`FILLS`.
    colour : ndarray of shape (channels,), optional
        The mean colour, needed by ``fill="mean"``.

    Returns
    -------
    ndarray, float32, shaped like ``images``
    """
    x = np.asarray(images, np.float32)
    where = np.asarray(regions, bool)[..., None]
    if fill == "blur":
        substrate = gaussian_blur(x)
    else:
        substrate = np.broadcast_to(np.asarray(colour, np.float32), x.shape)
    return np.where(where, substrate, x).astype(np.float32)
