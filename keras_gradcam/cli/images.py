"""Image files -> model inputs: decoding, resizing, ``--preprocess``, and the masks of ``evaluate``.

Decoding is TensorFlow's (``tf.io.decode_image``: PNG, JPEG, GIF, BMP); the ImageNet modes of
``--preprocess`` are ``keras.applications.imagenet_utils.preprocess_input``. Photos are resized
with an antialiased bilinear filter (``tf.image.resize(antialias=True)``, as a photo is usually
shrunk), masks with nearest neighbours (they stay binary); heatmaps are resized elsewhere, by
:func:`keras_gradcam.core.postprocess.resize`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from keras.applications import imagenet_utils

from .errors import (
    EXIT_ERROR,
    EXIT_IMAGE,
    EXIT_MISSING,
    EXIT_USAGE,
    CLIError,
    check_exists,
    short_message,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "PREPROCESSING",
    "auto_preprocessing",
    "find_masks",
    "mask_folders",
    "image_input",
    "load_image",
    "load_images",
    "preprocess",
    "read_image",
    "resize_image",
    "resolve_preprocessing",
    "resolve_size",
]

#: ``--preprocess`` choices: what each does to RGB pixel values in [0, 255].
PREPROCESSING: dict[str, str] = {
    "auto": "none when the model starts with its own Rescaling or Normalization layer, else unit (the default)",
    "none": "pixels as they are, floats in [0, 255] (a model with its own Rescaling layer)",
    "unit": "x / 255, in [0, 1]",
    "tf": "x / 127.5 - 1, in [-1, 1] (Keras Applications MobileNet, Inception, EfficientNetV2 ...)",
    "imagenet-caffe": "RGB -> BGR, minus the ImageNet mean per channel (Keras Applications ResNet50, VGG)",
    "imagenet-torch": "x / 255, minus the ImageNet mean, divided by its std (Keras Applications DenseNet, torchvision)",
}

#: The file endings the command reads as images (and, with ``.npy``, as masks).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp")

_KERAS_MODES = {"tf": "tf", "imagenet-caffe": "caffe", "imagenet-torch": "torch"}
_PASS_THROUGH = ("InputLayer", "Resizing", "CenterCrop")  # layers before a Rescaling that keep the pixel range


# -- the model's image input ----------------------------------------------------------------------
def image_input(model) -> tuple[tuple[int | None, int | None], int]:
    """(height, width) and channels of a single-input, channels-last image model.

    Raises
    ------
    CLIError
        Exit status 1 for a model with several inputs, or an input that is not ``(batch, height,
        width, 1 or 3)``.
    """
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) != 1:
        raise CLIError(
            f"the command line explains single-input image models; this model has {len(inputs)} inputs. "
            "Use the Python API: kg.explain(model, [x1, x2]).", EXIT_ERROR,
        )
    shape = tuple(inputs[0].shape)
    if len(shape) != 4 or shape[-1] not in (1, 3, None):
        raise CLIError(
            f"the model's input has shape {shape}; the command line needs an image input (batch, height, width, 1 or 3) "
            "in channels-last order. Use the Python API for other inputs.", EXIT_ERROR,
        )
    return (shape[1], shape[2]), int(shape[3] or 3)


def resolve_size(model_hw, size) -> tuple[int, int]:
    """``--size`` checked against the model's input size; the model's size (else 224) when not given."""
    h, w = model_hw
    if size is None:
        return (h or 224, w or 224)
    if (h is not None and size[0] != h) or (w is not None and size[1] != w):
        raise CLIError(
            f"--size {size[0]}x{size[1]} does not fit the model, which takes {h}x{w} images; leave --size out.", EXIT_USAGE
        )
    return size


# -- image files ----------------------------------------------------------------------------------
def read_image(path: str, channels: int = 3) -> np.ndarray:
    """Read an image file at its own size: uint8 ``(height, width, channels)``.

    Parameters
    ----------
    path : str
        A PNG, JPEG, GIF (first frame) or BMP file.
    channels : {1, 3}, default=3
        Grayscale or RGB.

    Returns
    -------
    ndarray of shape (height, width, channels), uint8

    Raises
    ------
    CLIError
        Exit status 3 when the file does not exist, 4 when it cannot be read or decoded.
    """
    check_exists(path, "image")
    if os.path.isdir(path):
        raise CLIError(f"{path!r} is a folder, not an image file; pass the files, e.g. {path.rstrip('/')}/*.png.", EXIT_IMAGE)
    try:
        data = tf.io.read_file(path)
        image = tf.io.decode_image(data, channels=channels, expand_animations=False, dtype=tf.uint8)
    except (tf.errors.OpError, ValueError) as e:
        raise CLIError(
            f"cannot read image {path!r}: {short_message(e)} Supported formats: PNG, JPEG, GIF, BMP.", EXIT_IMAGE
        ) from None
    return image.numpy()


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear, antialiased resize of a uint8 photo, rounded back to uint8 (unchanged at its own size)."""
    if tuple(image.shape[:2]) == tuple(size):
        return image
    out = tf.image.resize(tf.cast(image, tf.float32), size, method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8).numpy()


