"""Reading a data source once, batch by batch: datasets, PyDatasets, generators and arrays.

Every source becomes a :class:`Source`: what kind it is, its length when known (for the run's
fingerprint and the progress bar), and :meth:`Source.batches`, which yields ``(images, labels)``
numpy batches starting after the first ``skip`` batches of the source (a resumed run). Arrays and
``PyDataset`` objects are indexed there directly, and ``tf.data`` pipelines skip with
``Dataset.skip`` (nothing before is read); a generator can only be read from its start, so its
first ``skip`` batches are read and dropped, never explained.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ..core.inputs import batch_slice, flat, map_inputs

__all__ = ["Source", "batch_length", "open_source", "split_element"]


def _numpy(value):
    """A tensor, array or structure of them as numpy arrays."""
    return keras.tree.map_structure(lambda v: v.numpy() if tf.is_tensor(v) else np.asarray(v), value)


def split_element(element) -> tuple[Any, Any]:
    """``(images, labels)`` of one batch: a tuple is ``(images, labels[, masks or weights])``.

    Anything else (an array, a tensor, a dict or list of arrays for a multi-input model) is the
    images alone, with no labels.
    """
    if isinstance(element, tuple):
        if not 1 <= len(element) <= 3:
            raise ValueError(
                f"a batch given as a tuple must be (images,), (images, labels) or (images, labels, masks); got a "
                f"tuple of {len(element)} elements. Pass multi-input images as a dict or a list, not a tuple."
            )
        return element[0], (element[1] if len(element) > 1 else None)
    return element, None


@dataclass
class Source:
    """A data source read batch by batch.

    Attributes
    ----------
    kind : str
        ``"arrays"``, ``"tf.data"``, ``"PyDataset"`` or ``"iterable"``.
    n_samples : int or None
        The number of samples, when known before reading.
    n_batches : int or None
        The number of batches, when known before reading.
    """

    kind: str
    n_samples: int | None
    n_batches: int | None
    _read: Any  # skip -> iterator of raw batches

    def batches(self, skip: int = 0) -> Iterator[tuple[Any, Any]]:
        """``(images, labels)`` batches as numpy, after the first ``skip`` batches of the source."""
        for element in self._read(skip):
            images, labels = split_element(element)
            yield _numpy(images), (None if labels is None else _numpy(labels))


def _arrays(data, batch_size: int) -> Source:
    images, labels = split_element(data)
    images = _numpy(images)
    labels = None if labels is None else np.asarray(_numpy(labels))
    arrays = flat(images)
    if not arrays or any(np.ndim(a) == 0 for a in arrays):
        raise ValueError(f"data holds no batch of images (got {type(data).__name__}); pass an array of shape (n_samples, ...).")
    n = int(arrays[0].shape[0])
    if labels is not None and len(labels) != n:
        raise ValueError(f"data has {n} images but {len(labels)} labels; pass one label per image.")

    def read(skip):
        for start in range(skip * batch_size, n, batch_size):
            x = batch_slice(images, start, start + batch_size)
            yield x if labels is None else (x, labels[start : start + batch_size])

    return Source("arrays", n, -(-n // batch_size), read)


def _dataset(data: tf.data.Dataset, batch_size: int, rank: int | None) -> Source:
    spec = data.element_spec
    first = keras.tree.flatten(spec[0] if isinstance(spec, tuple) else spec)
    if not first or not all(isinstance(s, tf.TensorSpec) for s in first):
        raise TypeError(f"the dataset's elements must be tensors (images, or (images, labels) tuples); got {spec}.")
    # batched: elements of the model input's rank (a batch of a fixed size too, as after
    # batch(..., drop_remainder=True)); where that rank is unknown, a batch axis of unknown size
    shape = first[0].shape
    if rank is not None and shape.rank is not None:
        batched = shape.rank == rank
    else:
        batched = shape.rank is not None and shape.rank > 0 and shape[0] is None
    count = int(data.cardinality())
    if count == tf.data.INFINITE_CARDINALITY:
        raise ValueError("the dataset is infinite (a .repeat() without count?); take a finite part, e.g. data.take(n).")
    known = count >= 0
    if batched:
        n_samples, n_batches = None, (count if known else None)
    else:
        n_samples, n_batches = (count if known else None), (-(-count // batch_size) if known else None)

    def read(skip):
        ds = data.skip(skip) if batched else data.skip(skip * batch_size).batch(batch_size)
        return iter(ds)

    return Source("tf.data", n_samples, n_batches, read)


def _pydataset(data, batch_size: int) -> Source:
    n = getattr(data, "num_batches", None)
    if n is None:
        raise ValueError(
            f"the PyDataset {type(data).__name__} has no length (num_batches is None: infinite?); give it a __len__."
        )

    def read(skip):
        for i in range(skip, int(n)):
            yield data[i]

    return Source("PyDataset", None, int(n), read)


def _iterable(data) -> Source:
    def read(skip):
        for i, element in enumerate(data):
            if i >= skip:
                yield element

    return Source("iterable", None, len(data) if hasattr(data, "__len__") else None, read)


def open_source(data, batch_size: int, rank: int | None = None) -> Source:
    """``data`` as a :class:`Source` (see :func:`keras_gradcam.explain_dataset` for the kinds).

    ``rank`` is that of the model's (first) input, batch axis included, when known: a
    ``tf.data`` element of that rank is a batch.

    Raises
    ------
    TypeError
        ``data`` is none of the supported kinds.
    ValueError
        An infinite dataset, or arrays whose labels do not match the images.
    """
    if isinstance(data, tf.data.Dataset):
        return _dataset(data, batch_size, rank)
    if isinstance(data, keras.utils.PyDataset):
        return _pydataset(data, batch_size)
    if isinstance(data, (np.ndarray, dict, tuple)) or tf.is_tensor(data):
        return _arrays(data, batch_size)
    if isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
        raise TypeError(
            f"data must be a tf.data.Dataset, a keras.utils.PyDataset, a generator or list of batches, an array of "
            f"images or an (images, labels) tuple of arrays; got {type(data).__name__}."
        )
    return _iterable(data)


def batch_length(images) -> int:
    """The number of samples of a batch of images (a structure of arrays)."""
    arrays = flat(map_inputs(np.asarray, images))
    if not arrays or np.ndim(arrays[0]) == 0:
        raise ValueError("a batch of the data holds no images; each batch must be an array of shape (batch, ...).")
    return int(arrays[0].shape[0])

