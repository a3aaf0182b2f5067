"""What ``kg.audit`` reads: arrays held in memory, or a ``tf.data.Dataset``, batch by batch.

The data is read twice (once to explain, once for the causal check of the flagged classes), so a
dataset must be re-iterable (any ``tf.data.Dataset`` is; one built from a one-shot Python generator
is not).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import tensorflow as tf

__all__ = ["Batch", "batches"]

Batch = tuple[np.ndarray, "np.ndarray | None", "np.ndarray | None"]  # images, labels, masks


def _array(name: str, value, ndim: int, n: int | None) -> np.ndarray:
    a = value.numpy() if tf.is_tensor(value) else np.asarray(value)
    if a.ndim != ndim or (n is not None and a.shape[0] != n):
        want = f"{ndim} axes" + (f" and {n} samples (one per image)" if n is not None else "")
        raise ValueError(f"{name} must be an array with {want}; got shape {a.shape}.")
    return a


def batches(data, labels, masks, batch_size: int) -> Callable[[], Iterator[Batch]]:
    """A function that, each time it is called, yields ``(images, labels, masks)`` batches of ``data``.

    Parameters
    ----------
    data : ndarray of shape (n, height, width, channels), or tf.data.Dataset
        A dataset yields images, ``(images, labels)`` or ``(images, labels, masks)``, batched or not
        (an unbatched one is batched by ``batch_size``).
    labels : array-like of shape (n,), optional
        With arrays only; a dataset carries its own.
    masks : array-like of shape (n, height, width), optional
        With arrays only; a dataset carries its own as a third element.
    batch_size : int

    Raises
    ------
    ValueError
        Shapes that do not fit, or labels/masks passed beside a dataset.
    TypeError
        ``data`` of another kind.
    """
    if isinstance(data, tf.data.Dataset):
        if labels is not None or masks is not None:
            raise ValueError(
                "labels= and masks= go with arrays; a tf.data.Dataset carries them itself: make it yield "
                "(images, labels) or (images, labels, masks)."
            )
        spec = data.element_spec
        first = spec[0] if isinstance(spec, tuple) else spec
        if not isinstance(first, tf.TensorSpec) or first.shape.rank not in (3, 4):
            raise TypeError(
                f"the dataset must yield images (height, width, channels), batched or not, or tuples starting "
                f"with them; got {spec}."
            )
        ds = data if first.shape.rank == 4 else data.batch(batch_size)

        def from_dataset() -> Iterator[Batch]:
            for element in ds.as_numpy_iterator():
                parts = element if isinstance(element, tuple) else (element,)
                x = parts[0]
                y = np.asarray(parts[1]).reshape(-1) if len(parts) > 1 else None
                m = np.asarray(parts[2]) if len(parts) > 2 else None
                if m is not None and m.ndim == 4:
                    m = m[..., 0]
                yield x, y, m

        return from_dataset

    if isinstance(data, (list, dict, str)) or not hasattr(data, "shape") and not isinstance(data, np.ndarray):
        raise TypeError(
            f"data must be an array of images (n, height, width, channels) or a tf.data.Dataset; got "
            f"{type(data).__name__}. Stack a list of images with np.stack."
        )
    x = _array("images", data, 4, None)
    if x.dtype.kind not in "fiu":
        raise TypeError(f"images must hold numbers; got dtype {x.dtype}.")
    n = x.shape[0]
    if n == 0:
        raise ValueError("images is empty; pass at least one image.")
    y = None if labels is None else _array("labels", labels, 1, n)  # class indices or names: audit() maps them
    m = None if masks is None else _array("masks", masks, 3, n)
    if m is not None and m.shape[1:] != x.shape[1:3]:
        raise ValueError(f"masks must be (n, height, width) like the images {x.shape[1:3]}; got {m.shape}.")

    def from_arrays() -> Iterator[Batch]:
        for i in range(0, n, batch_size):
            yield (x[i : i + batch_size], None if y is None else y[i : i + batch_size],
                   None if m is None else m[i : i + batch_size])

    return from_arrays
