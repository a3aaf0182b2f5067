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

from .layers import prompt_images_input

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
    "split_shared",
    "heatmap_size",
    "join_shared",
    "input_names",
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

def check_inputs(model: keras.Model, arrays: list[np.ndarray], n: int, shared=None) -> None:
    """Check the model's inputs: ``n`` rows each (but the ``shared`` ones), finite, of the model's shapes."""
    if not arrays or n == 0:
        raise ValueError("images is empty; pass a batch of shape (n_samples, ...) with n_samples >= 1.")
    skip = {id(v) for v in (shared or {}).values()}
    for a in arrays:
        if id(a) not in skip and a.shape[0] != n:
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


def prepare_inputs(model: keras.Model, images, shared_inputs=None, image_input=None) -> tuple:
    """``images`` as the model takes them, checked: ``(per-image inputs, shared inputs, n_samples)``.

    ``shared_inputs`` names the inputs given whole to every batch (:func:`split_shared`); the
    shared inputs come back as a dict ({} without them).
    """
    x = order_like_model(model, stack_single_images(model, as_inputs(images)))
    prompts = prompt_images_input(model)
    for name, a in zip(input_names(model, x), flat(x)):
        if prompts and a.ndim == 5 and a.dtype.kind == "f" and a.shape[1] != 1:
            raise ValueError(
                f"input {name!r} holds {a.shape[1]} images per prompt (shape {a.shape}, (batch, images, height, width, "
                "channels) as Gemma3 takes them); keras-gradcam explains one image per prompt, whose maps are the "
                "rows of the vision encoder's batch. Give one image per prompt (shape (batch, 1, height, width, "
                "channels)), the prompt's vision_indices and vision_mask for that image."
            )
    x, shared = split_shared(model, x, shared_inputs, image_input)
    arrays = flat(x)
    n = arrays[0].shape[0] if arrays and arrays[0].ndim else 0
    whole = join_shared(x, shared)
    check_inputs(model, flat(whole), n, shared)
    whole = cast_to_input_dtypes(model, whole)
    if not shared:
        return whole, {}, n
    return split_shared(model, whole, shared_inputs, image_input) + (n,)


def input_names(model: keras.Model, x) -> list:
    """A name for each array of ``x``: its dict key, else the model input's name, else its position."""
    if isinstance(x, dict):
        return list(x)
    names = [getattr(t, "name", None) for t in model_inputs(model)]
    arrays = flat(x)
    return [names[i] if i < len(names) and names[i] else str(i) for i in range(len(arrays))]


def _image_position(model: keras.Model, x, image_input) -> int | None:
    """Which array of ``x`` holds the images: ``image_input`` (a name or position), else the only
    floating-point array of rank 4 or 5 (``(batch, H, W, C)``, or ``(batch, images, H, W, C)``)."""
    arrays, names = flat(x), input_names(model, x)
    if image_input is not None:
        if isinstance(image_input, int) and not isinstance(image_input, bool) and 0 <= image_input < len(arrays):
            return image_input
        if isinstance(image_input, str) and image_input in names:
            return names.index(image_input)
        raise ValueError(f"image_input={image_input!r} is not one of the model's inputs {names} (a name or a position).")
    found = [i for i, a in enumerate(arrays) if a.ndim in (4, 5) and a.dtype.kind == "f"]
    return found[0] if len(found) == 1 else None


