"""Everything a user may pass as ``images``, turned into what the compiled engine takes.

Arrays, tensors, lists of single images, lists or dicts of arrays for multi-input models and
``tf.data.Dataset`` objects become a structure (one array, a list, or a dict in the model's input
order) of numpy arrays: float32 for float inputs, the model input's integer dtype for token ids.
Checks here name what was received and what the model expects.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

__all__ = [
    "MAX_DATASET_SAMPLES",
    "as_inputs",
    "read_dataset",
    "flat",
    "map_inputs",
    "model_inputs",
    "stack_single_images",
    "order_like_model",
    "check_inputs",
    "cast_to_input_dtypes",
    "prepare_inputs",
    "batch_slice",
    "signature",
    "signature_key",
]

MAX_DATASET_SAMPLES = 10_000  # samples a tf.data.Dataset given to an explainer is read into memory up to


def as_inputs(images):
    """Images (array, tensor, list or dict of them, or a dataset) as a structure of float numpy arrays."""

    def convert(a):
        a = a.numpy() if tf.is_tensor(a) else np.asarray(a)
        if a.dtype.kind in "iub":
            return a  # cast to the model input's dtype later (token ids stay integers)
        if a.dtype.kind != "f":
            raise TypeError(
                f"images must be numeric arrays; got dtype {a.dtype}"
                + (" (arrays of different shapes?)" if a.dtype == object else "")
                + ". Pass a numpy array or tensor of shape (n_samples, ...), or a tf.data.Dataset."
            )
        return a.astype(np.float32) if a.dtype == np.float64 else a

    if isinstance(images, tf.data.Dataset):
        images = read_dataset(images)
    if isinstance(images, dict):
        return {k: convert(v) for k, v in images.items()}
    if isinstance(images, (list, tuple)):
        return [convert(v) for v in images]
    return convert(images)


def read_dataset(data: tf.data.Dataset):
    """The images of a ``tf.data.Dataset`` (of images, or of ``(images, labels, ...)`` tuples), in memory.

    Batched or not; up to :data:`MAX_DATASET_SAMPLES` samples.
    """
    spec = data.element_spec
    if isinstance(spec, tuple):  # (images, labels[, masks]): the images are the first element
        data = data.map(lambda *e: e[0])
        spec = spec[0]
    flat = keras.tree.flatten(spec)
    if not all(isinstance(s, tf.TensorSpec) for s in flat):
        raise TypeError(f"the dataset's elements must be tensors (images, or (images, labels) tuples); got {spec}.")
    batched = False
    parts, count = [], 0
    for element in data.take(MAX_DATASET_SAMPLES + 1):
        parts.append(element)
        count += 1
    if not parts:
        raise ValueError("the dataset is empty; pass a dataset with at least one sample.")
    # a batched dataset's elements carry a batch axis of unknown (None) size
    batched = flat[0].shape.rank is not None and flat[0].shape.rank > 0 and flat[0].shape[0] is None
    if batched:
        total = sum(int(keras.tree.flatten(p)[0].shape[0]) for p in parts)
        join = lambda *a: np.concatenate([np.asarray(v) for v in a])  # noqa: E731
    else:
        total = count
        join = lambda *a: np.stack([np.asarray(v) for v in a])  # noqa: E731
    if total > MAX_DATASET_SAMPLES:
        raise ValueError(
            f"the dataset has more than {MAX_DATASET_SAMPLES} samples, more than an explainer reads into memory; "
            "explain it batch by batch (for batch in dataset: cam(batch)), or take a part (dataset.take(n))."
        )
    return keras.tree.map_structure(join, *parts)


def cast_to_input_dtypes(model: keras.Model, x):
    """Integer arrays as the model input's integer dtype (token ids), everything else float.

    Where the model's inputs are not known yet (an unbuilt Sequential), integer arrays become
    float32, as Keras would cast them for a float input.
    """
    inputs = model_inputs(model)
    arrays = flat(x)
    wanted = [keras.backend.standardize_dtype(t.dtype) for t in inputs] if len(inputs) == len(arrays) else [None] * len(arrays)
    cast = []
    for a, dtype in zip(arrays, wanted):
        if dtype is not None and ("int" in dtype or dtype == "bool"):
            if a.dtype.kind == "f" and not np.array_equal(a, np.round(a)):
                raise TypeError(
                    f"the model's input takes {dtype} values (token ids?), but images holds non-integer floats; "
                    "pass the integer ids."
                )
            cast.append(a.astype(dtype))
        else:
            cast.append(a.astype(np.float32) if a.dtype.kind in "iub" else a)
    if isinstance(x, dict):
        return dict(zip(x, cast))
    return cast if isinstance(x, list) else cast[0]

def model_inputs(model: keras.Model) -> list:
    """The model's symbolic inputs, in the order it takes them ([] when unknown)."""
    spec = getattr(model, "input", None) if getattr(model, "built", False) else None
    if isinstance(spec, dict):
        return list(spec.values())
    try:
        return list(getattr(model, "inputs", None) or [])
    except (AttributeError, ValueError):
        return []

