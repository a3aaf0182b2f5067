"""Shared plumbing of every explainer: inputs, batching, compiling, post-processing.

A method subclasses :class:`BaseCAM` and writes its math in :meth:`BaseCAM.compute`, a pure
function of the activations ``A`` and gradients ``g`` of one batch (see docs/methods/). The
base class runs :class:`~keras_gradcam.core.capture.Capture`, applies the method's ReLU, resizes the
map to the input resolution and min-max normalises it, all inside one ``tf.function`` traced
once per input signature and reused across calls.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import keras
import numpy as np
import tensorflow as tf

from .capture import TRACE_LOCK, Capture, Captured
from .dense_targets import check_sample_count
from .device import device_errors
from .explanation import Explanation
from .graph import reaches_output
from .inputs import batch_slice, flat, map_inputs, prepare_inputs, signature, signature_key
from .kerashub import preprocess
from .layers import LayerInfo, LayerSpec, ensure_built, resolve_layer
from .postprocess import eigen_map, normalize, resize, weighted_sum
from .replicas import Compiled, split_body
from .smoothing import AUG_COPIES, OPTIONS, all_copies, augment, average_copies, check_aug_smooth, check_options
from .targets import Targets, check_range, resolve_targets
from .validate import boolean, non_negative_int, one_of, positive_int

__all__ = ["BaseCAM", "FunctionCache", "compile_cached", "explain_warnings", "check_reaches"]

FUNCTIONS_KEPT = 16  # compiled functions an explainer keeps (least recently used dropped)


class FunctionCache(OrderedDict):
    """The compiled functions of one explainer, at most ``maxsize``, least recently used dropped.

    Keys are the input signature and, for callable targets, the callable itself: a new ``lambda``
    on every call traces a new function, so without a bound a loop over lambdas would keep every
    graph alive. Pass a reusable target instead (an int, a sequence of ints, or one target object
    such as :class:`~keras_gradcam.core.targets.ClassTarget` whose equality lets equal targets share a
    trace) to trace once.
    """

    def __init__(self, maxsize: int = FUNCTIONS_KEPT):
        super().__init__()
        self.maxsize = int(maxsize)

    def get(self, key, default=None):
        if key in self:
            self.move_to_end(key)
            return self[key]
        return default

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.maxsize:
            self.popitem(last=False)


def compile_cached(cache: FunctionCache, key, body, signature: list, contexts=list):
    """``tf.function(body)`` for ``signature``, traced once and kept in ``cache`` under ``key``.

    The one compile-and-cache step of the package (explainers, metrics): traced under the
    process-wide :data:`~keras_gradcam.core.capture.TRACE_LOCK` (two threads' first calls trace
    once, one after the other) inside the context managers ``contexts()`` returns (the capture's
    interception), with a fixed input signature (never retraced), autograph off (the package's
    graph code has no Python control flow on tensors, and an error raised while tracing reaches
    the user as it was raised, not inside TensorFlow's "in user code" trace), and kept in a
    bounded :class:`FunctionCache`.

    What is kept and returned is the traced concrete function, never the ``tf.function``: a
    ``tf.function`` retraces when called in another context (inside or outside a
    ``strategy.scope()``, another device scope), and a retrace outside ``contexts()`` would miss
    the capture's interception.
    """
    with TRACE_LOCK:
        fn = cache.get(key)
        if fn is None:
            traced = tf.function(body, input_signature=signature, autograph=False)
            with contextlib.ExitStack() as stack:
                for ctx in contexts():
                    stack.enter_context(ctx)
                fn = Compiled(traced, traced.get_concrete_function(), signature)
            cache[key] = fn
    return fn


NO_EVIDENCE = (
    "the layer shows no positive evidence for the explained target (the weighted sum is <= 0 everywhere, "
    "or the layer's activations are zero). Try counterfactual=True for negative evidence, another target, "
    "or another layer."
)
OFF_BRANCH = "no gradient flows from that output to it, so every gradient-based map would be zero"


def explain_warnings(method: str, finite: np.ndarray, heat: np.ndarray, zero_gradients=None, reason: str = NO_EVIDENCE) -> None:
    """Warn about samples whose explanation carries no information, and why.

    ``finite``: per sample, whether the score and map are finite; ``zero_gradients``: per sample,
    whether every gradient at the layer was exactly zero (None for gradient-free methods).
    """
    bad = int((~finite).sum())
    if bad:
        warnings.warn(
            f"{method}: {bad} of {len(finite)} samples have a score or map that is not finite (NaN or inf): "
            "the model's weights or outputs are not finite (e.g. after a diverged training run). Their maps "
            "are all zero; Explanation.finite marks them.",
            RuntimeWarning,
            stacklevel=4,
        )
    peaks = heat.reshape(len(heat), -1).max(axis=1, initial=0.0)
    empty = finite & (peaks <= 0)
    if not empty.any():
        return
    zero = np.zeros_like(empty) if zero_gradients is None else np.asarray(zero_gradients, bool)
    no_grad = int((empty & zero).sum())
    other = int((empty & ~zero).sum())
    if no_grad:
        warnings.warn(
            f"{method}: {no_grad} of {len(finite)} maps are all zero because every gradient at the layer is "
            "exactly zero: the explained score does not depend on the layer (a non-differentiable score such "
            "as tf.argmax, a layer the explained output does not depend on, or a saturated output).",
            RuntimeWarning,
            stacklevel=4,
        )
    if other:
        warnings.warn(
            f"{method}: {other} of {len(finite)} maps are all zero: {reason}",
            RuntimeWarning,
            stacklevel=4,
        )


def check_reaches(model: keras.Model, info: LayerInfo, output_index: int, why: str | None = OFF_BRANCH, note=None) -> None:
    """Refuse a layer the explained output does not depend on, saying ``why`` (the method's ``off_branch``);
    where ``why`` is None (a method that does not need it), warn ``note`` (its ``off_branch_note``) if given."""
    chain, current = [], model
    try:
        for name in info.path.split("/")[:-1]:
            if not isinstance(current, keras.Model):
                break  # inside a subclassed layer: not graph nodes
            current = current.get_layer(name)
            chain.append(current)
    except (ValueError, AttributeError):
        return
    # a layer inside a subclassed layer feeds the output if that layer (the graph node) does
    links = chain if info.sources is not None else chain + [info.layer]
    if (why is not None or note is not None) and reaches_output(model, links, output_index) is False:
        names = list(getattr(model, "output_names", None) or [])
        out = names[output_index] if output_index < len(names) else output_index
        where = f"layer {info.path!r} does not feed the explained output {out!r} of model {model.name!r} (it lies on another branch)"
        if why is None:
            level, frame = 1, sys._getframe(0)  # from this function up to the first frame outside the package
            while frame is not None and frame.f_globals.get("__name__", "").startswith("keras_gradcam."):
                level, frame = level + 1, frame.f_back
            warnings.warn(f"{where}: {note}", UserWarning, stacklevel=level)
            return
        raise ValueError(
            f"{where}: {why}. Pick a layer on the path to that output, or explain another output with "
            "output=<index or name>."
        )


def _token_options(grid, prefix_tokens, reshape) -> tuple:
    """``grid=``, ``prefix_tokens=`` and ``reshape=`` checked: two positive ints, an int >= 0, a callable."""
    if grid is not None:
        if isinstance(grid, (str, bytes)) or not hasattr(grid, "__len__") or len(grid) != 2:
            raise TypeError(f"grid must be None or (rows, cols), two positive ints; got {grid!r}.")
        grid = tuple(positive_int("grid", g, expected="(rows, cols), two positive ints") for g in grid)
    if prefix_tokens is not None:
        prefix_tokens = non_negative_int("prefix_tokens", prefix_tokens)
    if reshape is not None and not callable(reshape):
        raise TypeError(
            f"reshape must be None or a callable (batch, tokens, channels) -> (batch, rows, cols, channels); "
            f"got {type(reshape).__name__}."
        )
    if reshape is not None and (grid is not None or prefix_tokens is not None):
        raise ValueError("pass either reshape= or grid=/prefix_tokens=, not both: reshape= says the whole layout.")
    return grid, prefix_tokens, reshape


class BaseCAM:
    """Base class of the explainers; see :class:`~keras_gradcam.GradCAM` for a concrete one.

    Parameters
    ----------
    model : keras.Model
        Functional, Sequential or nested model; never modified, always called with ``training=False``.
    layer : str, keras.layers.Layer or None, default=None
        The layer to explain: a name, a path through nested models (``"backbone/conv5_block3_out"``)
        or a layer object. None picks the last map with more than one position, nested models included
        (the rule is on the docs page "Layers and nested models", docs/layers.md).
    output : int or str, optional
        For a multi-output model, the output that class targets refer to.
    score : {"logit", "output"}, default="logit"
        ``"logit"`` explains the score before the output's softmax or sigmoid, when it ends in one
        (computed on the fly, the model is untouched); ``"output"`` explains the output as it is.
    counterfactual : bool, default=False
        Negate the gradients (Grad-CAM paper, counterfactual explanations): the map shows regions
        whose removal would make the model *more* confident in the target.
    batch_size : int, default=32
        Largest number of images in one forward pass.
    grid : (int, int), optional
        For a token layer ``(batch, tokens, channels)`` (a vision transformer), the patch grid
        ``(rows, cols)`` the tokens are explained on. Inferred from the graph when None (the rule
        is on the docs page "Layers and nested models"); needed where it cannot be told.
    prefix_tokens : int, optional
        Tokens before the patches (class, distillation, register tokens), dropped from the map.
        Inferred when None (with ``grid``: the tokens left over by the grid).
    reshape : callable, optional
        ``(batch, tokens, channels) -> (batch, rows, cols, channels)``, instead of ``grid`` and
        ``prefix_tokens``, for token layouts they do not describe. Applied to activations and
        gradients alike (it must be linear, e.g. a slice and a reshape). Not JSON-serialisable:
        :meth:`get_config` keeps the callable itself.
    aug_smooth : bool, default=False
        Test-time augmentation: explain each image as six copies (horizontally flipped or not,
        times a brightness factor 1.0, 0.9 or 1.1 applied to the input as given, i.e. after
        preprocessing), undo the flip on each copy's layer map, average the six maps, then resize
        and normalise. The copies are explained with the image's own targets, in one pass of
        ``6 x`` the rows (``batch_size`` still bounds the rows of a pass: ``batch_size // 6``
        images at a time). Cost: 6 times the method's passes plus one forward pass. Needs a float
        image input and a 2-D layer map. See docs/smoothing.md.
    eigen_smooth : bool, default=False
        Replace the method's weighted sum ``sum_k w_k A^k`` by the first principal component of
        the weighted activations ``w * A`` (per sample, SVD of the (positions, K)
        matrix, no centring, the sign making the entry of largest absolute value positive, as
        Eigen-CAM). The method's ReLU applies afterwards. Cost: one batched SVD.
    relu : bool, optional
        The ReLU of the combined map; None keeps the method's default (on for most methods, off
        for Eigen-CAM and Eigen-Grad-CAM). ``relu=False`` keeps the signed map:
        ``exp.layer_heatmaps`` is then the signed map at layer resolution, not normalised (for
        HiResCAM on a conv -> pooling -> linear head it sums to the score minus the bias), and
        ``exp.heatmaps`` its min-max normalised upsampled version.

    Which methods take which of these three is in each class's ``supports`` and on the docs
    page "Smoothing options"; the others refuse a non-default value with a ``ValueError``.

    Raises
    ------
    TypeError
        ``model`` is not a Keras 3 model, or an option of the wrong kind (a string for
        ``batch_size``, a non-bool ``counterfactual``).
    ValueError
        An option out of range (``batch_size=0``, an unknown ``score``), or
        ``counterfactual=True`` for a method that uses no gradients.

    Notes
    -----
    An explainer is described by :meth:`get_config` (its constructor arguments but the model, as
    JSON-serialisable values, ``config["method"]`` naming the method) and rebuilt on a model by
    :meth:`from_config`, so a config saved as JSON rebuilds the same explainer::

        config = cam.get_config()                                  # e.g. json.dump(config, file)
        same = kg.get_method(config["method"]).from_config(model, config)
    """

    name: ClassVar[str] = "base"
    display_name: ClassVar[str] = ""  # how papers write it, for titles ("Grad-CAM++")
    relu: ClassVar[bool] = True  # the method's own ReLU on the combined map
    empty_reason: ClassVar[str] = NO_EVIDENCE  # said when maps come back all zero
    gradients: ClassVar[bool] = True
    off_branch: ClassVar[str | None] = OFF_BRANCH  # why the map needs the layer to feed the output (None: it does not)
    off_branch_note: ClassVar[str | None] = None
    # which of aug_smooth, eigen_smooth, relu the method takes (eigen_smooth: its map uses `combine`)
    supports: ClassVar[frozenset] = frozenset({"aug_smooth", "relu"})
    raw_size_maps: ClassVar[bool] = True  # with a KerasHub preprocessor: maps at the raw images' size

    def __init__(
        self,
        model: keras.Model,
        layer: LayerSpec = None,
        *,
        output: int | str | None = None,
        score: str = "logit",
        counterfactual: bool = False,
        batch_size: int = 32,
        grid: tuple[int, int] | None = None,
        prefix_tokens: int | None = None,
        reshape: Callable | None = None,
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
        relu: bool | None = None,
    ):
        if not isinstance(model, keras.Model):
            raise TypeError(
                f"model must be a Keras 3 keras.Model; got {type(model).__module__}.{type(model).__name__}. "
                "tf_keras (Keras 2) models are not supported: load or rebuild the model with `import keras` (3.x)."
            )
        self.batch_size = positive_int("batch_size", batch_size, expected="a positive int")
        self.score = one_of(
            "score", score, ("logit", "output"),
            expected="'logit' (before the softmax/sigmoid) or 'output' (as the model gives it)",
        )
        self.counterfactual = boolean("counterfactual", counterfactual)
        if self.counterfactual and not self.gradients:
            raise ValueError(
                f"counterfactual=True negates gradients, but {type(self).__name__} uses no gradients; "
                "use GradCAM(..., counterfactual=True) for counterfactual explanations."
            )
        self.grid, self.prefix_tokens, self.reshape = _token_options(grid, prefix_tokens, reshape)
        self.aug_smooth, self.eigen_smooth, self.relu = check_options(type(self), self.supports, aug_smooth, eigen_smooth, relu)
        self.model = model
        self.layer_spec = layer
        self.devices: tuple[str, ...] | None = None  # set under tf.distribute: each pass split across these
        self.output = output
        self._capture: Capture | None = None
        self._fns = FunctionCache()
        self._num_classes: int | None = None
        self._call = threading.local()  # per thread: the raw images' size when a KerasHub preprocessor ran
        if model.built and getattr(model, "inputs", None):
            with TRACE_LOCK:
                self._setup()  # resolve the layer now, so a wrong name fails at construction

    # -- configuration -------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """The constructor arguments but the model, as JSON-serialisable values (Keras style).

        Returns
        -------
        dict
            ``"method"`` (the method's name in :data:`keras_gradcam.METHODS`), ``"layer"`` (a
            layer object is written as its path in the model, a list of layers as a list),
            ``"output"``, ``"score"``, ``"counterfactual"`` (left out by methods that use no
            gradients), ``"batch_size"``, ``"grid"``, ``"prefix_tokens"`` and ``"reshape"`` (token
            layers; None unless given, a ``reshape`` callable kept as it is), those of
            ``"aug_smooth"``, ``"eigen_smooth"`` and ``"relu"`` the method supports, and the
            method's own options (arrays as nested lists).
            :meth:`from_config` rebuilds the explainer from it.
        """
        config = {
            "method": self.name,
            "layer": self._layer_config(self.layer_spec),
            "output": self.output,
            "score": self.score,
            "counterfactual": self.counterfactual,
            "batch_size": self.batch_size,
        }
        config["grid"] = list(self.grid) if self.grid is not None else None  # token layers
        config["prefix_tokens"] = self.prefix_tokens
        config["reshape"] = self.reshape  # a callable is kept as it is (not JSON-serialisable)
        config.update({name: getattr(self, name) for name in OPTIONS if name in self.supports})
        if not self.gradients:
            del config["counterfactual"]
        return config

    @classmethod
    def from_config(cls, model: keras.Model, config: Mapping[str, Any]) -> BaseCAM:
        """The explainer of ``model`` that :meth:`get_config` describes.

        Parameters
        ----------
        model : keras.Model
            The model to explain (a config holds no model).
        config : dict
            What :meth:`get_config` returned (possibly through JSON).

        Returns
        -------
        BaseCAM
            An explainer with the same config, which explains as the original did.

        Raises
        ------
        ValueError
            ``config["method"]`` names another method: use
            ``kg.get_method(config["method"]).from_config(model, config)``.
        """
        options = dict(config)
        method = options.pop("method", cls.name)
        if method != cls.name:
            raise ValueError(
                f"config is for method {method!r}, not {cls.name!r} ({cls.__name__}); rebuild it with "
                "keras_gradcam.get_method(config['method']).from_config(model, config)."
            )
        return cls(model, **options)

    def _layer_config(self, spec):
        """``layer=`` as plain values: a layer object by its path (its name before the model is built)."""
        if isinstance(spec, (list, tuple)):
            return [self._layer_config(s) for s in spec]
        if not isinstance(spec, keras.Operation):
            return spec
        paths = [i.path for i in self._capture.layers if i.layer is spec] if self._capture is not None else []
        return paths[0] if paths else spec.name

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "method")
        return f"{type(self).__name__}({args})"

    # -- what methods override -----------------------------------------------------------------
    def layer_specs(self) -> list:
        """The layers this method reads (one, except LayerCAM fusion)."""
        return [self.layer_spec]

    def compute(self, acts: tf.Tensor, grads: tf.Tensor) -> tf.Tensor:
        """The method's map before its ReLU, ``(B, *spatial)``, from ``(B, *spatial, K)`` inputs."""
        raise NotImplementedError

    def combine(self, acts: tf.Tensor, weights: tf.Tensor | None = None) -> tf.Tensor:
        """``sum_k w_k A^k``, weights ``(B, K)`` or shaped like ``acts`` (None: ``acts`` is already weighted).

        With ``eigen_smooth=True`` the first principal component of ``w * A`` instead (see
        :func:`~keras_gradcam.core.postprocess.eigen_map`): methods whose map goes through here support it.
        """
        if not self.eigen_smooth:
            return tf.reduce_sum(acts, axis=-1) if weights is None else weighted_sum(acts, weights)
        if weights is not None and weights.shape.rank == 2:
            weights = tf.reshape(weights, [tf.shape(weights)[0]] + [1] * (acts.shape.rank - 2) + [-1])
        return eigen_map(acts if weights is None else acts * weights)

    def layer_map(self, x, targets, chunk: int) -> tuple[tf.Tensor, Captured]:
        """One forward/backward pass and :meth:`compute`; methods with several passes override it."""
        cap = self._capture(x, targets, gradients=self.gradients)
        grads = self.signed(cap.gradients[0]) if self.gradients else None
        return self.compute(cap.activations[0], grads), cap

    def signed(self, grads: tf.Tensor) -> tf.Tensor:
        """Gradients, negated for counterfactual explanations."""
        return -grads if self.counterfactual else grads

    # -- plumbing ------------------------------------------------------------------------------
    @property
    def layers(self) -> list[LayerInfo]:
        if self._capture is None:
            raise RuntimeError("the model is not built yet; call the explainer on a batch first.")
        return self._capture.layers

    @property
    def layer(self) -> str | tuple:
        paths = tuple(i.path for i in self.layers)
        return paths[0] if len(paths) == 1 else paths

    def _setup(self, sample=None) -> None:
        ensure_built(self.model, sample)
        tokens = {"grid": self.grid, "prefix_tokens": self.prefix_tokens, "reshape": self.reshape}
        infos = [resolve_layer(self.model, spec, **tokens) for spec in self.layer_specs()]
        capture = Capture(self.model, infos, output=self.output, score=self.score)
        if capture.output_index is not None:
            for info in infos:
                check_reaches(self.model, info, capture.output_index, self.off_branch, self.off_branch_note)
        self._capture = capture

    def _expansion(self) -> int:
        """How many model inputs one sample becomes (noise draws, path steps); 1 for plain methods."""
        return 1

    def _out_size(self, x) -> tuple:
        """Spatial size of the heatmaps: that of the image input matching the layer's rank."""
        info = self.layers[-1] if len(self.layers) == 1 else max(self.layers, key=lambda i: np.prod(i.spatial_shape))
        rank = len(info.standard_shape)  # a token layer on its grid: that of the image
        for a in flat(x):
            if a.ndim == rank:
                return tuple(a.shape[2:] if info.channels_first else a.shape[1:-1])
        for a in flat(x):
            if a.ndim == rank - 1:  # token sequences feeding an Embedding
                return tuple(a.shape[1:])
        return tuple(info.spatial_shape)

    def _rectified_map(self, x, targets, chunk: int) -> tuple[tf.Tensor, Captured]:
        """:meth:`layer_map` and the method's ReLU; with ``aug_smooth``, the average over the copies."""
        if not self.aug_smooth:
            layer_map, cap = self.layer_map(x, targets, chunk)
            return (tf.nn.relu(layer_map) if self.relu else layer_map), cap
        clean = self._capture(x, targets, gradients=False)  # the image's own targets, scores, predictions
        copies = targets if callable(targets) else tf.tile(clean.targets, [AUG_COPIES])
        layer_map, cap = self.layer_map(augment(x, self.layers[0].channels_first), copies, chunk)
        layer_map = average_copies(tf.nn.relu(layer_map) if self.relu else layer_map)
        zero = None if cap.zero_gradients is None else all_copies(cap.zero_gradients)
        return layer_map, dataclasses.replace(clean, zero_gradients=zero)

    def _explain_batch(self, x, targets, chunk: int, size: tuple):
        layer_map, cap = self._rectified_map(x, targets, chunk)
        self._num_classes = cap.num_classes  # read at trace time, before any batch runs
        heat = normalize(resize(layer_map, size))
        no = tf.zeros_like(cap.targets, tf.bool)
        zero = cap.zero_gradients if cap.zero_gradients is not None else no
        rows = cap.probability_rows if cap.probability_rows is not None else no
        return heat, layer_map, cap.targets, cap.scores, cap.predictions, zero, rows

    def _contexts(self) -> list:
        """Context managers active while a function is traced (the capture's interception)."""
        return [self._capture.active()]

    def _compiled(self, key: tuple, body, signature: list):
        """``body`` compiled once for this explainer under :meth:`_contexts`; see :func:`compile_cached`."""
        return compile_cached(self._fns, key, body, signature, self._contexts)

    def _function(self, x, targets, chunk: int, size: tuple):
        """The compiled explanation of a batch: ``(inputs, targets) -> (heatmaps, layer maps, ...)``."""
        key = (signature_key(x), targets if callable(targets) else None, chunk, self.devices)
        if callable(targets):
            body = lambda xb, tb: self._explain_batch(xb, targets, chunk, size)  # noqa: E731
        else:
            body = lambda xb, tb: self._explain_batch(xb, tb, chunk, size)  # noqa: E731
        if self.devices:  # one share of every pass per device (see core/replicas.py)
            body = split_body(self.devices, body)
        return self._compiled(key, body, [signature(x), tf.TensorSpec([None], tf.int32)])

    def __call__(self, images, targets: Targets = None, *, batch_size: int | None = None) -> Explanation:
        """Explain a batch.

        Parameters
        ----------
        images : array-like of shape (n_samples, ...), or a list/dict of them for multi-input models
            Preprocessed the way the model expects.
        targets : None, int, sequence of int or callable, default=None
            None explains each sample's top-1 class; an int the same class for all samples; a
            sequence one class per sample; a callable ``outputs -> (n_samples,)`` any differentiable
            score (a regression value, a segmentation region, one head of a multi-output model).
        batch_size : int, optional
            Overrides the explainer's ``batch_size`` for this call.

        Returns
        -------
        Explanation
        """
        x, t, n, bs = self._prepare(images, targets, batch_size)
        size = self._out_size(x)
        copies = AUG_COPIES if self.aug_smooth else 1
        if self.aug_smooth:
            check_aug_smooth(flat(x), self.layers)
        # fill a pass with as many samples as possible (each as `copies` augmented rows), then with
        # variants of each (noise draws, path points) so that one pass holds at most `bs` images
        per_batch = max(1, min(bs // copies, n))
        chunk = max(1, bs // (per_batch * copies)) if self._expansion() > 1 else 1
        fn = self._function(x, t, chunk, size)
        if not callable(t):
            check_range(t, self._num_classes)
        return self._explanation(t, *self._run_batches(fn, x, t, per_batch))

    @staticmethod
    def _run_batches(fn, x, t, per_batch: int) -> list[np.ndarray]:
        """Run a compiled ``fn(inputs, targets)`` over the samples ``per_batch`` at a time; outputs joined."""
        parts = []
        for i in range(0, len(flat(x)[0]), per_batch):
            xb = batch_slice(x, i, i + per_batch)
            tb = np.full((len(flat(xb)[0]),), -1, np.int32) if callable(t) else t[i : i + per_batch]
            with device_errors():
                parts.append([o.numpy() for o in fn(xb, tb)])
        return [np.concatenate(p) for p in zip(*parts)]

    def _explanation(
        self, t, heat, layer_maps, targets, scores, predictions, zero_gradients=None, probability_rows=None, **fields
    ) -> Explanation:
        """The :class:`Explanation` of one call from its joined per-sample arrays.

        Warns about samples whose score is not finite, about all-zero maps (naming the likely
        cause), and when probabilities were explained because the logits could not be reached.
        """
        raw = getattr(self._call, "raw_size", None)
        if raw is not None and self.raw_size_maps and tuple(heat.shape[1:]) != raw:
            heat = normalize(resize(tf.convert_to_tensor(heat), raw)).numpy()  # back to the raw images
        axes = tuple(range(1, layer_maps.ndim))
        finite = np.isfinite(scores) & np.isfinite(layer_maps).all(axis=axes)
        explain_warnings(self.name, finite, heat, zero_gradients, self.empty_reason)
        if probability_rows is not None and callable(t) is False and np.asarray(probability_rows).all():
            warnings.warn(
                f"{self.name}: the explained output looks like probabilities (non-negative rows that sum to one), "
                "but no softmax or sigmoid layer was found before it to explain the logits instead (a softmax "
                "inside a Lambda or a custom layer?). Probabilities saturate, so maps can vanish for confident "
                "samples: end the model with Dense(..., activation='softmax') or a Softmax layer, or pass "
                "score='output' to explain probabilities on purpose (this warning then stops).",
                RuntimeWarning,
                stacklevel=3,
            )
        return Explanation(
            heatmaps=heat,
            layer_heatmaps=layer_maps,
            targets=None if callable(t) else targets.astype(np.int64),
            scores=scores,
            layer=self.layer,
            method=self.name,
            predictions=None if (predictions < 0).all() else predictions.astype(np.int64),
            finite=finite,
            **fields,
        )

    def _prepare(self, images, targets, batch_size):
        """Checked inputs, resolved targets, number of samples and images per pass."""
        if batch_size is not None:
            batch_size = positive_int("batch_size", batch_size, expected="a positive int")
        images, self._call.raw_size = preprocess(self.model, images)  # a KerasHub task's preprocessor, if any
        x, n = prepare_inputs(self.model, images)
        if self._capture is None:
            with TRACE_LOCK:
                if self._capture is None:
                    self._setup(map_inputs(lambda a: a[:1], x))
        check_sample_count(targets, n, int(batch_size or self.batch_size))
        return x, resolve_targets(targets, n), n, int(batch_size or self.batch_size)
