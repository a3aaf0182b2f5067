"""Shared plumbing of every explainer: inputs, batching, compiling, post-processing.

A method subclasses :class:`BaseCAM` and writes its math in :meth:`BaseCAM.compute`, a pure
function of the activations ``A`` and gradients ``g`` of one batch (see docs/methods/). The
base class runs :class:`~keras_gradcam.capture.Capture`, applies the method's ReLU, resizes the
map to the input resolution and min-max normalises it, all inside one ``tf.function`` traced
once per input signature and reused across calls.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import Any, ClassVar

import keras
import numpy as np
import tensorflow as tf

from .capture import TRACE_LOCK, Capture, Captured
from .explanation import Explanation
from .graph import reaches_output
from .layers import LayerInfo, ensure_built, resolve_layer
from .postprocess import normalize, resize
from .targets import Targets, check_range, resolve_targets

__all__ = ["BaseCAM", "FunctionCache"]

FUNCTIONS_KEPT = 16  # compiled functions an explainer keeps (least recently used dropped)


class FunctionCache(OrderedDict):
    """The compiled functions of one explainer, at most ``maxsize``, least recently used dropped.

    Keys are the input signature and, for callable targets, the callable itself: a new ``lambda``
    on every call traces a new function, so without a bound a loop over lambdas would keep every
    graph alive. Pass a reusable target instead (an int, a sequence of ints, or one target object
    such as :class:`~keras_gradcam.targets.ClassTarget` whose equality lets equal targets share a
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


MAX_DATASET_SAMPLES = 10_000  # samples a tf.data.Dataset given to an explainer is read into memory up to


def _as_inputs(images):
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
        images = _read_dataset(images)
    if isinstance(images, dict):
        return {k: convert(v) for k, v in images.items()}
    if isinstance(images, (list, tuple)):
        return [convert(v) for v in images]
    return convert(images)


def _read_dataset(data: tf.data.Dataset):
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


def _flat(x) -> list[np.ndarray]:
    return list(x.values()) if isinstance(x, dict) else list(x) if isinstance(x, list) else [x]


def _map(fn, x):
    if isinstance(x, dict):
        return {k: fn(v) for k, v in x.items()}
    if isinstance(x, list):
        return [fn(v) for v in x]
    return fn(x)


class DeviceError(RuntimeError):
    """The model cannot run on this device (an operation this TensorFlow build has no kernel for)."""


class device_errors:  # noqa: N801 - used as a context manager, like contextlib's
    """Turn TensorFlow's "no kernel on this device" errors into a :class:`DeviceError` that says why.

    The common case: ``channels_first`` convolutions on a CPU, which TensorFlow runs only through
    its oneDNN kernels (on by default on some processors only).
    """

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if not isinstance(error, (tf.errors.UnimplementedError, tf.errors.InvalidArgumentError)):
            return False
        text = str(error)
        if "NHWC" in text or "NDHWC" in text or isinstance(error, tf.errors.UnimplementedError):
            first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
            hint = (
                " The model uses channels_first convolutions, which TensorFlow runs on a CPU only "
                "through its oneDNN kernels: set TF_ENABLE_ONEDNN_OPTS=1 before importing TensorFlow, "
                "run on a GPU, or build the model with data_format='channels_last'."
                if ("NHWC" in text or "NDHWC" in text)
                else ""
            )
            raise DeviceError(f"the model cannot run on this device: {first[:300]}.{hint}") from None
        return False


NO_EVIDENCE = (
    "the layer shows no positive evidence for the explained target (the weighted sum is <= 0 everywhere, "
    "or the layer's activations are zero). Try counterfactual=True for negative evidence, another target, "
    "or another layer."
)


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
    flat = heat.reshape(len(heat), -1)
    empty = finite & (flat.max(axis=1, initial=0.0) <= 0)
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


def check_reaches(model: keras.Model, info: LayerInfo, output_index: int) -> None:
    """Raise ``ValueError`` if the explained output does not depend on the layer (its map would be zero)."""
    chain, current = [], model
    try:
        for name in info.path.split("/")[:-1]:
            current = current.get_layer(name)
            chain.append(current)
    except (ValueError, AttributeError):
        return
    if reaches_output(model, chain + [info.layer], output_index) is False:
        names = list(getattr(model, "output_names", None) or [])
        out = names[output_index] if output_index < len(names) else output_index
        raise ValueError(
            f"layer {info.path!r} does not feed the explained output {out!r} of model {model.name!r} (it lies on "
            "another branch), so every gradient-based map would be zero. Pick a layer on the path to that output, "
            "or explain another output with output=<index or name>."
        )


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
    """

    name: ClassVar[str] = "base"
    display_name: ClassVar[str] = ""  # how papers write it, for titles ("Grad-CAM++")
    relu: ClassVar[bool] = True  # the method's own ReLU on the combined map
    empty_reason: ClassVar[str] = NO_EVIDENCE  # said when maps come back all zero
    gradients: ClassVar[bool] = True

    def __init__(
        self,
        model: keras.Model,
        layer=None,
        *,
        output: int | str | None = None,
        score: str = "logit",
        counterfactual: bool = False,
        batch_size: int = 32,
    ):
        if not isinstance(model, keras.Model):
            raise TypeError(
                f"model must be a Keras 3 keras.Model; got {type(model).__module__}.{type(model).__name__}. "
                "tf_keras (Keras 2) models are not supported: load or rebuild the model with `import keras` (3.x)."
            )
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int; got {batch_size!r}.")
        if score not in ("logit", "output"):
            raise ValueError(f"score must be 'logit' (before the softmax/sigmoid) or 'output' (as the model gives it); got {score!r}.")
        self.model = model
        self.layer_spec = layer
        self.output = output
        self.score = score
        self.counterfactual = bool(counterfactual)
        self.batch_size = int(batch_size)
        self._capture: Capture | None = None
        self._fns = FunctionCache()
        self._num_classes: int | None = None
        if model.built and getattr(model, "inputs", None):
            with TRACE_LOCK:
                self._setup()  # resolve the layer now, so a wrong name fails at construction

    # -- configuration -------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """Constructor arguments (without the model), Keras style."""
        layer = self.layer_spec.name if isinstance(self.layer_spec, keras.Operation) else self.layer_spec
        return {
            "method": self.name,
            "layer": layer,
            "output": self.output,
            "score": self.score,
            "counterfactual": self.counterfactual,
            "batch_size": self.batch_size,
        }

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

    def layer_map(self, x, targets, chunk: int) -> tuple[tf.Tensor, Captured]:
        """One forward/backward pass and :meth:`compute`; methods with several passes override it."""
        cap = self._capture(x, targets, gradients=self.gradients)
        grads = self.signed(cap.gradients[0]) if self.gradients else None
        return self.compute(cap.activations[0], grads), cap

    def signed(self, grads: tf.Tensor) -> tf.Tensor:
        """Gradients, negated for counterfactual explanations."""
        return -grads if self.counterfactual else grads

    def repeated_passes(self, count: int, chunk: int, variants, targets, fold, init):
        """Run the capture on ``count`` variants of every sample, ``chunk`` variants per pass.

        Graph code for methods that expand each sample (noise draws, path points). The variants
        of a pass are laid out variant-major: row ``j * B + b`` is variant ``j`` of sample ``b``.

        Parameters
        ----------
        count, chunk : int
            Number of variants, and how many go through the model together.
        variants : callable ``idx (k,) int32 -> inputs of k * B samples``
        targets : (B,) int32 tensor, or a callable target
        fold : callable ``(acc, idx, Captured) -> acc``
        init : nested tensors, the initial accumulator
        """

        def body(start, acc):
            idx = tf.range(start, tf.minimum(start + chunk, count))
            tk = targets if callable(targets) else tf.tile(targets, [tf.shape(idx)[0]])
            return start + chunk, fold(acc, idx, self._capture(variants(idx), tk, gradients=self.gradients))

        _, acc = tf.while_loop(lambda start, acc: start < count, body, (tf.constant(0), init))
        return acc

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
        infos = [resolve_layer(self.model, spec) for spec in self.layer_specs()]
        capture = Capture(self.model, infos, output=self.output, score=self.score)
        if capture.output_index is not None:
            for info in infos:
                check_reaches(self.model, info, capture.output_index)
        self._capture = capture

    def _expansion(self) -> int:
        """How many model inputs one sample becomes (noise draws, path steps); 1 for plain methods."""
        return 1

    def _out_size(self, x) -> tuple:
        """Spatial size of the heatmaps: that of the image input matching the layer's rank."""
        info = self.layers[-1] if len(self.layers) == 1 else max(self.layers, key=lambda i: np.prod(i.shape[1:-1]))
        rank = len(info.shape)
        for a in _flat(x):
            if a.ndim == rank:
                return tuple(a.shape[2:] if info.channels_first else a.shape[1:-1])
        for a in _flat(x):
            if a.ndim == rank - 1:  # token sequences feeding an Embedding
                return tuple(a.shape[1:])
        dims = info.shape[2:] if info.channels_first else info.shape[1:-1]
        return tuple(dims)

    def _explain_batch(self, x, targets, chunk: int, size: tuple):
        layer_map, cap = self.layer_map(x, targets, chunk)
        self._num_classes = cap.num_classes  # read at trace time, before any batch runs
        if self.relu:
            layer_map = tf.nn.relu(layer_map)
        heat = normalize(resize(layer_map, size))
        no = tf.zeros_like(cap.targets, tf.bool)
        zero = cap.zero_gradients if cap.zero_gradients is not None else no
        rows = cap.probability_rows if cap.probability_rows is not None else no
        return heat, layer_map, cap.targets, cap.scores, cap.predictions, zero, rows

    def _function(self, x, targets, chunk: int, size: tuple):
        specs = _map(lambda a: tf.TensorSpec((None,) + a.shape[1:], tf.as_dtype(a.dtype)), x)
        spec_key = tuple((tuple(s.shape.as_list()[1:]), s.dtype.name) for s in _flat(specs))
        key = (spec_key, targets if callable(targets) else None, chunk)
        with TRACE_LOCK:  # two threads' first calls trace once, one after the other
            fn = self._fns.get(key)
            if fn is None:
                if callable(targets):
                    body = lambda xb, tb: self._explain_batch(xb, targets, chunk, size)  # noqa: E731
                else:
                    body = lambda xb, tb: self._explain_batch(xb, tb, chunk, size)  # noqa: E731
                # autograph off: our graph code has no Python control flow on tensors, and an error
                # raised while tracing (a mistake in the inputs or the target) reaches the user as
                # it was raised, not inside TensorFlow's "in user code" trace
                fn = tf.function(body, input_signature=[specs, tf.TensorSpec([None], tf.int32)], autograph=False)
                with self._capture.active():
                    fn.get_concrete_function()  # traced now; the fixed signature never retraces
                self._fns[key] = fn
        return fn

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
        # fill a pass with as many samples as possible, then with variants of each (noise draws,
        # path points) so that one pass holds at most `bs` images
        per_batch = min(bs, n)
        chunk = max(1, bs // per_batch) if self._expansion() > 1 else 1
        fn = self._function(x, t, chunk, size)
        if not callable(t):
            check_range(t, self._num_classes)
        return self._explanation(t, *self._run_batches(fn, x, t, per_batch))

    @staticmethod
    def _run_batches(fn, x, t, per_batch: int) -> list[np.ndarray]:
        """Run a compiled ``fn(inputs, targets)`` over the samples ``per_batch`` at a time; outputs joined."""
        parts = []
        for i in range(0, len(_flat(x)[0]), per_batch):
            xb = _map(lambda a: a[i : i + per_batch], x)
            tb = np.full((len(_flat(xb)[0]),), -1, np.int32) if callable(t) else t[i : i + per_batch]
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
        if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive int; got {batch_size!r}.")
        x = self._ordered(self._single_input_list(_as_inputs(images)))
        arrays = _flat(x)
        n = arrays[0].shape[0] if arrays and arrays[0].ndim else 0
        self._check_inputs(arrays, n)
        x = self._input_dtypes(x)
        if self._capture is None:
            with TRACE_LOCK:
                if self._capture is None:
                    self._setup(_map(lambda a: a[:1], x))
        return x, resolve_targets(targets, n), n, int(batch_size or self.batch_size)

    def _input_dtypes(self, x):
        """Integer arrays as the model input's integer dtype (token ids), everything else float.

        Where the model's inputs are not known yet (an unbuilt Sequential), integer arrays become
        float32, as Keras would cast them for a float input.
        """
        inputs = self._model_inputs()
        flat = _flat(x)
        wanted = [keras.backend.standardize_dtype(t.dtype) for t in inputs] if len(inputs) == len(flat) else [None] * len(flat)
        cast = []
        for a, dtype in zip(flat, wanted):
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

    def _model_inputs(self) -> list:
        """The model's symbolic inputs, in the order it takes them ([] when unknown)."""
        spec = getattr(self.model, "input", None) if getattr(self.model, "built", False) else None
        if isinstance(spec, dict):
            return list(spec.values())
        try:
            return list(getattr(self.model, "inputs", None) or [])
        except (AttributeError, ValueError):
            return []

    def _single_input_list(self, x):
        """A list of single images for a single-input model, stacked into one batch.

        A list holding one batch (``[images]``) is kept as it is.
        """
        inputs = self._model_inputs()
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

    def _ordered(self, x):
        """Dict inputs in the order of the model's input dict (Keras matches them by key)."""
        spec = getattr(self.model, "input", None) if getattr(self.model, "built", False) else None
        if not (isinstance(x, dict) and isinstance(spec, dict)):
            return x
        missing = [k for k in spec if k not in x]
        if missing:
            raise ValueError(f"images is missing the model inputs {missing}; the model takes {list(spec)}, got {list(x)}.")
        return {k: x[k] for k in spec}

    def _check_inputs(self, arrays: list[np.ndarray], n: int) -> None:
        if not arrays or n == 0:
            raise ValueError("images is empty; pass a batch of shape (n_samples, ...) with n_samples >= 1.")
        for a in arrays:
            if a.shape[0] != n:
                raise ValueError(f"all inputs need the same number of samples; got {[b.shape[0] for b in arrays]}.")
            if not np.isfinite(a).all():
                raise ValueError("images contain NaN or inf values; clean or preprocess them first.")
        inputs = self._model_inputs()
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
