"""``GradCAMCallback``: where the model looks on a fixed probe set, in TensorBoard, every epoch.

Add it to ``model.fit`` next to ``keras.callbacks.TensorBoard``: after each logged epoch it
explains the probes (Grad-CAM++ by default), blends each heatmap over its image with
:func:`keras_gradcam.viz.overlay` and writes one image card per probe (with an epoch slider),
optionally a grid of all probes, a per-epoch caption table and, with object masks, two scalars: the
share of the heatmap energy inside the objects (energy pointing game) and the pointing-game hit
rate. A model that learns a shortcut (a watermark, a background, a border) shows it there.

The callback never changes training: it calls the model with ``training=False`` in its own
compiled function (traced once and reused), draws no random numbers, and does not touch the
optimizer or any layer state.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from . import metrics
from .core.capture import Capture
from .methods.registry import get_method
from .methods.registry import display_name
from .viz.overlay import colormap_table, overlay

__all__ = ["GradCAMCallback"]

logger = logging.getLogger("keras_gradcam")

_IMAGE_FORMATS = ("jpeg", "png")
_ON_ERROR = ("raise", "warn")
_CORRECT = np.array([46, 160, 67], np.uint8)  # strip under a probe: prediction right
_WRONG = np.array([214, 39, 40], np.uint8)  # ... wrong
_UNKNOWN = np.array([128, 128, 128], np.uint8)  # ... no prediction: the model's output is not finite
_GAP_VALUE = 255  # white lines between the tiles of the grid


# -- small helpers ------------------------------------------------------------------------------
def _is_chief(model=None) -> bool:
    """Whether this process writes: the chief under a multi-worker strategy, always otherwise.

    Under ``MirroredStrategy`` (one machine) callbacks run once, in the single process: it writes.
    Under ``MultiWorkerMirroredStrategy`` only the chief (``should_checkpoint``) writes.
    """
    strategy = getattr(model, "distribute_strategy", None) if model is not None else None
    if strategy is None and tf.distribute.has_strategy():
        strategy = tf.distribute.get_strategy()
    if strategy is None:
        return True
    return bool(getattr(strategy.extended, "should_checkpoint", True))


def _tile(images: np.ndarray, gap: int = 2) -> np.ndarray:
    """Tile ``(n, h, w, 3)`` uint8 images in a near-square grid, ``gap`` white pixels apart."""
    n, h, w, c = images.shape
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    canvas = np.full((rows, h + gap, cols, w + gap, c), _GAP_VALUE, np.uint8)
    padded = np.full((rows * cols, h, w, c), _GAP_VALUE, np.uint8)
    padded[:n] = images
    canvas[:, :h, :, :w] = padded.reshape(rows, cols, h, w, c).transpose(0, 2, 1, 3, 4)
    return canvas.reshape(rows * (h + gap), cols * (w + gap), c)[: rows * (h + gap) - gap, : cols * (w + gap) - gap]


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _int_vector(values, name: str, n: int, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim == 2 and arr.shape[0] == n and arr.dtype.kind in "fiub":
        arr = arr.argmax(axis=1)  # one-hot / probabilities
    if arr.shape != (n,) or arr.dtype.kind not in "iu":
        raise ValueError(
            f"{name} must hold {what}: {n} ints (or an (n, classes) one-hot array), one per probe; "
            f"got {arr.dtype} of shape {arr.shape}."
        )
    if (arr < 0).any():
        raise ValueError(f"{name} must be class indices >= 0; got {arr[arr < 0][:5].tolist()}.")
    return arr.astype(np.int64)


def _md(text: str) -> str:
    """Escape the characters that would break a markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _image_summary(name: str, image, description: str, image_format: str):
    """Write one ``(height, width, 3)`` uint8 image to the default writer, PNG or JPEG encoded.

    PNG goes through ``tf.summary.image``. JPEG is the one reason for building the record here:
    ``tf.summary.image`` always encodes PNG, while JPEG (quality 90) is several times faster to
    encode and smaller on disk. The record is the one ``tf.summary.image`` writes, with the JPEG
    bytes in place of the PNG ones: a string tensor ``[width, height, encoded image]`` with the
    image plugin's metadata; TensorBoard decodes either format.
    """
    if image_format == "png":
        return tf.summary.image(name, image[None], max_outputs=1, description=description)
    from tensorboard.plugins.image import metadata

    height, width = image.shape[:2]  # static: the compiled caller's input signature is fixed
    encoded = tf.io.encode_jpeg(image, quality=90)
    tensor = tf.concat([tf.constant([str(width), str(height)]), encoded[None]], axis=0)
    meta = metadata.create_summary_metadata(display_name=None, description=description)
    return tf.summary.write(name, tensor, metadata=meta)