def load_image(path: str, size: tuple[int, int], channels: int = 3) -> np.ndarray:
    """Read an image file and resize it: uint8 ``(height, width, channels)``.

    Parameters
    ----------
    path : str
        A PNG, JPEG, GIF (first frame) or BMP file.
    size : (int, int)
        Height and width to resize to (bilinear, antialiased).
    channels : {1, 3}, default=3
        Grayscale or RGB.

    Returns
    -------
    ndarray of shape (height, width, channels), uint8

    Raises
    ------
    CLIError
        Exit status 3 when the file does not exist, 4 when it cannot be decoded.
    """
    return resize_image(read_image(path, channels), size)


def load_images(model, paths: Sequence[str], size, mode: str):
    """Decode image files for ``model``, as ``--size`` and ``--preprocess`` say.

    Parameters
    ----------
    model : keras.Model
        A single-input image model (see :func:`image_input`).
    paths : sequence of str
        The image files.
    size : (int, int) or None
        ``--size`` (None: the model's input size).
    mode : str
        ``--preprocess``; ``auto`` is resolved (and said on stderr) by :func:`resolve_preprocessing`.

    Returns
    -------
    originals : list of uint8 ndarray
        The images at their own sizes.
    raw : ndarray of shape (n, height, width, channels), uint8
        The images at the model's size.
    x : ndarray, float32
        ``raw`` preprocessed for the model.
    size : (int, int)
    mode : str
        The preprocessing used.
    """
    hw, channels = image_input(model)
    size = resolve_size(hw, size)
    mode = resolve_preprocessing(model, mode)
    originals = [read_image(p, channels) for p in paths]
    raw = np.stack([resize_image(image, size) for image in originals])
    return originals, raw, preprocess(raw, mode), size, mode


# -- --preprocess ---------------------------------------------------------------------------------
def preprocess(images: np.ndarray, mode: str) -> np.ndarray:
    """Scale uint8 RGB (or grayscale) images for a model, as ``--preprocess`` says.

    Parameters
    ----------
    images : ndarray of shape (n, height, width, channels), uint8
    mode : str
        A key of :data:`PREPROCESSING` other than ``"auto"`` (resolve that first with
        :func:`auto_preprocessing`). ``tf``, ``imagenet-caffe`` and ``imagenet-torch`` are
        ``keras.applications.imagenet_utils.preprocess_input`` with modes ``tf``, ``caffe`` and
        ``torch``.

    Returns
    -------
    ndarray, float32, same shape

    Raises
    ------
    CLIError
        An unknown mode (``auto`` included), or an ImageNet mode with images that do not have 3
        channels.

    Examples
    --------
    >>> import numpy as np
    >>> from keras_gradcam.cli import preprocess
    >>> preprocess(np.full((1, 1, 1, 3), 255, np.uint8), "tf").ravel().tolist()
    [1.0, 1.0, 1.0]
    """
    x = images.astype(np.float32)
    if mode == "none":
        return x
    if mode == "unit":
        return x / 255.0
    if mode in _KERAS_MODES:
        if mode != "tf" and x.shape[-1] != 3:
            raise CLIError(f"--preprocess {mode} needs RGB images for a 3-channel model; this model takes {x.shape[-1]}.", EXIT_USAGE)
        return np.asarray(imagenet_utils.preprocess_input(x, data_format="channels_last", mode=_KERAS_MODES[mode]), np.float32)
    choices = [m for m in PREPROCESSING if m != "auto"]
    raise CLIError(f"unknown preprocessing {mode!r}; choose one of {choices}.", EXIT_USAGE)


