"""The ``keras.callbacks.Callback`` subclass: arguments, configuration, training hooks, and per logged
epoch the pass that explains the probes and hands the pictures and texts to the writer (what it checks
lives in :mod:`~keras_gradcam.callback.probes`, what it writes in :mod:`~keras_gradcam.callback.summaries`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ..core.validate import boolean, one_of, positive_float, positive_int
from ..methods.registry import display_name, get_method
from ..viz.overlay import colormap_table, overlay
from . import summaries
from .probes import (
    bias_scores,
    check_class_names,
    check_classes,
    check_display,
    check_masks,
    check_probe_shape,
    check_probes,
    check_targets,
    class_vector,
    finite_probes,
    model_classes,
    targets_config,
    targets_from_config,
)

__all__ = ["GradCAMCallback"]

logger = logging.getLogger("keras_gradcam")

IMAGE_FORMATS = ("jpeg", "png")
DATA_ARGUMENTS = ("probe_images", "probe_labels", "probe_masks", "display_images")  # not in the config


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


def _is_share(value) -> bool:
    """Whether ``value`` is a real number in ``[0, 1]`` (bools excluded)."""
    real = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    return real and 0.0 <= value <= 1.0


class GradCAMCallback(keras.callbacks.Callback):
    """Log Grad-CAM++ overlays of a fixed probe set to TensorBoard during ``fit``, to reveal bias.

    After every ``every_n_epochs``-th epoch (and the last one, also when another callback stops
    training early) the probes are explained with ``training=False`` and TensorBoard gets, in the
    run folder ``log_dir/run_name`` beside the ``train``/``validation`` runs of Keras' TensorBoard:

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
    * ``<method>/warnings``: a text entry, only at epochs where the outputs for some probes are not
      finite (NaN or inf, e.g. after the loss became NaN) or every heatmap is empty. Such an epoch
      is also reported in the Python log and gets no bias scalars and no bias warning (see Notes).

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
    targets : {"predicted", "label"}, int, sequence of int, target object or callable, default="predicted"
        What each heatmap explains: the model's top-1 class, the true class (needs
        ``probe_labels``), one class for all probes, one class per probe, or, as in
        :func:`keras_gradcam.explain`, a :class:`~keras_gradcam.ClassTarget`,
        :class:`~keras_gradcam.OutputTarget` or callable ``outputs -> (n_probes,)`` passed through
        to the explainer (the captions then show no explained class).
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
    pointing_tolerance : float, optional
        Pixels of tolerance of the pointing game (0: the maximum must be on an object pixel).
        None (default): :func:`keras_gradcam.metrics.pointing_tolerance`, TorchRay's 15 px at
        224 px scaled to the probes (about 2.1 px at 32 px, where a fixed 15 px would count
        nearly every maximum as a hit). ``bias/pointing_game``'s description gives the value.
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
        not the model's input shape; for a model that ``fit`` builds (a ``Sequential`` without
        ``Input``), before the probes are first explained. These are raised as they are, whatever
        ``on_error``.
    keras_gradcam.core.validate.ClassIndexError
        Both an ``IndexError`` and a ``ValueError``: for a negative label or target at
        construction, and for labels or targets that are not classes of the model (when it is
        set) or of ``class_names`` (at construction).
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

    *Outputs that are not numbers, maps that are empty.* A probe whose explained score or heatmap
    is not finite (a diverged run leaves NaN weights; its heatmaps come back blank) has no
    prediction: its strip is grey, its caption row shows ``-``. When any probe is affected, or every
    heatmap is empty (all zero, e.g. a run diverged to huge but finite scores), the epoch's bias
    scalars are not written (a gap in the curve, not a drop to 0 that would read as a shortcut),
    ``history`` gets NaN, the bias warning is skipped, and a note naming the epoch (and the number
    of probes, or the scores' magnitude) goes to the Python log and the ``<method>/warnings`` card.

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
        targets: Any = "predicted",
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
        pointing_tolerance: float | None = None,
        on_error: str = "raise",
        batch_size: int = 32,
        method_options: dict | None = None,
    ):
        super().__init__()
        self._probes = check_probes(probe_images)
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

        self._labels = None if probe_labels is None else class_vector(probe_labels, "probe_labels", n, "the true classes")

        self._cls = get_method(method)  # ValueError listing the known names
        self.method = self._cls.name
        if method_options is not None and not isinstance(method_options, dict):
            raise TypeError(
                f"method_options must be a dict of explainer arguments; got {type(method_options).__name__}."
            )
        self.method_options = dict(method_options or {})
        self.layer = layer

        self.targets = targets
        self._target_arg = check_targets(targets, self._labels, n)

        try:
            self.every_n_epochs = positive_int("every_n_epochs", every_n_epochs)
        except TypeError as e:  # a float here has always been a ValueError (tests pin it)
            raise ValueError(str(e)) from None

        self._masks = None if probe_masks is None else check_masks(probe_masks, (n, height, width))

        self.class_names = check_class_names(class_names)
        if class_names is not None:
            self._check_classes(len(class_names), "class_names names")

        self._display = check_display(display_images, self._probes)

        if not _is_share(alpha):
            raise ValueError(f"alpha must be a number in [0, 1] (the heatmap's opacity); got {alpha!r}.")
        self.alpha = float(alpha)
        colormap_table(colormap)  # unknown names fail now, listing valid ones
        self.colormap = colormap
        self.grid = boolean("grid", grid)
        self.image_format = one_of("image_format", image_format, IMAGE_FORMATS)
        if not (warn_below is None or (isinstance(warn_below, str) and warn_below == "auto") or _is_share(warn_below)):
            raise ValueError(f'warn_below must be a share in [0, 1], "auto" or None (never warn); got {warn_below!r}.')
        self.warn_below = warn_below if warn_below is None or isinstance(warn_below, str) else float(warn_below)
        self.pointing_tolerance = None if pointing_tolerance is None else positive_float(
            "pointing_tolerance", pointing_tolerance, allow_zero=True)  # None: scaled to the probes by the metrics
        if on_error not in ("raise", "warn"):
            raise ValueError(f"on_error must be 'raise' (stop training) or 'warn' (log and go on); got {on_error!r}.")
        self.on_error = on_error
        self.batch_size = positive_int("batch_size", batch_size)

        self.explainer = None
        self.history: dict[str, list] = {}
        self._writer: summaries.EpochWriter | None = None
        self._chief = True
        self._disabled = False
        self._below = False
        self._checked = None  # the model whose input shape and classes the probes were checked against
        self._last_epoch = None  # the last epoch seen in this fit (logged at its end if not yet)

    # -- Keras configuration -------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """The constructor arguments that are plain values, JSON-serialisable.

        The probe data (``probe_images``, ``probe_labels``, ``probe_masks``, ``display_images``)
        is data, not configuration: it is left out and passed to :meth:`from_config` again. The
        targets are kept as given (``"predicted"``, ``"label"``, an int, a list of ints); a
        :class:`~keras_gradcam.ClassTarget` or :class:`~keras_gradcam.OutputTarget` as
        ``{"class_name": ..., "config": {...}}``; a callable is code and is written as None (pass
        it to :meth:`from_config` as ``targets=``). A layer object is written as its name.

        Returns
        -------
        dict
            ``log_dir``, ``method``, ``layer``, ``targets``, ``every_n_epochs``, ``run_name``,
            ``class_names``, the display and warning options, ``batch_size`` and ``method_options``.

        Examples
        --------
        >>> import numpy as np, keras_gradcam as kg
        >>> kg.GradCAMCallback(np.zeros((2, 16, 16, 3)), "runs/a", every_n_epochs=5).get_config()["every_n_epochs"]
        5
        """
        layer = self.layer.name if isinstance(self.layer, keras.Operation) else self.layer
        return {
            "log_dir": self.log_dir,
            "method": self.method,
            "layer": layer,
            "targets": targets_config(self.targets),
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

    @classmethod
    def from_config(cls, config: dict[str, Any], **data) -> GradCAMCallback:
        """A callback from :meth:`get_config`'s dict and the probe data it leaves out.

        Parameters
        ----------
        config : dict
            What :meth:`get_config` returned (or a JSON round trip of it).
        **data
            ``probe_images`` (required), and ``probe_labels``, ``probe_masks``,
            ``display_images`` where the original had them; ``targets=`` where the original
            target was a callable (the config holds None for it). Any other constructor argument
            given here replaces the config's.

        Returns
        -------
        GradCAMCallback
            One whose ``get_config()`` equals ``config``.

        Examples
        --------
        >>> import numpy as np, keras_gradcam as kg
        >>> cb = kg.GradCAMCallback(np.zeros((2, 16, 16, 3)), "runs/a", targets=kg.ClassTarget(1))
        >>> copy = kg.GradCAMCallback.from_config(cb.get_config(), probe_images=np.zeros((2, 16, 16, 3)))
        >>> copy.get_config() == cb.get_config(), copy.targets
        (True, ClassTarget(index=1, output=None))
        """
        if "probe_images" not in data:
            raise TypeError(
                f"from_config needs the probe data the config leaves out, {', '.join(DATA_ARGUMENTS)}: "
                "GradCAMCallback.from_config(config, probe_images=..., probe_labels=..., probe_masks=...)."
            )
        kwargs = {**config, "targets": targets_from_config(config.get("targets", "predicted"))}
        if kwargs["targets"] is None and "targets" not in data:
            raise ValueError(
                "the config's targets were a callable, which a config cannot hold; pass it again: "
                "GradCAMCallback.from_config(config, probe_images=..., targets=<the callable>)."
            )
        return cls(**{**kwargs, **data})

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
            When the probes do not have the model's input shape, or (as
            :class:`~keras_gradcam.core.validate.ClassIndexError`) a probe label or target is not
            one of the model's classes. A model without a known input shape (a ``Sequential``
            without ``Input``) is checked once ``fit`` has built it, before the probes are first
            explained.

        A model that trains another one in place and names it ``explained_model``
        (:class:`~keras_gradcam.GuidedTraining`) is looked through: that model is explained.
        """
        model = getattr(model, "explained_model", model)
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
        if not check_probe_shape(model, self._probes):
            return
        classes = model_classes(model)
        if classes is not None:
            self._check_classes(classes, "the model has")
        self._checked = model

    def _check_classes(self, classes: int, source: str) -> None:
        """Labels and target classes against ``classes`` (``source``: who says so)."""
        fixed = not callable(self._target_arg) and not (isinstance(self.targets, str) and self.targets == "label")
        check_classes(classes, source, self._labels, self._target_arg if fixed else None)

    def _ensure_writer(self, layer, image_shape: tuple, grid_shape: tuple) -> None:
        if self._writer is not None:
            return
        shown = display_name(self.method)
        descriptions = summaries.probe_descriptions(
            n=self._n, method=shown, layer=layer, colormap=self.colormap, alpha=self.alpha, tag_prefix=self.tag_prefix,
            targets=self.targets, target_classes=self._target_arg, labels=self._labels, class_names=self.class_names,
        )
        scalar_descriptions = None if self._masks is None else summaries.scalar_descriptions(
            shown, self._masks, self.pointing_tolerance)
        self._writer = summaries.EpochWriter(
            self.run_dir, tag_prefix=self.tag_prefix, descriptions=descriptions, image_shape=image_shape,
            grid_shape=grid_shape, grid=self.grid, image_format=self.image_format, method=shown, layer=layer,
            scalar_descriptions=scalar_descriptions,
        )

    def _close_writer(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            finally:
                self._writer = None

    def _explain(self):
        return self.explainer(self._probes, targets=self._target_arg)

    def _log(self, epoch: int, last: bool = False) -> None:
        """Explain the probes and write epoch ``epoch``; ``last``: the final log of this ``fit``."""
        exp = self._explain()
        heat = exp.heatmaps
        if heat.ndim != 3:
            raise ValueError(f"GradCAMCallback needs 2-D heatmaps; the explainer gave shape {heat.shape}.")
        finite = finite_probes(exp)
        images = overlay(self._display, heat, alpha=self.alpha, colormap=self.colormap)
        if self._labels is not None and exp.predictions is not None:
            images = summaries.add_strips(images, exp.predictions == self._labels, finite)
        grid = summaries.tile(images) if self.grid else np.zeros((1, 1, 3), np.uint8)

        energy = hits = scalars = None
        if self._masks is not None:
            energy, hits, scalars = bias_scores(heat, self._masks, finite, self.pointing_tolerance)

        note = summaries.epoch_note(epoch, exp, finite, display_name(self.method))
        caption_text = summaries.captions(
            epoch, exp, method=display_name(self.method), labels=self._labels, class_names=self.class_names,
            energy=energy, hits=hits, scalars=scalars, finite=finite, note=note,
        )
        self._ensure_writer(exp.layer, images.shape[1:], grid.shape)
        self._writer.write(epoch, images, grid, caption_text, scalars, note)

        self.history["epoch"].append(epoch)
        if note is not None:
            logger.warning("GradCAMCallback: %s", note.replace("**", ""))
        if self._masks is None:
            return
        share, rate = scalars if scalars is not None else (math.nan, math.nan)
        self.history["energy_inside_object"].append(share)
        self.history["pointing_game"].append(rate)
        if scalars is None:
            return  # no bias warning from a model without finite outputs, nor from maps without any evidence
        below = self.warn_threshold is not None and share < self.warn_threshold
        warn = below and (not self._below or last)  # on falling below, and at the end if still below
        self._below = below
        if warn:
            logger.warning(
                "Only %.0f%% of the %s evidence lies inside the objects at epoch %d (TensorBoard step %d; the "
                "objects cover %.0f%% of the probe images): the model may be using a shortcut (background, "
                "watermark). Look at the probe overlays in TensorBoard (run %r under %s).",
                100 * share, display_name(self.method), epoch + 1, epoch, 100 * float(self._masks.mean()),
                self.run_name, self.log_dir,
            )
