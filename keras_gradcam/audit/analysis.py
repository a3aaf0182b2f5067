"""Where a class's evidence sits: per-image top regions, their frequency, the flagged region.

Everything here is numpy on heatmaps already computed, so it is testable without a model.

Definitions (the defaults and why are in :func:`keras_gradcam.audit.audit`'s Notes):

* the **top region** ``R_i`` of map ``h_i``: its ``top`` share of pixels with the highest values
  (the ``k = max(1, round(top * H * W))`` largest; ties at the threshold included; an all-zero
  map has an empty region);
* the **frequency** of class ``c``: ``F_c(p) = |{i in c : p in R_i}| / N_c``, the share of the
  class's images whose top region holds pixel ``p``;
* the **flagged region** ``S_c = {p : F_c(p) >= min_frequency}``: pixels in the top region of at
  least that share of the class's images;
* the **location consistency** ``kappa_c = sum_{p in S_c} F_c(p) / sum_p F_c(p)``: the share of all
  the class's top-region pixels that fall inside ``S_c`` (1 when every image puts its evidence at
  the same place, near 0 when the evidence moves with the object).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "top_regions",
    "flagged_region",
    "consistency",
    "describe_region",
    "ClassSums",
    "Keeper",
]


def top_regions(heatmaps: np.ndarray, top: float) -> np.ndarray:
    """The top ``top`` share of each map's pixels, as boolean masks.

    Parameters
    ----------
    heatmaps : ndarray of shape (n, height, width)
        Non-negative maps.
    top : float
        Share of pixels kept, in (0, 1].

    Returns
    -------
    ndarray of shape (n, height, width), bool
        ``h >= t_i`` where ``t_i`` is the ``k``-th largest value of map ``i``,
        ``k = max(1, round(top * height * width))``, and ``h > 0`` (an all-zero map keeps nothing).
    """
    h = np.asarray(heatmaps, np.float32)
    n = h.shape[0]
    flat = h.reshape(n, -1)
    k = max(1, int(round(top * flat.shape[1])))
    threshold = np.partition(flat, flat.shape[1] - k, axis=1)[:, flat.shape[1] - k]
    return ((flat >= threshold[:, None]) & (flat > 0)).reshape(h.shape)


def flagged_region(frequency: np.ndarray, min_frequency: float) -> np.ndarray:
    """``S = {p : F(p) >= min_frequency}``, boolean, shaped like ``frequency``."""
    return np.asarray(frequency) >= min_frequency


def consistency(frequency: np.ndarray, region: np.ndarray) -> float:
    """``sum(F[S]) / sum(F)``: the share of the top-region pixels inside ``region`` (0 if F is all zero)."""
    f = np.asarray(frequency, np.float64)
    total = f.sum()
    return float(f[np.asarray(region, bool)].sum() / total) if total > 0 else 0.0


def describe_region(region: np.ndarray) -> str:
    """Where a region lies and how large it is, in words: ``"the top-left 6 %"``.

    The place is the cell of a 3 x 3 grid holding the region's centroid (``top``/``middle``/``bottom``
    by ``left``/``centre``/``right``; the middle cell is ``centre``), except for a region that touches
    three or four edges of the image (``border``) or two opposite ones (``left and right edges``,
    ``top and bottom edges``), such as parts of a frame, whose centroid would say "centre"; the
    size is the region's share of the image, rounded to a whole percent (at least 1 %).
    """
    r = np.asarray(region, bool)
    if not r.any():
        return "no region"
    h, w = r.shape
    size = f"{max(1, round(100 * r.mean()))} %"
    top, bottom, left, right = (bool(e.any()) for e in (r[0], r[-1], r[:, 0], r[:, -1]))
    if sum((top, bottom, left, right)) >= 3:  # a frame, or most of one: its centroid would say "centre"
        return f"the border {size}"
    if left and right:
        return f"the left and right edges {size}"
    if top and bottom:
        return f"the top and bottom edges {size}"
    ys, xs = np.nonzero(r)
    row = ("top", "middle", "bottom")[min(2, int(3 * (ys.mean() + 0.5) / h))]
    col = ("left", "centre", "right")[min(2, int(3 * (xs.mean() + 0.5) / w))]
    place = "centre" if (row, col) == ("middle", "centre") else col if row == "middle" else row if col == "centre" else f"{row}-{col}"
    return f"the {place} {size}"


class ClassSums:
    """Running per-class sums over a dataset: maps, top-region counts and images.

    Memory is ``O(K * H * W * C)`` whatever the number of images.

    Parameters
    ----------
    num_classes : int
    shape : (int, int)
        Height and width of the maps.
    channels : int
        Channels of the images (for the mean image).
    """

    def __init__(self, num_classes: int, shape: tuple[int, int], channels: int):
        self.count = np.zeros(num_classes, np.int64)
        self.heat = np.zeros((num_classes, *shape), np.float64)
        self.top = np.zeros((num_classes, *shape), np.int64)
        self.image = np.zeros((num_classes, *shape, channels), np.float64)

    def add(self, labels: np.ndarray, heatmaps: np.ndarray, regions: np.ndarray, images: np.ndarray) -> None:
        """Add a batch: ``labels (B,)``, ``heatmaps (B, H, W)``, ``regions (B, H, W)`` bool, ``images (B, H, W, C)``."""
        np.add.at(self.count, labels, 1)
        np.add.at(self.heat, labels, heatmaps)
        np.add.at(self.top, labels, regions.astype(np.int64))
        np.add.at(self.image, labels, images)

    def means(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean heatmap, frequency ``F`` and mean image per class (zeros for a class with no image)."""
        n = np.maximum(self.count, 1).astype(np.float64)
        return (
            (self.heat / n[:, None, None]).astype(np.float32),
            (self.top / n[:, None, None]).astype(np.float32),
            (self.image / n[:, None, None, None]).astype(np.float32),
        )


class Keeper:
    """The ``k`` items with the smallest keys seen so far (bounded memory, one merge per batch)."""

    def __init__(self, k: int):
        self.k = k
        self.keys = np.zeros((0,), np.float64)
        self.items: dict[str, np.ndarray] = {}

    def offer(self, keys: np.ndarray, **items: np.ndarray) -> None:
        """Offer a batch of candidates: their keys ``(B,)`` and arrays with a leading axis ``B``."""
        if len(keys) == 0 or self.k == 0:
            return
        keys = np.concatenate([self.keys, np.asarray(keys, np.float64)])
        joined = {n: np.concatenate([self.items[n], a]) if n in self.items else np.asarray(a) for n, a in items.items()}
        keep = np.argsort(keys, kind="stable")[: self.k]
        self.keys = keys[keep]
        self.items = {n: a[keep] for n, a in joined.items()}

    def __len__(self) -> int:
        return len(self.keys)