def _leading_scaling_layer(model):
    """The model's first layer after its input when that is a ``Rescaling`` or ``Normalization`` layer.

    A nested model in first place (a ``keras.applications`` backbone used as a layer, a
    ``Sequential`` preprocessing block) is looked into; ``Resizing``, ``CenterCrop`` and the
    ``Random*`` augmentation layers (identities at inference) are skipped. None otherwise.
    """
    for layer in model.layers:
        name = type(layer).__name__
        if name in _PASS_THROUGH or name.startswith("Random"):
            continue
        if isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization)):
            return layer
        if isinstance(layer, keras.Model):
            return _leading_scaling_layer(layer)
        return None
    return None


def auto_preprocessing(model) -> tuple[str, str]:
    """What ``--preprocess auto`` means for ``model``: ``(mode, reason)``.

    Parameters
    ----------
    model : keras.Model

    Returns
    -------
    (str, str)
        ``"none"`` when the model starts with its own ``Rescaling`` layer, or a ``Normalization``
        layer whose mean is above 1.5 somewhere (adapted on [0, 255] pixels); ``"unit"`` for a
        ``Normalization`` layer adapted on [0, 1] pixels and for every other model. The reason
        is a phrase for the message printed to stderr.
    """
    layer = _leading_scaling_layer(model)
    if layer is None:
        return "unit", "x / 255, as the model does not start with its own Rescaling or Normalization layer"
    kind = type(layer).__name__
    if kind == "Normalization":
        mean = getattr(layer, "mean", None)
        try:
            peak = float(np.max(np.abs(np.asarray(mean, np.float64)))) if mean is not None else None
        except (TypeError, ValueError):
            peak = None
        if peak is not None and peak <= 1.5:
            return "unit", f"x / 255, as the model starts with a Normalization layer ({layer.name!r}) adapted on [0, 1] pixels"
    return "none", f"pixels in [0, 255] as they are, as the model starts with its own {kind} layer ({layer.name!r})"


def resolve_preprocessing(model, mode: str) -> str:
    """``--preprocess`` with ``auto`` resolved; the choice and its reason are printed to stderr."""
    if mode == "auto":
        mode, why = auto_preprocessing(model)
        text = f"{why} (--preprocess auto; pass --preprocess to choose another)"
    else:
        text = PREPROCESSING[mode]
    print(f"keras-gradcam: preprocess {mode!r}: {text}", file=sys.stderr)
    return mode


# -- masks (evaluate --masks) ---------------------------------------------------------------------
def _resize_mask(mask: np.ndarray, size) -> np.ndarray:
    """A boolean ``(h, w)`` mask at ``size``, by nearest neighbours (it stays binary)."""
    if mask.shape == tuple(size):
        return mask
    return tf.image.resize(mask[..., None].astype(np.float32), size, method="nearest").numpy()[..., 0] > 0.5


def _read_mask(path: str, size: tuple[int, int]) -> np.ndarray:
    """A mask file (an image, nonzero = object, or a 2-D ``.npy`` array) as a boolean mask at ``size``."""
    if path.endswith(".npy"):
        try:
            arr = np.asarray(np.load(path))
        except (OSError, ValueError) as e:
            raise CLIError(f"cannot read mask {path!r}: {e}", EXIT_IMAGE) from None
        if arr.ndim == 3:
            arr = arr[..., 0]
        if arr.ndim != 2:
            raise CLIError(f"mask {path!r} must be a 2-D array (height, width); got shape {arr.shape}.", EXIT_IMAGE)
        return _resize_mask(arr > 0, size)
    try:
        image = tf.io.decode_image(tf.io.read_file(path), channels=1, expand_animations=False)
    except (tf.errors.OpError, ValueError) as e:
        raise CLIError(f"cannot read mask {path!r}: {short_message(e)}", EXIT_IMAGE) from None
    return _resize_mask(image.numpy()[..., 0] > 0, size)


