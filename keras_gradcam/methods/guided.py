"""Guided Backpropagation (Springenberg et al. 2015) and Guided Grad-CAM / Grad-CAM++ (Selvaraju et al.).

Guided backpropagation needs different gradients at every ReLU. The explainers get them the way
:class:`~keras_gradcam.capture.Capture` intercepts layers: while their compiled function is
traced, the user's model's ReLUs are swapped for :func:`guided_relu` and put back in a
``finally`` block. The compiled function therefore runs the user's model itself and reads its
live weights (no copy to keep in sync after ``set_weights`` or training); outside tracing the
model is never touched. :func:`guided_clone` makes a separate guided copy, for use on its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ..base import BaseCAM
from ..capture import Capture
from ..explanation import Explanation
from ..layers import ensure_built
from ..postprocess import normalize
from ..targets import check_range, class_scores
from .gradcam import GradCAM
from .gradcam_plusplus import GradCAMPlusPlus
from .inputs import refuse_token_inputs
from .scorecam import _Driven, _spec_key, _specs

__all__ = ["GuidedBackprop", "GuidedGradCAM", "GuidedGradCAMPlusPlus", "guided_relu", "guided_clone"]

NON_RELU = ("raise", "keep")

# ReLU-like activations for which the guided rule is not defined (normalised names: lower case, no "_")
_RECTIFIERS = frozenset(
    "relu6 leakyrelu prelu elu selu celu gelu silu swish hardsilu hardswish mish softplus glu "
    "sparseplus squareplus thresholdedrelu".split()
)


@tf.custom_gradient
def guided_relu(x):
    r"""ReLU whose backward pass follows the guided-backpropagation rule.

    Parameters
    ----------
    x : tf.Tensor
        Pre-activation.

    Returns
    -------
    tf.Tensor
        ``max(x, 0)``; the gradient passed back for an incoming gradient ``dy`` is
        ``dy * 1[x > 0] * 1[dy > 0]``.

    Notes
    -----
    .. math:: R_{in} = R_{out} \cdot \mathbb{1}[x > 0] \cdot \mathbb{1}[R_{out} > 0]

    Plain backpropagation keeps only the first gate, the "deconvnet" only the second.

    References
    ----------
    J. T. Springenberg et al., "Striving for Simplicity: The All Convolutional Net", ICLR
    workshop 2015.

    Examples
    --------
    >>> x = tf.constant([-1.0, 2.0, 3.0])                            # doctest: +SKIP
    >>> with tf.GradientTape() as tape:                               # doctest: +SKIP
    ...     tape.watch(x)
    ...     y = tf.reduce_sum(guided_relu(x) * [1.0, 1.0, -1.0])
    >>> tape.gradient(y, x).numpy()                                   # doctest: +SKIP
    array([0., 1., 0.], dtype=float32)
    """

    def grad(dy):
        return dy * tf.cast(x > 0, dy.dtype) * tf.cast(dy > 0, dy.dtype)

    return tf.nn.relu(x), grad


def _guided_call(inputs, *args, **kwargs):
    return guided_relu(inputs)


def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def _relu_kind(obj) -> tuple[str, str] | None:
    """``("relu", how)`` for a plain ReLU, ``("other", what)`` for another rectifier, else None.

    ``how`` is ``"activation"`` (an ``activation`` attribute read at call time) or ``"call"`` (a
    ``keras.layers.ReLU`` layer or a ``keras.ops.relu`` node of a Functional graph).
    """
    cls = _norm(type(obj).__name__)
    if isinstance(obj, keras.layers.ReLU):
        plain = obj.max_value is None and float(obj.negative_slope) == 0.0 and float(obj.threshold) == 0.0
        return ("relu", "call") if plain else ("other", "ReLU(max_value/negative_slope/threshold)")
    if not isinstance(obj, keras.layers.Layer) and cls == "relu":  # keras.ops.relu in a Functional graph
        return ("relu", "call")
    if cls in _RECTIFIERS:
        return ("other", type(obj).__name__)
    if isinstance(getattr(type(obj), "activation", None), property):
        return None  # e.g. LSTM: the activation belongs to its cell, which is walked too
    act = getattr(obj, "activation", None)
    if callable(act) and act is not guided_relu:
        name = _norm(getattr(act, "__name__", ""))
        if name == "relu":
            return ("relu", "activation")
        if name in _RECTIFIERS:
            return ("other", f"activation={getattr(act, '__name__', '?')}")
    return None


def _walk(model: keras.Model) -> list:
    """Every layer (nested models and sub-layers included) and every op node of Functional graphs."""
    found, seen = [], set()
    stack = [model]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        found.append(obj)
        if isinstance(obj, keras.layers.Layer):
            stack.extend(obj._flatten_layers(include_self=False, recursive=False))
        stack.extend(getattr(obj, "operations", None) or [])
    return found


def _plain_relu_ops(model: keras.Model, spec: tf.TensorSpec) -> int:
    """ReLU ops left in the traced forward graph that are not guided (a guided ReLU adds an IdentityN)."""
    graph = tf.function(lambda t: model(t, training=False)).get_concrete_function(spec).graph
    types = [op.type for op in graph.get_operations()]
    return types.count("Relu") - types.count("IdentityN")


def guided_clone(model: keras.Model, non_relu: str = "raise") -> keras.Model:
    """A copy of ``model`` (its weights of the moment) whose ReLUs back-propagate with the guided rule.

    The explainers do not use it (they guide the model's own ReLUs while tracing, so they always
    read its current weights); the copy is for use on its own, and does not follow later changes
    of the model's weights.

    Parameters
    ----------
    model : keras.Model
        A built Functional or Sequential model, nested sub-models included; it is not modified.
    non_relu : {"raise", "keep"}, default="raise"
        What to do with ReLU-like activations where the guided rule is not defined (ReLU6,
        LeakyReLU, PReLU, ELU, SELU, GELU, SiLU/Swish, Mish, Softplus...): ``"raise"`` a
        ``ValueError`` listing the layers, or ``"keep"`` their ordinary gradient. Other
        non-linearities (sigmoid, tanh, softmax) always keep their ordinary gradient.

    Returns
    -------
    keras.Model
        The copy: every ``activation="relu"`` (Conv, Dense, Activation, recurrent cells...),
        ``keras.layers.ReLU()`` with default arguments and ``keras.ops.relu`` node of a Functional
        graph uses :func:`guided_relu`. A ``UserWarning`` says when there was no ReLU at all.

    Raises
    ------
    ValueError
        ``model`` cannot be cloned (subclassed model without ``get_config``), or has other
        rectifiers with ``non_relu="raise"``, or a plain ReLU could not be replaced (a ReLU called
        as a function inside a custom layer's ``call``).

    Notes
    -----
    The copy is made with ``keras.models.clone_model(model, recursive=True)`` and the original
    weights; ReLUs are replaced *after* the copy is built, so the custom gradient only ever sees
    real tensors. The copy's forward pass equals the model's (checked on random inputs), and its
    traced forward graph is checked to hold no ReLU op without the guided gradient. A ReLU
    computed inside a custom layer's ``call`` cannot be replaced and raises instead.

    References
    ----------
    J. T. Springenberg et al., "Striving for Simplicity: The All Convolutional Net", ICLR
    workshop 2015.

    Examples
    --------
    >>> clone = guided_clone(model)         # doctest: +SKIP
    >>> clone is model                      # doctest: +SKIP
    False
    """
    if non_relu not in NON_RELU:
        raise ValueError(f"non_relu must be one of {NON_RELU}; got {non_relu!r}.")
    try:
        clone = keras.models.clone_model(model, recursive=True)
    except (ValueError, TypeError, NotImplementedError) as err:
        raise ValueError(
            f"guided backpropagation works on a copy of the model, but model {model.name!r} "
            f"({type(model).__name__}) cannot be copied with keras.models.clone_model: {err}. Build it as a "
            "Functional or Sequential model, or give its custom layers get_config()."
        ) from err
    if not clone.built or not getattr(clone, "inputs", None):
        clone(tf.zeros([1] + [d or 1 for d in model.inputs[0].shape[1:]], model.inputs[0].dtype))
    clone.set_weights(model.get_weights())
    _check_same_outputs(model, clone)
    edits = guided_edits(clone, non_relu)
    for obj, name, value in edits:
        object.__setattr__(obj, name, value)
    _check_all_replaced(model, _plain_relu_ops(clone, _input_spec(model)))
    _warn_if_none(model, edits, stacklevel=3)
    return clone


def guided_edits(model: keras.Model, non_relu: str = "raise") -> list[tuple[Any, str, Any]]:
    """The attribute changes that make ``model``'s ReLUs guided: ``(object, attribute, value)`` triples.

    Nothing is changed here. :func:`guided_clone` applies them to its copy for good;
    :func:`guided_relus` applies them to a model only while a function is traced.

    Parameters
    ----------
    model : keras.Model
        The model to walk (nested models and sub-layers included).
    non_relu : {"raise", "keep"}, default="raise"
        See :func:`guided_clone`.

    Returns
    -------
    list of (object, str, object)
        ``(layer, "activation", guided_relu)`` for a ReLU activation and ``(layer or op,
        "call", ...)`` for a ``keras.layers.ReLU`` layer or a ``keras.ops.relu`` node.

    Raises
    ------
    ValueError
        Other rectifiers (ReLU6, LeakyReLU, GELU, SiLU...) with ``non_relu="raise"``; the message
        lists them.
    """
    if non_relu not in NON_RELU:
        raise ValueError(f"non_relu must be one of {NON_RELU}; got {non_relu!r}.")
    others, edits = [], []
    for obj in _walk(model):
        kind = _relu_kind(obj)
        if kind is None:
            continue
        if kind[0] == "other":
            others.append(f"{getattr(obj, 'name', type(obj).__name__)!r} ({kind[1]})")
        elif kind[1] == "activation":
            edits.append((obj, "activation", guided_relu))
        else:
            edits.append((obj, "call", _guided_call))
    if others and non_relu == "raise":
        raise ValueError(
            "guided backpropagation is defined for ReLU networks, but the model has other rectifiers: "
            + ", ".join(others[:12])
            + (f" (and {len(others) - 12} more)" if len(others) > 12 else "")
            + ". Pass non_relu='keep' to back-propagate through them with their ordinary gradient "
            "(the guided rule is then applied at the ReLUs only)."
        )
    return edits


@contextlib.contextmanager
def guided_relus(edits: list[tuple[Any, str, Any]]):
    """Apply :func:`guided_edits` while the block runs; every attribute is restored in ``finally``.

    Meant to be active only while a function is traced (as
    :meth:`keras_gradcam.capture.Capture.active`): the traced graph then holds guided ReLUs and
    the model's own variables, and the model is left exactly as it was, also when tracing raises.
    """
    touched = []  # (object, attribute, had_instance_attr, old_value)
    try:
        for obj, name, value in edits:
            touched.append((obj, name, name in obj.__dict__, obj.__dict__.get(name)))
            object.__setattr__(obj, name, value)
        yield
    finally:
        for obj, name, had, old in reversed(touched):
            if had:
                object.__setattr__(obj, name, old)
            else:
                object.__delattr__(obj, name)


def _check_all_replaced(model, left: int) -> None:
    if left > 0:
        raise ValueError(
            f"{left} ReLU(s) of model {model.name!r} could not be replaced by the guided ReLU: they are "
            "called as functions inside a custom layer's call(). Use activation='relu', keras.layers.ReLU() "
            "or keras.ops.relu in the model's graph instead."
        )


def _warn_if_none(model, edits, stacklevel: int) -> None:
    if not edits:
        warnings.warn(
            f"model {model.name!r} has no ReLU: guided backpropagation reduces to the plain input gradient.",
            UserWarning,
            stacklevel=stacklevel,
        )


def _input_spec(model) -> tf.TensorSpec:
    t = model.inputs[0]
    return tf.TensorSpec(tuple(t.shape), tf.as_dtype(t.dtype))


def _check_same_outputs(model, clone) -> None:
    """The copy must compute what the model computes (weights copied in the same order)."""
    t = model.inputs[0]
    if any(d is None for d in t.shape[1:]):
        return
    shape = (2,) + tuple(t.shape[1:])
    dtype = np.dtype(keras.backend.standardize_dtype(t.dtype))
    x = np.random.default_rng(0).normal(size=shape).astype(dtype) if dtype.kind == "f" else np.zeros(shape, dtype)
    a = [np.asarray(v, np.float64) for v in tf.nest.flatten(model(x, training=False))]
    b = [np.asarray(v, np.float64) for v in tf.nest.flatten(clone(x, training=False))]
    same = len(a) == len(b) and all(
        u.shape == v.shape and np.allclose(u, v, rtol=1e-4, atol=1e-5 * (1 + np.abs(u).max())) for u, v in zip(a, b)
    )
    if not same:
        raise ValueError(
            f"the copy of model {model.name!r} made by keras.models.clone_model does not compute the same "
            "outputs (a custom layer whose get_config/from_config loses state?); guided backpropagation "
            "cannot be run on it."
        )


class GuidedBackprop(_Driven, BaseCAM):
    r"""Guided backpropagation: the input gradient of the class score through guided ReLUs.

    A fine-grained, pixel-space picture of the input patterns that excite the target score; not
    class-discriminative on its own (see :class:`GuidedGradCAM`).

    Parameters
    ----------
    model : keras.Model
        A single-input Functional or Sequential model (nested models included). Its ReLUs are
        guided only while the compiled function is traced and restored right after, so the model
        is left as it was and every call reads its current weights (after ``set_weights`` or
        training, the same explainer explains the model as it is now).
    layer : None
        Guided backpropagation explains the input; no layer may be given.
    output, score, batch_size
        See :class:`~keras_gradcam.base.BaseCAM`. With ``score="logit"`` a softmax or sigmoid head is
        removed while tracing (as for every method), so the gradient is that of the logit.
    counterfactual : bool, default=False
        Back-propagate from :math:`-y^c` instead of :math:`y^c`: with the guided rule this is not
        the negated image, but the input patterns that would *lower* the class score (the
        counterfactual of the Grad-CAM paper, applied to guided backpropagation).
    non_relu : {"raise", "keep"}, default="raise"
        Rule for ReLU-like activations other than ReLU (SiLU, GELU, ReLU6, LeakyReLU, ...): raise a
        ``ValueError`` listing them, or keep their ordinary gradient. A network without any
        rectifier then gives the plain input gradient.

    Returns
    -------
    Explanation
        ``attributions`` of shape ``(n_samples, *input_dims)`` like the input; ``heatmaps`` is the
        per-pixel maximum over channels of ``|attributions|``, min-max normalised (a display aid);
        ``layer_heatmaps`` the same before normalisation; ``layer`` is ``"input"``.

    Raises
    ------
    ValueError
        ``layer`` given, a multi-input model, other rectifiers with ``non_relu="raise"``, a ReLU
        called as a function inside a custom layer's ``call`` (it cannot be guided), or a model
        that takes integer token ids (an integer input, or an ``Embedding`` reading an input): the
        gradient stops at the embedding lookup, so the attributions would be all zero. Grad-CAM
        and the other methods that only read a layer work on such models.

    Notes
    -----
    At every ReLU the backward signal is gated by a positive forward input *and* a positive
    incoming signal, starting from a one-hot on the target logit:

    .. math:: R_{in} = R_{out}\,\mathbb{1}[x > 0]\,\mathbb{1}[R_{out} > 0],\qquad
              GB^c(x) = R_{in}\big|_{\text{input}}

    One forward and one backward pass of the model, its ReLUs guided, for the whole batch.

    References
    ----------
    J. T. Springenberg et al., "Striving for Simplicity: The All Convolutional Net", ICLR
    workshop 2015. R. R. Selvaraju et al., "Grad-CAM", ICCV 2017, section 3.1.

    Examples
    --------
    >>> exp = GuidedBackprop(model)(images)     # doctest: +SKIP
    >>> exp.attributions.shape                  # doctest: +SKIP
    (8, 64, 64, 3)
    """

    name = "guided-backprop"
    display_name = "Guided Backprop"

    def __init__(self, model, layer=None, *, non_relu: str = "raise", **kwargs):
        if layer is not None:
            raise ValueError(
                f"guided backpropagation explains the input, it reads no layer; got layer={layer!r}. "
                "Use GuidedGradCAM(model, layer=...) for a class-discriminative map at a layer."
            )
        if non_relu not in NON_RELU:
            raise ValueError(f"non_relu must be one of {NON_RELU}; got {non_relu!r}.")
        self.non_relu = non_relu
        self._edits: list = []
        super().__init__(model, None, **kwargs)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.pop("layer", None)
        return {**config, "non_relu": self.non_relu}

    @property
    def layer(self) -> str:
        return "input"

    def _setup(self, sample=None) -> None:
        ensure_built(self.model, sample)
        inputs = getattr(self.model, "inputs", None) or []
        if len(inputs) != 1:
            raise ValueError(
                f"GuidedBackprop explains models with one input (attributions shaped like it); model "
                f"{self.model.name!r} has {len(inputs)}. Wrap it in a one-input model that fixes the others."
            )
        refuse_token_inputs(self.model, type(self).__name__, "back-propagates to the input")
        self._edits = guided_edits(self.model, self.non_relu)
        with guided_relus(self._edits):
            _check_all_replaced(self.model, _plain_relu_ops(self.model, _input_spec(self.model)))
        _warn_if_none(self.model, self._edits, stacklevel=5)
        self._channels_first = any(getattr(o, "data_format", "") == "channels_first" for o in _walk(self.model))
        # the user's model itself, its ReLUs guided while the function is traced (see _contexts)
        self._capture = Capture(self.model, [], output=self.output, score=self.score)

    def _contexts(self) -> list:
        return super()._contexts() + [guided_relus(self._edits)]

    def _signed(self, targets):
        """Targets as a callable returning -y when counterfactual; a dict receives the class indices."""
        box: dict = {}
        if not self.counterfactual:
            return targets, box
        if callable(targets):
            return (lambda outputs: -tf.cast(targets(outputs), tf.float32)), box

        def negated(outputs):
            selected = self._capture.select(outputs)
            scores, resolved, _ = class_scores(selected, targets)
            box.update(targets=resolved, num_classes=selected.shape[-1])
            return -scores

        return negated, box

    def _guided_function(self, x, targets):
        def body(xb, tb):
            tgt, box = self._signed(targets if callable(targets) else tb)
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(xb)
                cap = self._capture(xb, tgt, gradients=False)
                total = tf.reduce_sum(cap.scores)
            grads = tape.gradient(total, xb, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            scores, resolved = cap.scores, cap.targets
            self._num_classes = cap.num_classes
            if box:
                scores, resolved = -scores, box["targets"]
                self._num_classes = box["num_classes"]
            elif self.counterfactual:
                scores = -scores
            attributions = tf.cast(tf.nest.flatten(grads)[0], tf.float32)
            amount = tf.abs(attributions)
            if attributions.shape.rank >= 3:
                amount = tf.reduce_max(amount, axis=1 if self._channels_first else -1)
            return attributions, normalize(amount), amount, resolved, scores, cap.predictions

        key = ("guided", _spec_key(x), targets if callable(targets) else None)
        return self._compiled(key, body, [_specs(x), tf.TensorSpec([None], tf.int32)])

    def __call__(self, images, targets=None, *, batch_size: int | None = None) -> Explanation:
        """Explain a batch; see :meth:`keras_gradcam.base.BaseCAM.__call__` for the arguments.

        Returns
        -------
        Explanation
            With ``attributions`` shaped like the input.
        """
        x, t, n, bs = self._prepare(images, targets, batch_size)
        fn = self._guided_function(x, t)
        if not callable(t):
            check_range(t, self._num_classes)
        attributions, *outputs = self._run_batches(fn, x, t, bs)
        return self._explanation(t, *outputs, attributions=attributions)


class _GuidedMixin:
    """Guided X: guided backpropagation times the upsampled, normalised map of method X."""

    def _init_guided(self, non_relu: str) -> None:
        if non_relu not in NON_RELU:
            raise ValueError(f"non_relu must be one of {NON_RELU}; got {non_relu!r}.")
        self.non_relu = non_relu
        self._guided = GuidedBackprop(
            self.model,
            output=self.output,
            score=self.score,
            counterfactual=self.counterfactual,
            batch_size=self.batch_size,
            non_relu=non_relu,
        )

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "non_relu": self.non_relu}

    def __call__(self, images, targets=None, *, batch_size: int | None = None) -> Explanation:
        """Explain a batch; see :meth:`keras_gradcam.base.BaseCAM.__call__` for the arguments.

        Returns
        -------
        Explanation
            ``heatmaps`` of the CAM method, ``attributions`` of guided Grad-CAM (shaped like the
            input) and ``extras["guided_backprop"]`` the guided-backpropagation image.
        """
        exp = super().__call__(images, targets, batch_size=batch_size)
        gb = self._guided(images, targets if callable(targets) else exp.targets, batch_size=batch_size)
        heat = exp.heatmaps
        if gb.attributions.ndim == heat.ndim + 1:
            heat = heat[:, None] if self.layers[0].channels_first else heat[..., None]
        elif gb.attributions.ndim != heat.ndim:
            raise ValueError(
                f"cannot align the heatmaps {exp.heatmaps.shape} with the input-gradient {gb.attributions.shape}; "
                "guided methods need an image-like input whose spatial size is the heatmaps' size."
            )
        extras = {**exp.extras, "guided_backprop": gb.attributions}
        return dataclasses.replace(exp, attributions=gb.attributions * heat, extras=extras)


class GuidedGradCAM(_GuidedMixin, GradCAM):
    r"""Guided Grad-CAM: guided backpropagation times the upsampled Grad-CAM map.

    Grad-CAM is class-discriminative but coarse; guided backpropagation is fine-grained but not
    class-discriminative. Their product is both (Grad-CAM paper, section 3.1).

    Parameters
    ----------
    model, layer, output, score, batch_size
        See :class:`~keras_gradcam.base.BaseCAM`.
    counterfactual : bool, default=False
        Use the counterfactual Grad-CAM map (negated gradients) and guided backpropagation of
        :math:`-y^c` (see :class:`GuidedBackprop`): input patterns that would lower the score.
    non_relu : {"raise", "keep"}, default="raise"
        See :class:`GuidedBackprop`.

    Returns
    -------
    Explanation
        ``heatmaps`` / ``layer_heatmaps``: Grad-CAM's; ``attributions``: guided Grad-CAM, shaped
        like the input; ``extras["guided_backprop"]``: the guided-backpropagation image.

    Raises
    ------
    ValueError
        As :class:`~keras_gradcam.GradCAM` and :class:`GuidedBackprop`.

    Notes
    -----
    .. math:: GGC^c(x) = GB^c(x) \odot \mathrm{Nrm}\big(\mathrm{Up}(L^c_{\text{Grad-CAM}})\big)

    broadcast over the input's channels. ``Up`` is bilinear (as the paper); the map is min-max
    normalised (as pytorch-grad-cam), which differs from the original Lua code's raw map by a
    positive factor per sample. Two forward and two backward passes: Grad-CAM on the model, then
    guided backpropagation through its guided ReLUs, for the same targets.

    References
    ----------
    R. R. Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
    Localization", ICCV 2017, section 3.1.

    Examples
    --------
    >>> exp = GuidedGradCAM(model, layer="conv2d_1")(images)   # doctest: +SKIP
    >>> exp.attributions.shape, exp.heatmaps.shape              # doctest: +SKIP
    ((8, 64, 64, 3), (8, 64, 64))
    """

    name = "guided-gradcam"
    display_name = "Guided Grad-CAM"

    def __init__(self, model, layer=None, *, non_relu: str = "raise", **kwargs):
        super().__init__(model, layer, **kwargs)
        self._init_guided(non_relu)


class GuidedGradCAMPlusPlus(_GuidedMixin, GradCAMPlusPlus):
    r"""Guided Grad-CAM++: guided backpropagation times the upsampled Grad-CAM++ map.

    Parameters
    ----------
    model, layer, output, score, batch_size, alpha_norm
        See :class:`~keras_gradcam.GradCAMPlusPlus`.
    counterfactual : bool, default=False
        Negated gradients for the Grad-CAM++ map, guided backpropagation of :math:`-y^c`.
    non_relu : {"raise", "keep"}, default="raise"
        See :class:`GuidedBackprop`.

    Returns
    -------
    Explanation
        ``heatmaps``: Grad-CAM++'s; ``attributions``: guided Grad-CAM++, shaped like the input;
        ``extras["guided_backprop"]``: the guided-backpropagation image.

    Raises
    ------
    ValueError
        As :class:`~keras_gradcam.GradCAMPlusPlus` and :class:`GuidedBackprop`.

    Notes
    -----
    .. math:: GGC^{c}_{++}(x) = GB^c(x) \odot \mathrm{Nrm}\big(\mathrm{Up}(L^c_{\text{Grad-CAM++}})\big)

    As in the Grad-CAM++ paper, which pairs its maps with guided backpropagation the way Grad-CAM
    does.

    References
    ----------
    A. Chattopadhyay et al., "Grad-CAM++: Improved Visual Explanations for Deep Convolutional
    Networks", WACV 2018, arXiv:1710.11063.

    Examples
    --------
    >>> exp = GuidedGradCAMPlusPlus(model)(images)   # doctest: +SKIP
    >>> exp.attributions.shape                       # doctest: +SKIP
    (8, 64, 64, 3)
    """

    name = "guided-gradcam++"
    display_name = "Guided Grad-CAM++"

    def __init__(self, model, layer=None, *, non_relu: str = "raise", **kwargs):
        super().__init__(model, layer, **kwargs)
        self._init_guided(non_relu)
