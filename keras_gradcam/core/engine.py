"""The one pipeline every explainer runs: prepare, cut batches, run the method's passes, explain.

:class:`Explainer` is the pipeline. ``explainer(images, targets)`` runs its stages in order:

1. :meth:`Explainer.prepare` checks the images (through a KerasHub preprocessor, if any) and the
   targets (:class:`~keras_gradcam.core.targets.BoundTarget`: per-sample rows and shared data),
   and plans the batches (:meth:`Explainer.plan`): a :class:`Call`.
2. :meth:`Explainer.run` runs :meth:`Explainer.passes` on each batch, between
   :meth:`Explainer.begin` and :meth:`Explainer.finish`, and joins the per-sample outputs.
3. :meth:`Explainer.explanation` warns about empty or non-finite maps and builds the
   :class:`~keras_gradcam.core.explanation.Explanation`.

A method overrides the smallest stage that says its math. :class:`BaseCAM`, the explainers of a
layer, implements :meth:`~Explainer.passes` as one compiled function per input signature
(capture, the method's map, ReLU, resizing, normalising): a one-pass method writes
:meth:`BaseCAM.compute` (a pure function of the activations ``A`` and gradients ``g``), a method
with several passes in one graph :meth:`BaseCAM.layer_map` (calling :attr:`Explainer.capture` as
often as it needs), and a method whose passes run from Python (channel perturbation, with a
progress bar) or that returns other outputs (guided backpropagation) :meth:`~Explainer.passes`,
compiling its graph code with :meth:`Explainer.compile`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import keras
import numpy as np

from . import backend
from .cache import FUNCTIONS_KEPT, FunctionCache, compile_cached
from .call import SHARED_INPUT, Call
from .capture import TRACE_LOCK, Capture, Captured
from .device import device_errors
from .diagnostics import NO_EVIDENCE, explain_warnings, probability_warning
from .explanation import Explanation
from .graph import OFF_BRANCH, check_reaches
from .inputs import flat, heatmap_size, join_shared, map_inputs, prepare_inputs, signature, signature_key
from .kerashub import preprocess
from .layers import LayerInfo, LayerSpec, ensure_built, prompt_images_input, resolve_layer
from .postprocess import eigen_map, normalize, resize, weighted_sum
from .replicas import split_body
from .smoothing import AUG_COPIES, OPTIONS, all_copies, augment, average_copies, check_aug_smooth, check_options
from .targets import BoundTarget, CallableTarget, TargetBatch, Targets, replacement
from .tokens import token_options
from .validate import boolean, one_of, positive_int, warn_user

__all__ = ["Explainer", "BaseCAM", "Call", "OUTPUTS", "FUNCTIONS_KEPT", "FunctionCache", "compile_cached",
           "explain_warnings", "check_reaches", "OFF_BRANCH"]

OUTPUTS = ("heatmaps", "layer_heatmaps", "targets", "scores", "predictions", "zero_gradients", "probability_rows")


class Explainer:
    """The pipeline every explainer runs (see the module docstring); a layer method subclasses :class:`BaseCAM`.

    Its arguments (``model``, ``output``, ``score``, ``counterfactual``, ``batch_size``, and the
    options ``aug_smooth``, ``eigen_smooth`` and ``relu``, each refused by name by a method whose
    ``supports`` leaves it out) are those every method takes, described on :class:`BaseCAM`; an
    explainer of the input (Guided Backprop) subclasses this class and takes no layer or token
    options.
    """

    name: ClassVar[str] = "base"
    display_name: ClassVar[str] = ""  # how papers write it, for titles ("Grad-CAM++")
    empty_reason: ClassVar[str] = NO_EVIDENCE  # said when maps come back all zero
    gradients: ClassVar[bool] = True
    relu: ClassVar[bool] = True  # the method's own ReLU on the combined map
    supports: ClassVar[frozenset] = frozenset()  # which of aug_smooth, eigen_smooth, relu the method takes
    raw_size_maps: ClassVar[bool] = True  # with a KerasHub preprocessor: maps at the raw images' size

    def __init__(self, model: keras.Model, *, output: int | str | None = None, score: str = "logit",
                 counterfactual: bool = False, batch_size: int = 32, aug_smooth: bool = False,
                 eigen_smooth: bool = False, relu: bool | None = None):
        if not isinstance(model, keras.Model):
            raise TypeError(
                f"model must be a Keras 3 keras.Model; got {type(model).__module__}.{type(model).__name__}. "
                "tf_keras (Keras 2) models are not supported: load or rebuild the model with `import keras` (3.x)."
            )
        backend.check_supported(self.name, self.display_name or self.name)
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
        self.aug_smooth, self.eigen_smooth, self.relu = check_options(type(self), self.supports, aug_smooth, eigen_smooth, relu)
        self.model = model
        self.output = output
        self.devices: tuple[str, ...] | None = None  # set under tf.distribute: each pass split across these
        self._capture: Capture | None = None
        self._fns = FunctionCache()
        self._constant_keys: set = set()  # keys of callable targets that need their numbers as Python values
        self._callable_traces = 0  # functions traced for callable targets (warned about at the third)

    def _init_model(self) -> None:
        """Set up on a built model now, so that a wrong layer name fails at construction."""
        if self.model.built and getattr(self.model, "inputs", None):
            with TRACE_LOCK:
                self._setup()

    # -- configuration -------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """The constructor arguments but the model, as JSON-serialisable values (Keras style).

        Returns
        -------
        dict
            ``"method"`` (the method's name in :data:`keras_gradcam.METHODS`), ``"layer"`` (layer
            methods: a layer object is written as its path in the model, a list of layers as a
            list), ``"output"``, ``"score"``, ``"counterfactual"`` (left out by methods that use no
            gradients), ``"batch_size"``, for layer methods ``"grid"``, ``"prefix_tokens"`` and
            ``"reshape"`` (token layers; None unless given, a ``reshape`` callable kept as it is)
            and those of ``"aug_smooth"``, ``"eigen_smooth"`` and ``"relu"`` the method supports,
            and the method's own options (arrays as nested lists). :meth:`from_config` rebuilds
            the explainer from it.
        """
        config = {"method": self.name, "output": self.output, "score": self.score,
                  "counterfactual": self.counterfactual, "batch_size": self.batch_size}
        config.update({name: getattr(self, name) for name in OPTIONS if name in self.supports})
        if not self.gradients:
            del config["counterfactual"]
        return config

    @classmethod
    def from_config(cls, model: keras.Model, config: Mapping[str, Any]) -> Explainer:
        """The explainer of ``model`` that :meth:`get_config` describes.

        Parameters
        ----------
        model : keras.Model
            The model to explain (a config holds no model).
        config : dict
            What :meth:`get_config` returned (possibly through JSON).

        Returns
        -------
        Explainer
            An explainer with the same config, which explains as the original did.

        Raises
        ------
        ValueError
            ``config["method"]`` names another method: use ``kg.get_method(config["method"]).from_config``.
        """
        options = dict(config)
        method = options.pop("method", cls.name)
        if method != cls.name:
            raise ValueError(
                f"config is for method {method!r}, not {cls.name!r} ({cls.__name__}); rebuild it with "
                "keras_gradcam.get_method(config['method']).from_config(model, config)."
            )
        return cls(model, **options)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_config().items() if k != 'method')})"

    # -- set-up --------------------------------------------------------------------------------
    @property
    def capture(self) -> Capture:
        """The :class:`~keras_gradcam.core.capture.Capture` of the model: call it in graph code
        (inside :meth:`compile`'s ``body``) for a forward (and backward) pass of a batch."""
        if self._capture is None:
            raise RuntimeError("the model is not built yet; call the explainer on a batch first.")
        return self._capture

    @property
    def layer(self) -> str | tuple:
        """What the explanation is of: ``"input"`` for an input attribution (layer methods: the layer's path)."""
        return "input"

    def _setup(self, sample=None) -> None:
        """Build the model if needed and make the capture (layer methods: resolve the layers)."""
        ensure_built(self.model, sample)
        self._capture = Capture(self.model, [], output=self.output, score=self.score)

    def _contexts(self) -> list:
        """Context managers active while a function is traced (the capture's interception)."""
        return [self._capture.active()]

    def _out_size(self, x, image_input=None) -> tuple:
        """Spatial size of the heatmaps: that of the first image-like input."""
        a = flat(x)[0]
        return tuple(a.shape[1:-1]) if a.ndim >= 3 else tuple(a.shape[1:])

    # -- the stages ----------------------------------------------------------------------------
    def __call__(
        self, images, targets: Targets = None, *, batch_size: int | None = None, shared_inputs=None, image_input=None
    ) -> Explanation:
        """Explain a batch.

        Parameters
        ----------
        images : array-like of shape (n_samples, ...), or a list/dict of them for multi-input models
            Preprocessed the way the model expects.
        targets : None, int, sequence of int, target object or callable, default=None
            None explains each sample's top-1 class; an int the same class for all samples; a
            sequence one class per sample; a target object (:class:`~keras_gradcam.ClassTarget`,
            :class:`~keras_gradcam.OutputTarget`, :class:`~keras_gradcam.SegmentationTarget`,
            :class:`~keras_gradcam.BoxTarget`) or a callable ``outputs -> (n_samples,)`` any
            differentiable score (a regression value, a segmentation region, one head of a
            multi-output model). Per-image data (masks, boxes) is cut per batch like the images.
        batch_size : int, optional
            Overrides the explainer's ``batch_size`` for this call.
        shared_inputs : str, int or sequence of them, optional
            The inputs of a multi-input model given whole with every batch instead of cut into
            batches with the images (names or positions): CLIP's ``token_ids`` for ``N`` images
            scored against ``K`` texts, a prompt, a query embedding. An input whose number of rows
            is not the images' and is not named here is refused with the fix.
        image_input : str or int, optional
            Which input holds the images (the heatmaps are at its size), where it cannot be told
            (several inputs of rank 4).

        Returns
        -------
        Explanation
        """
        call = self.prepare(images, targets, batch_size, shared_inputs=shared_inputs, image_input=image_input)
        return self.explanation(call, self.run(call))

    def prepare(
        self, images, targets: Targets = None, batch_size: int | None = None, *, shared_inputs=None, image_input=None
    ) -> Call:
        """Stage 1: checked inputs and targets, the heatmaps' size and the batches (:meth:`plan`).

        The inputs named in ``shared_inputs`` are kept whole in ``call.shared_inputs``; every model
        call of the compiled functions puts them back in place (:meth:`compile`), so the methods
        batch, tile and perturb only the per-image inputs.
        """
        if batch_size is not None:
            batch_size = positive_int("batch_size", batch_size, expected="a positive int")
        given = images
        images, raw_size = preprocess(self.model, images)  # a KerasHub task's preprocessor, if any
        x, shared, n = prepare_inputs(self.model, images, shared_inputs, image_input)
        if self._capture is None:
            with TRACE_LOCK:
                if self._capture is None:
                    self._setup(join_shared(map_inputs(lambda a: a[:1], x), shared))
        t = BoundTarget.of(targets, n)
        t.target.check(n, self._capture)
        call = Call(given, x, t, n, int(batch_size or self.batch_size), self._out_size(x, image_input), raw_size,
                    shared_inputs=shared)
        self.plan(call)
        return call

    def plan(self, call: Call) -> None:
        """Set ``call.per_batch`` (samples per batch) and ``call.chunk`` (variants per pass): ``batch_size`` samples."""
        call.per_batch, call.chunk = max(1, min(call.batch_size, call.n)), 1

    def run(self, call: Call) -> dict[str, np.ndarray]:
        """Stage 2: :meth:`passes` over the batches, between :meth:`begin` and :meth:`finish`; outputs joined."""
        self.begin(call)
        with device_errors():  # every method's passes: device errors and a target's failed checks said for people
            parts = [self.passes(call, i, min(i + call.per_batch, call.n)) for i in range(0, call.n, call.per_batch)]
        self.finish(call)
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def begin(self, call: Call) -> None:
        """Called before the first batch of a call (per-call state, a progress bar)."""

    def finish(self, call: Call) -> None:
        """Called after the last batch of a call (warnings collected over the batches)."""

    def passes(self, call: Call, start: int, stop: int) -> dict[str, np.ndarray]:
        """The method's passes on samples ``start:stop``: per-sample arrays by name.

        ``"heatmaps"``, ``"layer_heatmaps"``, ``"targets"``, ``"scores"``, ``"predictions"`` and,
        if the method has them, ``"zero_gradients"``, ``"probability_rows"``, ``"attributions"``;
        any other name goes to ``Explanation.extras``. Graph code is compiled with :meth:`compile`.
        """
        raise NotImplementedError

    def explanation(self, call: Call, out: dict[str, np.ndarray]) -> Explanation:
        """Stage 3: the :class:`Explanation` of a call from its joined outputs.

        Warns about samples whose score is not finite, about all-zero maps (naming the likely
        cause), and when probabilities were explained because the logits could not be reached.
        """
        out = dict(out)
        heat, layer_maps, targets, scores, predictions = (out.pop(k) for k in OUTPUTS[:5])
        zero, rows = out.pop("zero_gradients", None), out.pop("probability_rows", None)
        attributions = out.pop("attributions", None)
        if call.raw_size is not None and self.raw_size_maps and tuple(heat.shape[1:]) != call.raw_size:
            heat = keras.ops.convert_to_numpy(normalize(resize(keras.ops.convert_to_tensor(heat), call.raw_size)))
        axes = tuple(range(1, layer_maps.ndim))
        finite = np.isfinite(scores) & np.isfinite(layer_maps).all(axis=axes)
        explain_warnings(self.name, finite, heat, zero, self.empty_reason)
        if call.target.names_classes:
            probability_warning(self.name, rows)
        return Explanation(
            heatmaps=heat,
            layer_heatmaps=layer_maps,
            targets=targets.astype(np.int64) if call.target.names_classes else None,
            scores=scores,
            layer=self.layer,
            method=self.name,
            predictions=None if (predictions < 0).all() else predictions.astype(np.int64),
            attributions=attributions,
            extras=out,
            finite=finite,
        )

    # -- compiling -----------------------------------------------------------------------------
    def compile(self, call: Call, key: tuple, body: Callable, extra: list = ()) -> Callable:
        """``body(*args, targets)`` compiled once for this explainer, the call's inputs and target.

        The function returned takes the batch's inputs, the arguments ``extra`` describes (specs
        of other tensors), then ``*call.data(start, stop)`` (the target's rows and shared data);
        ``body`` receives the inputs, those arguments and a
        :class:`~keras_gradcam.core.targets.TargetBatch`. ``key`` names the body (with its static
        options). A callable target whose captured numbers cannot be traced as data is traced again
        with them as Python values (``call.target`` then holds no shared data); the third new
        function traced for callable targets warns with what to pass instead.
        """
        t = call.target
        target = t.target
        if isinstance(target, CallableTarget) and target.as_data and target.key in self._constant_keys:
            call.target = t.constants()
            return self.compile(call, key, body, extra)

        names = {SHARED_INPUT + str(k): k for k in call.shared_inputs}

        def with_target(*args):
            *rest, rows, shared = args
            inputs = {names[k]: v for k, v in shared.items() if k in names}
            shared = {k: v for k, v in shared.items() if k not in names}
            with self._capture.sharing(lambda batch: join_shared(batch, inputs) if inputs else batch):
                return body(*rest, TargetBatch(t.target, rows, shared))

        def specs():
            rows, shared = t.specs()
            for k, v in call.shared_inputs.items():
                shared[SHARED_INPUT + str(k)] = keras.KerasTensor(v.shape, v.dtype.name)
            return [signature(call.inputs), *extra, rows, shared]

        before = self._fns.traced
        inputs_key = tuple((str(k), v.shape, v.dtype.str) for k, v in call.shared_inputs.items())
        full_key = (signature_key(call.inputs), inputs_key, *key, *t.key)
        try:
            fn = compile_cached(self._fns, full_key, with_target, specs, self._contexts)
        except Exception:
            if not (isinstance(target, CallableTarget) and target.as_data and t.shared):
                raise
            self._constant_keys.add(target.key)  # needs its numbers as Python values: trace by value
            call.target = t.constants()
            return self.compile(call, key, body, extra)
        if self._fns.traced > before and isinstance(target, CallableTarget):
            self._callable_traces += 1
            if self._callable_traces == 3:
                warn_user(
                    f"{self.name}: a callable target made this explainer trace a new function for the third time "
                    f"({target.describe()}; each trace costs far more than an explanation, and memory). A lambda is "
                    "traced once per code when the values it captures are int, float or bool (e.g. "
                    "lambda out, k=k: out[:, k]) and used as tensors; this one is new code or needs Python values. "
                    f"Pass {replacement(target)} instead.",
                    RuntimeWarning,
                )
        return fn

    @staticmethod
    def outputs(fn, *args) -> list[np.ndarray]:
        """A compiled function's outputs as arrays (inside :meth:`run`, which says device errors for people)."""
        return [keras.ops.convert_to_numpy(o) for o in fn(*args)]


class BaseCAM(Explainer):
    """Base class of the explainers of a layer; see :class:`~keras_gradcam.GradCAM` for a concrete one.

    The pipeline is :class:`Explainer`'s; this class adds the layer (and its token layout), the
    smoothing options, and :meth:`passes` as one compiled function per input signature.

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

    off_branch: ClassVar[str | None] = OFF_BRANCH  # why the map needs the layer to feed the output (None: it does not)
    off_branch_note: ClassVar[str | None] = None
    # which of aug_smooth, eigen_smooth, relu the method takes (eigen_smooth: its map uses `combine`)
    supports: ClassVar[frozenset] = frozenset({"aug_smooth", "relu"})

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
        super().__init__(model, output=output, score=score, counterfactual=counterfactual, batch_size=batch_size,
                         aug_smooth=aug_smooth, eigen_smooth=eigen_smooth, relu=relu)
        self.grid, self.prefix_tokens, self.reshape = token_options(grid, prefix_tokens, reshape)
        self.layer_spec = layer
        self._init_model()

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        options = {name: config.pop(name) for name in OPTIONS if name in config}  # written last
        config = {"method": config.pop("method"), "layer": self._layer_config(self.layer_spec), **config}
        config["grid"] = list(self.grid) if self.grid is not None else None  # token layers
        config["prefix_tokens"] = self.prefix_tokens
        config["reshape"] = self.reshape  # a callable is kept as it is (not JSON-serialisable)
        return {**config, **options}

    def _layer_config(self, spec):
        """``layer=`` as plain values: a layer object by its path (its name before the model is built)."""
        if isinstance(spec, (list, tuple)):
            return [self._layer_config(s) for s in spec]
        if not isinstance(spec, keras.Operation):
            return spec
        paths = [i.path for i in self._capture.layers if i.layer is spec] if self._capture is not None else []
        return paths[0] if paths else spec.name

    # -- what methods override -----------------------------------------------------------------
    def layer_specs(self) -> list:
        """The layers this method reads (one, except LayerCAM fusion)."""
        return [self.layer_spec]

    def compute(self, acts: backend.Tensor, grads: backend.Tensor) -> backend.Tensor:
        """The method's map before its ReLU, ``(B, *spatial)``, from ``(B, *spatial, K)`` inputs."""
        raise NotImplementedError

    def combine(self, acts: backend.Tensor, weights: backend.Tensor | None = None) -> backend.Tensor:
        """``sum_k w_k A^k``, weights ``(B, K)`` or shaped like ``acts`` (None: ``acts`` is already weighted).

        With ``eigen_smooth=True`` the first principal component of ``w * A`` instead (see
        :func:`~keras_gradcam.core.postprocess.eigen_map`): methods whose map goes through here support it.
        """
        if not self.eigen_smooth:
            return keras.ops.sum(acts, axis=-1) if weights is None else weighted_sum(acts, weights)
        if weights is not None and len(weights.shape) == 2:
            weights = keras.ops.reshape(weights, (-1,) + (1,) * (len(acts.shape) - 2) + (weights.shape[-1],))
        return eigen_map(acts if weights is None else acts * weights)

    def layer_map(self, x, targets, chunk: int) -> tuple[backend.Tensor, Captured]:
        """One forward/backward pass and :meth:`compute`; methods with several passes override it."""
        cap = self._capture(x, targets, gradients=self.gradients)
        grads = self.signed(cap.gradients[0]) if self.gradients else None
        return self.compute(cap.activations[0], grads), cap

    def signed(self, grads: backend.Tensor) -> backend.Tensor:
        """Gradients, negated for counterfactual explanations."""
        return -grads if self.counterfactual else grads

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

    def _out_size(self, x, image_input=None) -> tuple:
        """Spatial size of the heatmaps: that of the image input matching the layer's rank (:func:`heatmap_size`)."""
        info = self.layers[-1] if len(self.layers) == 1 else max(self.layers, key=lambda i: np.prod(i.spatial_shape))
        size = heatmap_size(x, len(info.standard_shape), info.channels_first, image_input, prompt_images_input(self.model))
        return size or tuple(info.spatial_shape)

    def _rectified_map(self, x, targets, chunk: int) -> tuple[backend.Tensor, Captured]:
        """:meth:`layer_map` and the method's ReLU; with ``aug_smooth``, the average over the copies."""
        if not self.aug_smooth:
            layer_map, cap = self.layer_map(x, targets, chunk)
            return (keras.ops.relu(layer_map) if self.relu else layer_map), cap
        clean = self._capture(x, targets, gradients=False)  # the image's own targets, scores, predictions
        copies = targets.with_classes(clean.targets).tile(AUG_COPIES)
        layer_map, cap = self.layer_map(augment(x, self.layers[0].channels_first), copies, chunk)
        layer_map = average_copies(keras.ops.relu(layer_map) if self.relu else layer_map)
        zero = None if cap.zero_gradients is None else all_copies(cap.zero_gradients)
        return layer_map, dataclasses.replace(clean, zero_gradients=zero)

    def explain_batch(self, x, targets, chunk: int, size: tuple):
        """Graph code: the outputs of one batch (see :data:`OUTPUTS`) from :meth:`layer_map`."""
        layer_map, cap = self._rectified_map(x, targets, chunk)
        heat = normalize(resize(layer_map, size))
        no = keras.ops.zeros_like(cap.targets, "bool")
        zero = cap.zero_gradients if cap.zero_gradients is not None else no
        rows = cap.probability_rows if cap.probability_rows is not None else no
        return heat, layer_map, cap.targets, cap.scores, cap.predictions, zero, rows

    def plan(self, call: Call) -> None:
        """Fill a pass with as many samples as fit (each as six augmented rows with ``aug_smooth``),
        then with variants of each (noise draws, path points): at most ``batch_size`` images per pass."""
        copies = AUG_COPIES if self.aug_smooth else 1
        if self.aug_smooth:
            check_aug_smooth(flat(call.inputs), self.layers)
        call.per_batch = max(1, min(call.batch_size // copies, call.n))
        call.chunk = max(1, call.batch_size // (call.per_batch * copies)) if self._expansion() > 1 else 1

    def passes(self, call: Call, start: int, stop: int) -> dict[str, np.ndarray]:
        """One compiled function (:meth:`explain_batch`) per input signature, run on the batch."""
        fn = call.state.get("explain")
        if fn is None:
            chunk, size = call.chunk, call.size

            def body(xb, targets):
                return self.explain_batch(xb, targets, chunk, size)

            if self.devices:  # one share of every pass per device (see core/replicas.py)
                body = split_body(self.devices, body)
            fn = call.state["explain"] = self.compile(call, ("explain", chunk, self.devices), body)
        return dict(zip(OUTPUTS, self.outputs(fn, call.batch(start, stop), *call.data(start, stop))))