def find_masks(folder: str, paths: Sequence[str], size) -> np.ndarray:
    """The masks of ``--masks``: for each image ``cat.jpg``, ``folder/cat.png`` (or .jpg, .bmp, .gif, .npy).

    Returns
    -------
    ndarray of shape (n, height, width), bool
        At ``size``; nonzero pixels of the files are the object.

    Raises
    ------
    CLIError
        Exit status 3 for a missing folder or mask, 2 when ``folder`` is a file, 4 for a mask
        that cannot be read.
    """
    check_exists(folder, "mask folder")
    if not os.path.isdir(folder):
        raise CLIError(f"--masks must be a folder of mask files named like the images; {folder!r} is a file.", EXIT_USAGE)
    masks = []
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        found = [os.path.join(folder, stem + ext) for ext in IMAGE_EXTENSIONS + (".npy",)
                 if os.path.isfile(os.path.join(folder, stem + ext))]
        if not found:
            raise CLIError(
                f"no mask for image {path!r} in {folder!r}: expected {stem}.png (or .jpg, .bmp, .gif, .npy) there.",
                EXIT_MISSING,
            )
        masks.append(_read_mask(found[0], size))
    return np.stack(masks)


# -- masks (audit --masks) ------------------------------------------------------------------------
MASK_THRESHOLD = 128
"""Grey level from which a pixel of a mask image is object (``audit --masks``): 0-127 background."""


def mask_folders(folder: str, data_dir: str, image_paths: Sequence[str], size, batch_size: int) -> tf.data.Dataset:
    """The masks of ``audit --masks``: for ``DATA_DIR/cat/1.jpg``, ``folder/cat/1.png`` (or .jpg, .bmp, .gif).

    The mask folder has the class subfolders of ``DATA_DIR`` and, in each, one mask image per
    image with its file name (the extension may differ). A mask is read in grey levels (colour
    masks are converted), a pixel is object where its grey level is at least
    :data:`MASK_THRESHOLD` (128), and it is resized to ``size`` by nearest neighbours.

    Returns
    -------
    tf.data.Dataset
        Batches of ``batch_size`` boolean masks ``(batch, height, width)``, in the order of
        ``image_paths``; read lazily, batch by batch.

    Raises
    ------
    CLIError
        Exit status 3 for a missing folder or mask (the message names the file expected), 2 when
        ``folder`` is a file.
    """
    check_exists(folder, "mask folder")
    if not os.path.isdir(folder):
        raise CLIError(f"--masks must be a folder with DATA_DIR's class subfolders of masks; {folder!r} is a file.",
                       EXIT_USAGE)
    paths, missing = [], []
    for path in image_paths:
        sub, name = os.path.split(os.path.relpath(path, data_dir))
        base = os.path.join(folder, sub, os.path.splitext(name)[0])
        found = [base + ext for ext in IMAGE_EXTENSIONS if os.path.isfile(base + ext)]
        if found:
            paths.append(found[0])
        else:
            missing.append((path, base))
    if missing:
        path, base = missing[0]
        raise CLIError(
            f"no mask for image {path!r}: expected {base}.png (or .jpg, .jpeg, .gif, .bmp); {len(missing)} of "
            f"{len(image_paths)} image(s) have none. --masks must hold DATA_DIR's class subfolders with one mask per "
            "image, named like it.", EXIT_MISSING,
        )

    def read(path):
        grey = tf.io.decode_image(tf.io.read_file(path), channels=1, expand_animations=False)
        grey.set_shape([None, None, 1])
        obj = tf.cast(grey >= MASK_THRESHOLD, tf.uint8)
        return tf.image.resize(obj, size, method="nearest")[..., 0] > 0

    return tf.data.Dataset.from_tensor_slices(paths).map(read).batch(batch_size)
