"""The dataset type: :class:`SyntheticShapes`, its arrays, indexing and the stratified split."""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..core import validate
from .checks import check_seed, right_kind

__all__ = ["SyntheticShapes"]

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

    def __getitem__(self, key: Any) -> SyntheticShapes:
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
    ) -> tuple[SyntheticShapes, SyntheticShapes]:
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
        if not right_kind(validate.positive_float, fraction):
            raise ValueError(f"`fraction` must be a float in (0, 1), got {fraction!r}.")
        fraction = float(fraction)
        if not 0.0 < fraction < 1.0:
            raise ValueError(
                f"`fraction` must be in the open interval (0, 1), got {fraction}. "
                "Use e.g. fraction=0.8 for an 80/20 split."
            )
        seed = check_seed(seed)
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
