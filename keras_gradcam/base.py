"""Shared plumbing of every explainer: inputs, batching, compiling, post-processing.

A method subclasses :class:`BaseCAM` and writes its math in :meth:`BaseCAM.compute`, a pure
function of the activations ``A`` and gradients ``g`` of one batch (METHODS.md section 2). The
base class runs :class:`~keras_gradcam.capture.Capture`, applies the method's ReLU, resizes the
map to the input resolution and min-max normalises it, all inside one ``tf.function`` traced
once per input signature and reused across calls.
"""

from __future__ import annotations

from typing import Any, ClassVar

import keras
import numpy as np
import tensorflow as tf

from .capture import Capture, Captured
from .explanation import Explanation
from .layers import LayerInfo, ensure_built, resolve_layer
from .postprocess import normalize, resize
from .targets import Targets, check_range, resolve_targets

__all__ = ["BaseCAM"]


def _as_inputs(images):
    """Images (array, tensor, list or dict of them) as a structure of float numpy arrays."""

    def convert(a):
        a = a.numpy() if tf.is_tensor(a) else np.asarray(a)
        if a.dtype.kind in "iub":
            return a.astype(np.float32)
        if a.dtype.kind != "f":
            raise TypeError(f"images must be numeric arrays; got dtype {a.dtype}.")
        return a.astype(np.float32) if a.dtype == np.float64 else a

    if isinstance(images, dict):
        return {k: convert(v) for k, v in images.items()}
    if isinstance(images, (list, tuple)):
        return [convert(v) for v in images]
    return convert(images)


def _flat(x) -> list[np.ndarray]:
    return list(x.values()) if isinstance(x, dict) else list(x) if isinstance(x, list) else [x]


def _map(fn, x):
    if isinstance(x, dict):
        return {k: fn(v) for k, v in x.items()}
    if isinstance(x, list):
        return [fn(v) for v in x]
    return fn(x)


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
        self._fns: dict = {}
        self._num_classes: int | None = None
        if model.built and getattr(model, "inputs", None):
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
        self._capture = Capture(self.model, infos, output=self.output, score=self.score)

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
        return heat, layer_map, cap.targets, cap.scores, cap.predictions

    def _function(self, x, targets, chunk: int, size: tuple):
        specs = _map(lambda a: tf.TensorSpec((None,) + a.shape[1:], tf.as_dtype(a.dtype)), x)
        spec_key = tuple((tuple(s.shape.as_list()[1:]), s.dtype.name) for s in _flat(specs))
        key = (spec_key, targets if callable(targets) else None, chunk)
        fn = self._fns.get(key)
        if fn is None:
            if callable(targets):
                body = lambda xb, tb: self._explain_batch(xb, targets, chunk, size)  # noqa: E731
            else:
                body = lambda xb, tb: self._explain_batch(xb, tb, chunk, size)  # noqa: E731
            fn = tf.function(body, input_signature=[specs, tf.TensorSpec([None], tf.int32)])
            with self._capture.active():
                fn.get_concrete_function()
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
            parts.append([o.numpy() for o in fn(xb, tb)])
        return [np.concatenate(p) for p in zip(*parts)]

    def _explanation(self, t, heat, layer_maps, targets, scores, predictions, **fields) -> Explanation:
        """The :class:`Explanation` of one call from its joined per-sample arrays."""
        return Explanation(
            heatmaps=heat,
            layer_heatmaps=layer_maps,
            targets=None if callable(t) else targets.astype(np.int64),
            scores=scores,
            layer=self.layer,
            method=self.name,
            predictions=None if (predictions < 0).all() else predictions.astype(np.int64),
            **fields,
        )

    def _prepare(self, images, targets, batch_size):
        """Checked inputs, resolved targets, number of samples and images per pass."""
        if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive int; got {batch_size!r}.")
        x = self._ordered(_as_inputs(images))
        arrays = _flat(x)
        n = arrays[0].shape[0] if arrays and arrays[0].ndim else 0
        self._check_inputs(arrays, n)
        if self._capture is None:
            self._setup(_map(lambda a: a[:1], x))
        return x, resolve_targets(targets, n), n, int(batch_size or self.batch_size)

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
        spec = getattr(self.model, "input", None) if getattr(self.model, "built", False) else None
        expected = [tuple(t.shape) for t in (list(spec.values()) if isinstance(spec, dict) else getattr(self.model, "inputs", None) or [])]
        for a, shape in zip(arrays, expected):
            if len(shape) == a.ndim + 1:
                raise ValueError(
                    f"images has shape {a.shape} but the model expects a batch of shape {shape}; "
                    "add a batch axis, e.g. images[None] for a single image."
                )
            if len(shape) != a.ndim or any(s is not None and s != d for s, d in zip(shape[1:], a.shape[1:])):
                raise ValueError(f"images has shape {a.shape} but the model expects {shape}.")