class GradCAMCallback(keras.callbacks.Callback):
    """Log Grad-CAM++ overlays of a fixed probe set to TensorBoard during ``fit``, to reveal bias.

    After every ``every_n_epochs``-th epoch (and the last one, also when another callback stops
    training early) the probes are explained with
    ``training=False`` and TensorBoard gets, in the run folder ``log_dir/run_name`` beside the
    ``train``/``validation`` runs of ``keras.callbacks.TensorBoard``:

    * ``<method>/probe_00`` ... one image card per probe, the heatmap blended over the image by
      :func:`keras_gradcam.viz.overlay`, one image per logged epoch (``step=epoch``, the step Keras'
      TensorBoard callback uses for its epoch curves), so the card's slider walks through
      training. With known labels a thin strip under the image is green when the prediction is
      right, red when it is wrong. The card's description (markdown) names the probe, its true
      class, the method and the layer;
    * ``<method>/grid``: all probes in one image, if ``grid=True``;
    * ``<method>/captions``: a text card with a markdown table per epoch: true class,
      predicted class, explained class, its score and, with masks, the bias numbers per probe
      (TensorBoard shows one description per image card, not one per step, so the per-epoch
      numbers live here);
    * with ``probe_masks``: scalars ``bias/energy_inside_object`` (mean share of the heatmap's
      energy inside the object masks) and ``bias/pointing_game`` (share of probes whose heatmap
      maximum lies on the object); and a warning in the Python log when the share falls below
      ``warn_below``;
    * ``<method>/warnings``: a text entry, only at epochs where the model's outputs for some probes
      are not finite (NaN or inf, e.g. after the loss became NaN). Such an epoch is also reported
      in the Python log and gets no bias scalars and no bias warning (see Notes).

    Parameters
    ----------
    probe_images : array-like of shape (n_probes, height, width, channels) or (n_probes, height, width)
        The fixed probe set, preprocessed the way the model expects (a single-input image model).
        Converted to float32 once.
    log_dir : str or os.PathLike, default="logs"
        The same directory as ``keras.callbacks.TensorBoard(log_dir)``.
    probe_labels : array-like of shape (n_probes,) or (n_probes, n_classes), optional
        True classes (ints, or one-hot rows), each one of the model's classes (checked when the
        model is set, or at construction against ``class_names``). Shown in captions and strips,
        used by ``targets="label"``.
    method : str, default="gradcam++"
        Any name of :data:`keras_gradcam.METHODS` (``"gradcam"``, ``"xgradcam"``, ...).
    layer : str, keras.layers.Layer or None, default=None
        The layer to explain; None picks the default layer (see :func:`keras_gradcam.core.layers.resolve_layer`).
    targets : {"predicted", "label"}, int or sequence of int, default="predicted"
        What each heatmap explains: the model's top-1 class, the true class (needs
        ``probe_labels``), one class for all probes, or one class per probe.
    every_n_epochs : int, default=1
        Log epochs ``0, n, 2n, ...`` (Keras' 0-based epoch index, as TensorBoard steps) and the last
        epoch of each ``fit``: ``params["epochs"] - 1``, or the epoch at which another callback
        stopped training (logged in ``on_train_end``).
    probe_masks : array-like of shape (n_probes, height, width), bool, optional
        Object masks of the probes (nonzero = object), e.g. ``SyntheticShapes.masks``. Enables the
        bias scalars and the warning. Every mask must contain its object (no empty mask).
    run_name : str, default="gradcam"
        Name of the run folder under ``log_dir``.
    class_names : sequence of str, optional
        Names shown instead of class indices, one per class of the model: labels and targets
        must be below ``len(class_names)``.
    display_images : array-like of shape (n_probes, H, W[, C]), optional
        What to draw the heatmaps on, e.g. the raw images when ``probe_images`` are normalised;
        default ``probe_images`` (see :func:`keras_gradcam.viz.overlay` for the accepted ranges).
    alpha : float, default=0.4
        Heatmap opacity in the overlays.
    colormap : str, default="jet"
        A Matplotlib colormap name.
    grid : bool, default=False
        Also log one image with all probes (TensorBoard already lays the probe cards out side
        by side, each with its own slider; the grid puts them under one slider, at about 1.5
        times the encoding cost).
    image_format : {"jpeg", "png"}, default="jpeg"
        Encoding of the logged images. JPEG (quality 90) is several times faster to encode and
        smaller on disk; PNG is lossless.
    warn_below : float, "auto" or None, default="auto"
        Warn (``logging``, logger ``"keras_gradcam"``) when the mean energy inside the objects
        falls below this share, and again at the last epoch of ``fit`` if it is still below.
        ``"auto"``: ``min(0.5, 2 * a)`` with ``a`` the objects' mean area share, i.e. "most of
        the evidence outside the objects", or for small objects "no more than twice what an
        evenly spread map gets". None: never warn.
    pointing_tolerance : float, default=0
        Pixels of tolerance of the pointing game (0: the maximum must be on an object pixel).
        This differs on purpose from :func:`keras_gradcam.metrics.pointing_game`, whose default
        of 15 pixels is the tolerance of the TorchRay benchmark on images of about 224 pixels:
        probe sets are often small images (32 pixels in the examples), where a 15-pixel disc
        covers most of the image and nearly every maximum would count as a hit. Pass 15 to
        follow the benchmark protocol on images of that size.
    on_error : {"raise", "warn"}, default="raise"
        What a failure while logging does: stop training with an error that says what failed
        and where, or log the error and stop logging for the rest of this ``fit``.
    batch_size : int, default=32
        Largest number of probes per forward pass.
    method_options : dict, optional
        Extra arguments of the explainer class (``alpha_norm=``, ``n_samples=``, ...).

    Attributes
    ----------
    history : dict of str to list
        Per logged epoch of the current (or last) ``fit``: ``"epoch"`` and, with masks,
        ``"energy_inside_object"`` and ``"pointing_game"`` (NaN at epochs whose outputs were not
        finite for some probe).
    explainer : keras_gradcam.BaseCAM or None
        The explainer, created once for the model and reused (its compiled function too).

    Raises
    ------
    TypeError, ValueError
        At construction, for arguments of the wrong kind or shape (the message says what to pass).
        When the model is set (``set_model``, at the start of ``fit``), for probes whose shape is
        not the model's input shape, or labels or targets that are not classes of the model; for
        a model that ``fit`` builds (a ``Sequential`` without ``Input``), before the probes are
        first explained. These are raised as they are, whatever ``on_error``.
    OSError
        At the start of ``fit``, when the run folder cannot be created.
    RuntimeError
        With ``on_error="raise"``, when logging an epoch fails (chained to the original error).

    See Also
    --------
    keras_gradcam.viz.overlay : the image + heatmap blend used for every card.
    keras_gradcam.explain : the same heatmaps, outside training.

    Notes
    -----
    *Training is not disturbed.* The model is called with ``training=False`` (no BatchNorm
    statistics update, no dropout), no random numbers are drawn, and neither the optimizer nor
    the weights are touched, so the trained weights are bit-identical with and without the
    callback. The explainer's compiled function is traced once and reused, and the writer is
    created at the first logged epoch and closed at ``on_train_end``, so memory stays flat; the
    same instance can be passed to several ``fit`` calls.

    *Bias scalars* (Zhang et al. 2016; Score-CAM section 4.3), computed with :mod:`keras_gradcam.metrics` (an all-zero
    map has no energy inside and misses the pointing game):
    ``energy_inside_object = mean_i sum(L_i * M_i) / sum(L_i)`` with ``L_i`` the heatmap at image
    resolution, and ``pointing_game = mean_i [argmax L_i lies on M_i]``. A heatmap spread evenly
    scores the object's area share (given in the scalar's description); a model that uses a
    shortcut outside the objects scores below it. Both explain the ``targets`` classes: use
    ``targets="label"`` for the pointing game's original protocol (ground-truth class).

    *Outputs that are not numbers.* A probe whose explained score or heatmap is not finite (a
    diverged run leaves NaN weights; its heatmaps come back blank) has no prediction: its strip is
    grey, its caption row shows ``-``. When any probe is affected, the epoch's bias scalars are not
    written (the curve has a gap there rather than a drop to 0 that would read as a shortcut),
    ``history`` gets NaN, the bias warning is skipped, and a warning naming the epoch and the
    number of probes goes to the Python log and to the ``<method>/warnings`` text card.

    *Distribution.* Under ``tf.distribute`` strategies only the chief (the process for which
    ``strategy.extended.should_checkpoint`` is true) explains and writes.

    Examples
    --------
    >>> import keras
    >>> import keras_gradcam as kg
    >>> ds = kg.datasets.make_shapes(n=64, image_size=32, seed=0)
    >>> probes = ds[kg.datasets.make_probe_set(ds, per_class=1)]
    >>> cb = kg.GradCAMCallback(probes.images, log_dir="runs/doc", probe_labels=probes.labels,
    ...                         probe_masks=probes.masks, class_names=probes.class_names)
    >>> model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(8, 3, activation="relu"),
    ...                           keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> _ = model.fit(ds.images, ds.labels, epochs=2, verbose=0,
    ...               callbacks=[keras.callbacks.TensorBoard("runs/doc"), cb])
    >>> sorted(cb.history)
    ['energy_inside_object', 'epoch', 'pointing_game']
    """

    def __init__(
        self,
        probe_images,
        log_dir: str | os.PathLike = "logs",
        probe_labels=None,
        method: str = "gradcam++",
        layer=None,
        targets: str | int | Sequence[int] = "predicted",
        every_n_epochs: int = 1,
        probe_masks=None,
        *,
        run_name: str = "gradcam",
        class_names: Sequence[str] | None = None,
        display_images=None,
        alpha: float = 0.4,
        colormap: str = "jet",
        grid: bool = False,
        image_format: str = "jpeg",
        warn_below: float | str | None = "auto",
        pointing_tolerance: float = 0.0,
        on_error: str = "raise",
        batch_size: int = 32,
        method_options: dict | None = None,
    ):
        super().__init__()
        self._probes = self._check_probes(probe_images)
        n, height, width = self._probes.shape[:3]
        self._n = n

        if not isinstance(log_dir, (str, os.PathLike)):
            raise TypeError(
                f"log_dir must be a str or os.PathLike path (e.g. 'runs/exp1'); got {type(log_dir).__name__}."
            )
        self.log_dir = os.fspath(log_dir)
        if not isinstance(run_name, str) or not run_name.strip():
            raise ValueError(f"run_name must be a non-empty str, the run folder under log_dir; got {run_name!r}.")
        self.run_name = run_name

        self._labels = None
        if probe_labels is not None:
            self._labels = _int_vector(probe_labels, "probe_labels", n, "the true classes")

        self._cls = get_method(method)  # ValueError listing the known names
        self.method = self._cls.name
        if method_options is not None and not isinstance(method_options, dict):
            raise TypeError(
                f"method_options must be a dict of explainer arguments; got {type(method_options).__name__}."
            )
        self.method_options = dict(method_options or {})
        self.layer = layer

        self.targets = targets
        self._target_arg = self._check_targets(targets, n)

        if isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, (int, np.integer)) or every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be an int >= 1 (1 logs every epoch); got {every_n_epochs!r}.")
        self.every_n_epochs = int(every_n_epochs)

        self._masks = None if probe_masks is None else self._check_masks(probe_masks, (n, height, width))

        if class_names is not None:
            if isinstance(class_names, str) or not all(isinstance(c, str) for c in class_names):
                raise TypeError("class_names must be a sequence of str, e.g. ('circle', 'square', 'triangle').")
            class_names = tuple(class_names)
        self.class_names = class_names
        if class_names is not None:
            self._check_classes(len(class_names), "class_names names")

        self._display = self._check_display(display_images, n)

        if not _is_number(alpha) or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be a number in [0, 1] (the heatmap's opacity); got {alpha!r}.")
        self.alpha = float(alpha)
        colormap_table(colormap)  # unknown names fail now, listing valid ones
        self.colormap = colormap
        self.grid = bool(grid)
        if image_format not in _IMAGE_FORMATS:
            raise ValueError(f"image_format must be one of {_IMAGE_FORMATS}; got {image_format!r}.")
        self.image_format = image_format
        if not (warn_below is None or (isinstance(warn_below, str) and warn_below == "auto")) and not (
            _is_number(warn_below) and 0.0 <= warn_below <= 1.0
        ):
            raise ValueError(f'warn_below must be a share in [0, 1], "auto" or None (never warn); got {warn_below!r}.')
        self.warn_below = warn_below if warn_below is None or isinstance(warn_below, str) else float(warn_below)
        if not _is_number(pointing_tolerance) or pointing_tolerance < 0:
            raise ValueError(f"pointing_tolerance must be a number of pixels >= 0; got {pointing_tolerance!r}.")
        self.pointing_tolerance = float(pointing_tolerance)
        if on_error not in _ON_ERROR:
            raise ValueError(f"on_error must be 'raise' (stop training) or 'warn' (log and go on); got {on_error!r}.")
        self.on_error = on_error
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1; got {batch_size!r}.")
        self.batch_size = int(batch_size)

        self.explainer = None
        self.history: dict[str, list] = {}
        self._writer = None
        self._write_fn = None
        self._chief = True
        self._disabled = False
        self._below = False
        self._checked = None  # the model whose input shape and classes the probes were checked against
        self._last_epoch = None  # the last epoch seen in this fit (logged at its end if not yet)

    # -- argument checks -----------------------------------------------------------------------
    @staticmethod
    def _check_probes(probe_images) -> np.ndarray:
        if isinstance(probe_images, (dict, str, bytes)) or probe_images is None:
            raise TypeError(
                "probe_images must be one array of images (n_probes, height, width, channels), as the model "
                f"takes them; got {type(probe_images).__name__}. Multi-input models are not supported."
            )
        arr = probe_images.numpy() if tf.is_tensor(probe_images) else np.asarray(probe_images)
        if arr.dtype.kind not in "fiub":
            raise TypeError(f"probe_images must be numeric; got dtype {arr.dtype}.")
        if arr.ndim not in (3, 4):
            hint = " Add a batch axis: probe_images[None] for a single image." if arr.ndim == 2 else ""
            raise ValueError(
                f"probe_images must have shape (n_probes, height, width, channels) or (n_probes, height, width); "
                f"got shape {arr.shape}.{hint}"
            )
        if arr.shape[0] < 1 or min(arr.shape[1:3]) < 1:
            raise ValueError(f"probe_images is empty (shape {arr.shape}); pass at least one probe image.")
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise ValueError("probe_images contain NaN or inf values; pass finite, preprocessed images.")
        return arr

    def _check_display(self, display_images, n: int) -> np.ndarray:
        if display_images is None:
            arr = self._probes
            if arr.ndim == 4 and arr.shape[-1] not in (1, 3, 4):
                raise ValueError(
                    f"probe_images have {arr.shape[-1]} channels, which cannot be shown as an image; pass "
                    "display_images=(n_probes, height, width, 3) to draw the heatmaps on."
                )
            return arr
        arr = display_images.numpy() if tf.is_tensor(display_images) else np.asarray(display_images)
        shown = arr.ndim == 3 or (arr.ndim == 4 and arr.shape[-1] in (1, 3, 4))
        if arr.dtype.kind not in "fiub" or not shown or arr.shape[0] != n:
            raise ValueError(
                f"display_images must be {n} images of shape (height, width[, 1 | 3 | 4]), one per probe; got "
                f"{arr.dtype} of shape {arr.shape}."
            )
        return arr

    def _check_targets(self, targets, n: int):
        if isinstance(targets, str):
            if targets == "predicted":
                return None
            if targets == "label":
                if self._labels is None:
                    raise ValueError(
                        'targets="label" explains the true class, so it needs probe_labels=<one int per probe>.'
                    )
                return self._labels.astype(np.int32)
            raise ValueError(f'targets must be "predicted", "label", an int or one int per probe; got {targets!r}.')
        if isinstance(targets, (bool, np.bool_)) or targets is None:
            raise TypeError(f'targets must be "predicted", "label", an int or one int per probe; got {targets!r}.')
        if isinstance(targets, (int, np.integer)):
            if targets < 0:
                raise ValueError(f"targets must be a class index >= 0; got {targets}.")
            return np.full((n,), int(targets), np.int32)
        arr = np.asarray(targets)
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise TypeError(
                f'targets must be "predicted", "label", an int or one int per probe; got {type(targets).__name__} '
                f"of dtype {arr.dtype} and shape {arr.shape}."
            )
        if arr.shape[0] != n:
            raise ValueError(f"targets has {arr.shape[0]} entries but there are {n} probes; give one class per probe.")
        if (arr < 0).any():
            raise ValueError(f"targets must be class indices >= 0; got {arr[arr < 0][:5].tolist()}.")
        return arr.astype(np.int32)

    def _check_classes(self, classes: int, source: str) -> None:
        """Reject probe labels and targets outside ``0 .. classes - 1`` (``source``: who says so)."""
        checks = [("probe_labels", self._labels, "pass the true class index of each probe")]
        if not (isinstance(self.targets, str) and self.targets == "label"):  # those are the labels
            checks.append(("targets", self._target_arg, "pass targets among the model's classes"))
        for name, values, fix in checks:
            if values is None or int(values.max()) < classes:
                continue
            i = int(np.argmax(values >= classes))
            raise ValueError(
                f"{name} include class {int(values[i])} but {source} {classes} classes (0 .. {classes - 1}) "
                f"(first at probe {i}); {fix}, 0 .. {classes - 1}."
            )

    @staticmethod
    def _check_masks(masks, shape: tuple) -> np.ndarray:
        arr = masks.numpy() if tf.is_tensor(masks) else np.asarray(masks)
        if arr.ndim == 4 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.dtype.kind not in "fiub":
            raise TypeError(f"probe_masks must be a boolean (or 0/1) array; got dtype {arr.dtype}.")
        if arr.shape != shape:
            raise ValueError(
                f"probe_masks must have shape {shape} (one (height, width) object mask per probe, the probes' "
                f"spatial size); got {arr.shape}."
            )
        empty = np.flatnonzero(~(arr > 0).reshape(len(arr), -1).any(axis=1))
        if empty.size:
            raise ValueError(
                f"probe_masks of probes {empty[:10].tolist()} are empty; every probe needs the mask of its object. "
                "Drop the probes without an object."
            )
        return arr > 0

    # -- Keras configuration -------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """The constructor arguments that are plain values (the arrays are left out).

        Returns
        -------
        dict
            ``log_dir``, ``method``, ``layer``, ``targets``, ``every_n_epochs``, ``run_name``, and
            the display and warning options, JSON-serialisable.

        Examples
        --------
        >>> import numpy as np, keras_gradcam as kg
        >>> kg.GradCAMCallback(np.zeros((2, 16, 16, 3)), "runs/a", every_n_epochs=5).get_config()["every_n_epochs"]
        5
        """
        targets = self.targets
        if not isinstance(targets, (str, int)):
            targets = [int(t) for t in np.asarray(targets)]
        elif isinstance(targets, np.integer):
            targets = int(targets)
        layer = self.layer.name if isinstance(self.layer, keras.Operation) else self.layer
        return {
            "log_dir": self.log_dir,
            "method": self.method,
            "layer": layer,
            "targets": targets,
            "every_n_epochs": self.every_n_epochs,
            "run_name": self.run_name,
            "class_names": None if self.class_names is None else list(self.class_names),
            "alpha": self.alpha,
            "colormap": self.colormap if isinstance(self.colormap, str) else getattr(self.colormap, "name", None),
            "grid": self.grid,
            "image_format": self.image_format,
            "warn_below": self.warn_below,
            "pointing_tolerance": self.pointing_tolerance,
            "on_error": self.on_error,
            "batch_size": self.batch_size,
            "method_options": dict(self.method_options),
        }

    @property
    def run_dir(self) -> str:
        """The run folder the events go to: ``os.path.join(log_dir, run_name)``."""
        return os.path.join(self.log_dir, self.run_name)

    @property
    def warn_threshold(self) -> float | None:
        """The share of evidence inside the objects below which a warning is logged (None: never)."""
        if self._masks is None or self.warn_below is None:
            return None
        if self.warn_below == "auto":
            return min(0.5, 2.0 * float(self._masks.mean()))
        return self.warn_below

    @property
    def tag_prefix(self) -> str:
        """The tag section of the images: the method name, e.g. ``"gradcam++"``."""
        return self.method

    # -- training hooks ------------------------------------------------------------------------
    def set_model(self, model):
        """Keep the model and check the probes, labels and targets against it, before any step.

        Raises
        ------
        ValueError
            When the probes do not have the model's input shape, or a probe label or target is
            not one of the model's classes. A model without a known input shape (a
            ``Sequential`` without ``Input``) is checked once ``fit`` has built it, before the
            probes are first explained.
        """
        super().set_model(model)
        self._checked = None
        self._check_model(model)

    def on_train_begin(self, logs=None):
        """Reset per-fit state, check probes against the model, create the run folder."""
        self._close_writer()  # a previous fit that ended in an exception
        self.history = {"epoch": []}
        if self._masks is not None:
            self.history.update(energy_inside_object=[], pointing_game=[])
        self._disabled = False
        self._below = False
        self._last_epoch = None
        self._chief = _is_chief(self.model)
        self._check_model(self.model)
        if self.explainer is None or self.explainer.model is not self.model:
            self.explainer = self._cls(self.model, self.layer, batch_size=self.batch_size, **self.method_options)
        if self._chief:
            try:
                tf.io.gfile.makedirs(self.run_dir)
            except (OSError, tf.errors.OpError) as e:
                raise OSError(
                    f"GradCAMCallback cannot create its run folder {self.run_dir!r}: {getattr(e, 'message', e)}. "
                    "Pass a writable log_dir (it is created if missing)."
                ) from e
            if "://" not in self.run_dir and not os.access(self.run_dir, os.W_OK):
                raise OSError(f"GradCAMCallback cannot write to {self.run_dir!r}; pass a writable log_dir.")

    def on_epoch_end(self, epoch, logs=None):
        """Explain the probes and write the summaries, on logged epochs, on the chief only."""
        self._last_epoch = int(epoch)
        if not self._chief or self._disabled or not self._due(epoch):
            return
        self._safe_log(int(epoch), last=epoch == (self.params or {}).get("epochs", -1) - 1)

    def on_train_end(self, logs=None):
        """Log the epoch training ended at if it was not logged yet, then close the writer.

        Training that another callback stops early (``EarlyStopping``, ``model.stop_training =
        True``) ends before ``params["epochs"]``; its last epoch is logged here, so that the last
        image of every card shows the trained model. A later ``fit`` opens a new writer in the
        same run folder.
        """
        try:
            done = self.history.get("epoch") or [None]
            if self._chief and not self._disabled and self._last_epoch is not None and done[-1] != self._last_epoch:
                self._safe_log(self._last_epoch, last=True)
        finally:
            self._close_writer()

    # -- internals -----------------------------------------------------------------------------
    def _safe_log(self, epoch: int, last: bool) -> None:
        """``_log`` with the failure policy of ``on_error``; mistakes in the probes raise as they are."""
        if self._checked is not self.model:
            self._check_model(self.model)  # built by fit after on_train_begin: a ValueError of the user's
        try:
            self._log(epoch, last)
        except Exception as e:  # noqa: BLE001 - reported with context below
            what = (
                f"GradCAMCallback failed at epoch {epoch} while explaining the probes or writing to "
                f"{self.run_dir!r}: {type(e).__name__}: {e}"
            )
            if self.on_error == "raise":
                raise RuntimeError(what + " (pass on_error='warn' to keep training without the overlays).") from e
            logger.error("%s. Logging of overlays is switched off for the rest of this fit; training goes on.", what)
            self._disabled = True

    def _due(self, epoch: int) -> bool:
        last = (self.params or {}).get("epochs")
        return epoch % self.every_n_epochs == 0 or (last is not None and epoch == last - 1)

    def _check_model(self, model) -> None:
        """Check the probes' shape, the labels and the targets against ``model`` (once it is built)."""
        inputs = getattr(model, "inputs", None) if model is not None else None
        if not inputs:
            return  # not built yet (a Sequential without Input): checked again before the first log
        if len(inputs) != 1:
            raise ValueError(
                f"GradCAMCallback needs a single-input model; this one has {len(inputs)} inputs "
                f"{[tuple(t.shape) for t in inputs]}. Explain such models with kg.explain()."
            )
        expected = (None,) + tuple(inputs[0].shape)[1:]  # any batch size (fit may build it with its own)
        got = self._probes.shape
        if len(expected) != len(got) or any(e is not None and e != g for e, g in zip(expected[1:], got[1:])):
            raise ValueError(
                f"probe_images have shape {got} but the model takes inputs of shape {expected}; pass probes "
                f"of the model's input size, preprocessed like the training data.{self._shape_hint(expected, got)}"
            )
        outputs = getattr(model, "outputs", None) or []
        if len(outputs) == 1:
            classes = Capture(model, []).num_classes()  # a binary sigmoid unit counts as 2 classes
            if classes is not None:
                self._check_classes(classes, "the model has")
        self._checked = model

    @staticmethod
    def _shape_hint(expected: tuple, got: tuple) -> str:
        """How to turn probes of shape ``got`` into the model's ``expected`` input shape."""
        if len(expected) == len(got) + 1 and tuple(expected[1:]) == got:
            return " A single image needs a batch axis: probe_images[None]."
        if len(expected) == len(got) + 1 and expected[-1] in (1, None):
            return " Grayscale probes need a channel axis: probe_images[..., None]."
        if len(expected) != len(got):
            return f" The model takes {len(expected)}-D batches, the probes are {len(got)}-D."
        hints = []
        size, want = got[1:-1], expected[1:-1]
        if any(e is not None and e != g for e, g in zip(want, size)):
            shown = "x".join("?" if e is None else str(e) for e in want)
            hints.append(
                f" The probes are {'x'.join(map(str, size))}, the model takes {shown}: resize them as the "
                "training images were (e.g. keras.ops.image.resize)."
            )
        if expected[-1] is not None and expected[-1] != got[-1]:
            fix = (
                "convert RGB probes to one channel, e.g. probe_images.mean(axis=-1, keepdims=True)"
                if expected[-1] == 1
                else "give the probes the channels of the training data"
            )
            hints.append(f" The probes have {got[-1]} channels, the model {expected[-1]}: {fix}.")
        return "".join(hints)

    def _ensure_writer(self, layer, shapes) -> None:
        if self._writer is not None:
            return
        self._writer = tf.summary.create_file_writer(self.run_dir)
        self._write_fn = self._build_write_fn(self._writer, layer, shapes)

    def _close_writer(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            finally:
                self._writer = None
                self._write_fn = None

    def _name(self, k) -> str:
        if k is None or k < 0:
            return "?"
        k = int(k)
        if self.class_names is not None and k < len(self.class_names):
            return self.class_names[k]
        return str(k)

    def _descriptions(self, layer) -> list[str]:
        """Markdown description of each probe card (the same at every step)."""
        shown = display_name(self.method)
        what = {"predicted": "the predicted class", "label": "the true class"}.get(
            self.targets if isinstance(self.targets, str) else "", "the chosen class"
        )
        strip = (
            " The strip under the image is green when the prediction is right, red when it is wrong."
            if self._labels is not None
            else ""
        )
        out = []
        for i in range(self._n):
            true = f", true class **{_md(self._name(self._labels[i]))}**" if self._labels is not None else ""
            if self._target_arg is not None and not (isinstance(self.targets, str) and self.targets == "label"):
                what_i = f"class **{_md(self._name(self._target_arg[i]))}**"
            else:
                what_i = what
            out.append(
                f"**Probe {i:02d}**{true}. {shown} heatmap of {what_i} at layer `{layer}`, drawn with the "
                f"`{self.colormap}` colormap (alpha {self.alpha:g}; red = strongest evidence). One image per "
                f"logged epoch: move the step slider to watch where the model looks.{strip} Per-epoch "
                f"predictions and scores: text card `{self.tag_prefix}/captions`."
            )
        return out

    def _build_write_fn(self, writer, layer, shapes):
        """One compiled function writing an epoch's images and captions (traced once per writer).

        Encoding the overlays is the costly part of an epoch, so it is compiled; the few scalars
        and notes are written eagerly by ``_log`` (only on the epochs that have them).
        """
        prefix = self.tag_prefix
        shown = display_name(self.method)
        descriptions = self._descriptions(layer)
        grid_description = f"All {self._n} probes, {shown} at layer `{layer}`, row by row from probe 00."
        caption_description = f"Per epoch: true, predicted and explained class and the score of each probe ({shown})."
        self._scalar_descriptions = {}
        if self._masks is not None:
            area = float(self._masks.mean())
            self._scalar_descriptions["energy_inside_object"] = (
                f"Share of the {shown} heatmap energy inside the probes' object masks (energy-based pointing "
                f"game), mean over the probes. A map spread evenly over the image scores {area:.0%} (the objects' "
                "area); a model that looks at the objects scores far above it; a falling curve means the "
                "evidence moves off the objects, e.g. to a watermark or the background."
            )
            self._scalar_descriptions["pointing_game"] = (
                f"Share of probes whose {shown} heatmap maximum lies on the object (pointing game, tolerance "
                f"{self.pointing_tolerance:g} px)."
            )
        image_format = self.image_format

        @tf.function(
            input_signature=[
                tf.TensorSpec((self._n,) + shapes[0], tf.uint8),
                tf.TensorSpec(shapes[1], tf.uint8),
                tf.TensorSpec((), tf.int64),
                tf.TensorSpec((), tf.string),
            ]
        )
        def write(overlays, grid, step, captions):
            with writer.as_default(step=step):
                for i in range(self._n):
                    _image_summary(f"{prefix}/probe_{i:02d}", overlays[i], descriptions[i], image_format)
                if self.grid:
                    _image_summary(f"{prefix}/grid", grid, grid_description, image_format)
                tf.summary.text(f"{prefix}/captions", captions, description=caption_description)
            return tf.constant(0)

        return write

    def _explain(self):
        exp = self.explainer(self._probes, targets=self._target_arg)
        return exp

    def _log(self, epoch: int, last: bool = False) -> None:
        """Explain the probes and write epoch ``epoch``; ``last``: the final log of this ``fit``."""
        exp = self._explain()
        heat = exp.heatmaps
        if heat.ndim != 3:
            raise ValueError(f"GradCAMCallback needs 2-D heatmaps; the explainer gave shape {heat.shape}.")
        finite = self._finite(exp)
        images = overlay(self._display, heat, alpha=self.alpha, colormap=self.colormap)
        if self._labels is not None and exp.predictions is not None:
            images = self._add_strips(images, exp.predictions == self._labels, finite)
        grid = _tile(images) if self.grid else np.zeros((1, 1, 3), np.uint8)

        energy = hits = scalars = None
        if self._masks is not None:
            if heat.shape != self._masks.shape:
                raise ValueError(
                    f"heatmaps have shape {heat.shape} but probe_masks {self._masks.shape}; masks must have the "
                    "spatial size of the model input."
                )
            energy = metrics.energy_pointing_game(heat, self._masks, reduction=None)
            hits = metrics.pointing_game(heat, self._masks, tolerance=self.pointing_tolerance, reduction=None)
            energy = np.where(finite, energy, np.nan)
            hits = np.where(finite, hits, np.nan)
            if finite.all():  # bias numbers only of a model whose outputs are numbers
                scalars = (float(energy.mean()), float(hits.mean()))

        note = None if finite.all() else self._non_finite_note(epoch, int((~finite).sum()))
        captions = self._captions(epoch, exp, energy, hits, scalars, finite, note)
        self._ensure_writer(exp.layer, (images.shape[1:], grid.shape))
        step = tf.constant(epoch, tf.int64)
        self._write_fn(tf.constant(images), tf.constant(grid), step, tf.constant(captions))
        with self._writer.as_default(step=step):
            if scalars is not None:
                for name, value in zip(("energy_inside_object", "pointing_game"), scalars):
                    tf.summary.scalar(f"bias/{name}", value, description=self._scalar_descriptions[name])
            if note is not None:
                tf.summary.text(
                    f"{self.tag_prefix}/warnings", note,
                    description="Epochs at which the model's outputs for some probes were not finite.",
                )
        self._writer.flush()

        self.history["epoch"].append(epoch)
        if note is not None:
            logger.warning("GradCAMCallback: %s", note.replace("**", ""))
        if self._masks is None:
            return
        share, rate = scalars if scalars is not None else (math.nan, math.nan)
        self.history["energy_inside_object"].append(share)
        self.history["pointing_game"].append(rate)
        if scalars is None:
            return  # no bias warning from a model without finite outputs
        below = self.warn_threshold is not None and share < self.warn_threshold
        warn = below and (not self._below or last)  # on falling below, and at the end if still below
        self._below = below
        if warn:
            shown = display_name(self.method)
            logger.warning(
                "Only %.0f%% of the %s evidence lies inside the objects at epoch %d (TensorBoard step %d; the "
                "objects cover %.0f%% of the probe images): the model may be using a shortcut (background, "
                "watermark). Look at the probe overlays in TensorBoard (run %r under %s).",
                100 * share, shown, epoch + 1, epoch, 100 * float(self._masks.mean()), self.run_name, self.log_dir,
            )

    def _finite(self, exp) -> np.ndarray:
        """Per probe: whether the model's explained score (and so its output) is a finite number.

        A training run whose loss became NaN leaves NaN weights: every score is NaN and the
        heatmaps come back blank, which must not be read as "the evidence lies off the objects".
        """
        scores = np.asarray(exp.scores, np.float64).reshape(self._n, -1)
        heat = np.asarray(exp.heatmaps, np.float64).reshape(self._n, -1)
        return np.isfinite(scores).all(axis=1) & np.isfinite(heat).all(axis=1)

    def _non_finite_note(self, epoch: int, bad: int) -> str:
        return (
            f"The model's outputs are not finite (NaN or inf) for **{bad} of {self._n} probes** at epoch {epoch + 1} "
            f"(TensorBoard step {epoch}): training has probably diverged (NaN or exploding loss; try a lower "
            "learning rate or gradient clipping). Their heatmaps are blank, and this epoch has no bias scalars."
        )

    def _add_strips(self, images: np.ndarray, correct: np.ndarray, finite: np.ndarray) -> np.ndarray:
        n, h, w, _ = images.shape
        rows = max(2, h // 16)
        strip = np.where(correct[:, None, None, None], _CORRECT, _WRONG).astype(np.uint8)
        strip = np.where(finite[:, None, None, None], strip, _UNKNOWN).astype(np.uint8)
        return np.concatenate([images, np.broadcast_to(strip, (n, rows, w, 3))], axis=1)

    def _captions(self, epoch, exp, energy, hits, scalars, finite, note) -> str:
        shown = display_name(self.method)
        head = f"**Epoch {epoch + 1}** (step {epoch}), {shown} at layer `{exp.layer}`"
        if scalars is not None:
            head += f": {scalars[0]:.0%} of the evidence inside the objects, pointing game {scalars[1]:.0%}"
        cols = ["probe", "true", "predicted", "explained", "score"]
        if energy is not None:
            cols += ["inside object", "pointing hit"]
        lines = [head + "."] + ([note] if note else []) + ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        preds = exp.predictions
        for i in range(self._n):
            true = self._name(self._labels[i]) if self._labels is not None else "-"
            pred = self._name(preds[i]) if preds is not None and finite[i] else "-"
            if self._labels is not None and preds is not None and finite[i]:
                pred += " ✓" if preds[i] == self._labels[i] else " ✗"
            explained = self._name(exp.targets[i]) if exp.targets is not None else "-"
            row = [f"{i:02d}", _md(true), _md(pred), _md(explained), f"{float(exp.scores[i]):.3g}"]
            if energy is not None:
                row += ["-" if not np.isfinite(energy[i]) else f"{energy[i]:.0%}",
                        "-" if not np.isfinite(hits[i]) else ("yes" if hits[i] else "no")]
            lines.append("| " + " | ".join(row) + " |")
        return "\n".join(lines)