def stack_single_images(model: keras.Model, x):
    """A list of single images for a single-input model, stacked into one batch.

    A list holding one batch (``[images]``) is kept as it is.
    """
    inputs = model_inputs(model)
    if not isinstance(x, list) or len(inputs) != 1 or not x:
        return x
    rank = len(inputs[0].shape)
    if len(x) == 1 and x[0].ndim == rank:
        return x[0]
    if all(a.ndim == rank - 1 for a in x):
        shapes = sorted({tuple(a.shape) for a in x})
        if len(shapes) > 1:
            raise ValueError(
                f"images is a list of {len(x)} images of different shapes {shapes[:4]}; the model takes one "
                f"input of shape {tuple(inputs[0].shape)}. Resize them to one size first "
                "(e.g. keras.ops.image.resize), then pass them as one array."
            )
        return np.stack(x)
    raise ValueError(
        f"images is a list of {len(x)} arrays of shapes {[tuple(a.shape) for a in x][:4]}, but the model takes "
        f"a single input of shape {tuple(inputs[0].shape)}; pass one array of shape (n_samples, ...) "
        "(a list of single images of the same shape is stacked)."
    )

def order_like_model(model: keras.Model, x):
    """Dict inputs in the order of the model's input dict (Keras matches them by key); one array keyed for a one-key dict."""
    spec = getattr(model, "input", None) if getattr(model, "built", False) else None
    if isinstance(spec, dict) and len(spec) == 1 and isinstance(x, np.ndarray):
        return {next(iter(spec)): x}  # one array for a model whose one input is keyed (KerasHub's {"images": ...})
    if not (isinstance(x, dict) and isinstance(spec, dict)):
        return x
    missing = [k for k in spec if k not in x]
    if missing:
        raise ValueError(f"images is missing the model inputs {missing}; the model takes {list(spec)}, got {list(x)}.")
    return {k: x[k] for k in spec}

def check_inputs(model: keras.Model, arrays: list[np.ndarray], n: int) -> None:
    if not arrays or n == 0:
        raise ValueError("images is empty; pass a batch of shape (n_samples, ...) with n_samples >= 1.")
    for a in arrays:
        if a.shape[0] != n:
            raise ValueError(f"all inputs need the same number of samples; got {[b.shape[0] for b in arrays]}.")
        if not np.isfinite(a).all():
            raise ValueError("images contain NaN or inf values; clean or preprocess them first.")
    inputs = model_inputs(model)
    expected = [tuple(t.shape) for t in inputs]
    if expected and len(arrays) != len(expected):
        names = [getattr(t, "name", "?") for t in inputs]
        raise ValueError(
            f"the model takes {len(expected)} inputs {names} of shapes {expected}, but images holds "
            f"{len(arrays)} array(s); pass a list of {len(expected)} arrays in that order, or a dict keyed by input name."
        )
    for a, shape in zip(arrays, expected):
        if len(shape) == a.ndim + 1:
            raise ValueError(
                f"images has shape {a.shape} but the model expects a batch of shape {shape}; "
                "add a batch axis, e.g. images[None] for a single image."
            )
        if len(shape) != a.ndim or any(s is not None and s != d for s, d in zip(shape[1:], a.shape[1:])):
            raise ValueError(f"images has shape {a.shape} but the model expects {shape}.")


def flat(x) -> list[np.ndarray]:
    """The arrays of an input structure, in order."""
    return list(x.values()) if isinstance(x, dict) else list(x) if isinstance(x, list) else [x]


def map_inputs(fn, x):
    """``fn`` applied to every array of an input structure, the structure kept."""
    if isinstance(x, dict):
        return {k: fn(v) for k, v in x.items()}
    if isinstance(x, list):
        return [fn(v) for v in x]
    return fn(x)


def batch_slice(x, start: int, stop: int):
    """Samples ``start:stop`` of every array of an input structure."""
    return map_inputs(lambda a: a[start:stop], x)


def prepare_inputs(model: keras.Model, images) -> tuple:
    """``images`` as the model takes them, checked: ``(inputs, n_samples)``."""
    x = order_like_model(model, stack_single_images(model, as_inputs(images)))
    arrays = flat(x)
    n = arrays[0].shape[0] if arrays and arrays[0].ndim else 0
    check_inputs(model, arrays, n)
    return cast_to_input_dtypes(model, x), n


def signature(x):
    """The ``tf.TensorSpec`` structure of a batch of ``x``, batch axis left free (``None``)."""
    return map_inputs(lambda a: tf.TensorSpec((None,) + tuple(a.shape[1:]), tf.as_dtype(a.dtype)), x)


def signature_key(x) -> tuple:
    """A hashable key of :func:`signature`: per array, its shape without the batch axis and dtype."""
    return tuple((tuple(a.shape[1:]), np.dtype(a.dtype).name) for a in flat(x))