def split_shared(model: keras.Model, x, shared_inputs, image_input=None) -> tuple:
    """``(per-image inputs, shared inputs)``: the inputs named in ``shared_inputs`` taken out of ``x``.

    A shared input (CLIP's texts, a prompt, a query embedding) is given whole to every batch; the
    others are cut into batches with the images. ``shared_inputs`` holds names (dict keys or the
    model's input names) or positions. The shared inputs come back as a dict keyed by name (a dict
    ``x``) or position (a list ``x``), which :func:`join_shared` puts back in place.

    Raises
    ------
    ValueError
        A name or position that is not an input, every input named shared (no images left), or
        (with ``shared_inputs=None``) inputs of different leading sizes: the message names each
        input whose size is not the images' and says to pass it in ``shared_inputs=`` (or to say
        which input holds the images with ``image_input=``).
    """
    arrays, names = flat(x), input_names(model, x)
    if shared_inputs is None:
        sizes = [a.shape[0] if a.ndim else None for a in arrays]
        if len(arrays) > 1 and len(set(sizes)) > 1:
            image = _image_position(model, x, image_input)
            if image is None:
                listed = ", ".join(f"{nm!r}: {sz}" for nm, sz in zip(names, sizes))
                raise ValueError(
                    f"the model's inputs have different numbers of rows ({listed}), and which one holds the images "
                    "cannot be told. Say it with image_input=<name or position>, and pass the inputs that are the "
                    "same for every image (texts, a prompt) in shared_inputs=[...]."
                )
            odd = [i for i in range(len(arrays)) if sizes[i] != sizes[image]]
            listed = ", ".join(f"{names[i]!r} ({sizes[i]} rows)" for i in odd)
            raise ValueError(
                f"the images ({names[image]!r}) have {sizes[image]} rows but the input(s) {listed} do not: every "
                "input is cut into batches with the images unless it is shared. If it is the same for every image "
                f"(CLIP's texts, a prompt), pass shared_inputs={[names[i] for i in odd]}; else give it one row per image."
            )
        return x, {}
    wanted = [shared_inputs] if isinstance(shared_inputs, (str, int)) else list(shared_inputs)
    positions = []
    for w in wanted:
        if isinstance(w, int) and not isinstance(w, bool) and 0 <= w < len(arrays):
            positions.append(w)
        elif isinstance(w, str) and w in names:
            positions.append(names.index(w))
        else:
            raise ValueError(f"shared_inputs names {w!r}, which is not one of the model's inputs {names} (names or positions).")
    if len(set(positions)) == len(arrays):
        raise ValueError(f"shared_inputs={wanted} names every input of the model; at least the images are cut into batches.")
    image = _image_position(model, x, image_input)
    if image is not None and image in positions:
        raise ValueError(f"shared_inputs names the images' input {names[image]!r}; the images are the per-sample input.")
    if isinstance(x, dict):
        return {k: v for k, v in x.items() if names.index(k) not in positions}, {names[i]: arrays[i] for i in positions}
    if isinstance(x, list):
        return [a for i, a in enumerate(x) if i not in positions], {i: arrays[i] for i in sorted(set(positions))}
    raise ValueError("shared_inputs applies to a model with several inputs (a list or dict of arrays).")


def join_shared(x, shared):
    """The model's inputs: the per-image ``x`` with the ``shared`` inputs of :func:`split_shared` back in place."""
    if not shared:
        return x
    if isinstance(x, dict):
        return {**x, **shared}  # Keras matches dict inputs by key
    joined, rest = [], iter(x)
    for i in range(len(x) + len(shared)):
        joined.append(shared[i] if i in shared else next(rest))
    return joined


def signature(x):
    """The ``tf.TensorSpec`` structure of a batch of ``x``, batch axis left free (``None``)."""
    return map_inputs(lambda a: tf.TensorSpec((None,) + tuple(a.shape[1:]), tf.as_dtype(a.dtype)), x)


def signature_key(x) -> tuple:
    """A hashable key of :func:`signature`: per array, its shape without the batch axis and dtype."""
    return tuple((tuple(a.shape[1:]), np.dtype(a.dtype).name) for a in flat(x))


def heatmap_size(x, rank: int, channels_first: bool = False, image_input=None, prompts: bool = False) -> tuple | None:
    """The spatial size of the input that a layer map of ``rank`` (batch and channels included) is of.

    The first input of that rank (``image_input``, a name or position, first where given); else,
    with ``prompts``, a 5-D image input ``(batch, images per prompt, H, W, C)`` (Gemma3) for a 2-D map; else token
    sequences of rank ``rank - 1`` (an Embedding's input); None if no input fits.
    """
    arrays = flat(x)
    if isinstance(x, dict) and image_input in x:
        arrays = [x[image_input]] + arrays
    elif isinstance(image_input, int) and not isinstance(x, dict) and 0 <= image_input < len(arrays):
        arrays = [arrays[image_input]] + arrays
    for a in arrays:
        if a.ndim == rank:
            return tuple(a.shape[2:] if channels_first else a.shape[1:-1])
    for a in arrays:
        if prompts and rank == 4 and a.ndim == 5 and a.dtype.kind == "f":
            return tuple(a.shape[2:4])
    for a in arrays:
        if a.ndim == rank - 1:  # token sequences feeding an Embedding
            return tuple(a.shape[1:])
    return None
