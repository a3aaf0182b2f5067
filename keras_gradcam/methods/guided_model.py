"""Model surgery for guided backpropagation: the guided ReLU and where a model's ReLUs are.

:func:`guided_edits` finds every plain ReLU of a model (a ReLU ``activation``, a
``keras.layers.ReLU`` layer, a ``keras.ops.relu`` node of a Functional graph) and says which
attribute to set to make it guided; :func:`guided_relus` applies those changes only while a block
runs (the explainers trace under it), :func:`guided_clone` applies them to a copy for good.

The guided ReLU's gradient is each backend's own (:func:`keras_gradcam.core.backend.guided_relu`:
``tf.custom_gradient``, ``jax.custom_vjp``, a ``torch.autograd.Function``), and so is the check
that no plain ReLU is left (:func:`keras_gradcam.core.backend.plain_relus`: the traced graph's
``Relu`` ops, the jaxpr's ``relu`` calls, the ``torch.relu`` calls of one eager run). Every backend
finds the same ReLUs: a ReLU computed in a custom layer's ``call`` with ``keras.ops.relu`` or the
backend's own relu is counted, so the model is refused; one written as ``maximum(x, 0)`` is seen
by no backend and keeps its plain gradient.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from ..core import backend
from ..core.capture import thread_patches
from ..core.validate import one_of, warn_user

__all__ = ["NON_RELU", "checked_guided_edits", "guided_clone", "guided_edits", "guided_relu", "guided_relus"]

NON_RELU = ("raise", "keep")

# ReLU-like activations for which the guided rule is not defined (normalised names: lower case, no "_")
_RECTIFIERS = frozenset(
    "relu6 leakyrelu prelu elu selu celu gelu silu swish hardsilu hardswish mish softplus glu "
    "sparseplus squareplus thresholdedrelu".split()
)


def guided_relu(x):
    r"""ReLU whose backward pass follows the guided-backpropagation rule.

    Parameters
    ----------
    x : tensor
        Pre-activation (a tensor of the Keras backend).

    Returns
    -------
    tensor
        ``max(x, 0)``; the gradient passed back for an incoming gradient ``dy`` is
        ``dy * 1[x > 0] * 1[dy > 0]``.

    Notes
    -----
    .. math:: R_{in} = R_{out} \cdot \mathbb{1}[x > 0] \cdot \mathbb{1}[R_{out} > 0]

    Plain backpropagation keeps only the first gate, the "deconvnet" only the second. The
    gradient is the backend's own (:func:`keras_gradcam.core.backend.guided_relu`:
    ``tf.custom_gradient`` on TensorFlow, ``jax.custom_vjp`` on JAX, a
    ``torch.autograd.Function`` on PyTorch).

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
    return backend.guided_relu(x)


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


def _plain_relus(model: keras.Model) -> int:
    """The ReLUs of one forward pass of ``model`` that are not guided (:func:`keras_gradcam.core.backend.plain_relus`)."""
    t = model.inputs[0]
    dtype = keras.backend.standardize_dtype(t.dtype)
    return backend.plain_relus(lambda x: model(x, training=False), tuple(t.shape), dtype)


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
    forward pass is checked to compute no ReLU without the guided gradient (on each backend, see
    :func:`~keras_gradcam.core.backend.plain_relus`). A ReLU computed inside a custom layer's
    ``call`` (``keras.ops.relu``, ``tf.nn.relu``, ``jax.nn.relu``, ``torch.relu``) cannot be
    replaced and raises instead.

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
        clone(keras.ops.zeros([1] + [d or 1 for d in model.inputs[0].shape[1:]], model.inputs[0].dtype))
    clone.set_weights(model.get_weights())
    _check_same_outputs(model, clone)
    edits = guided_edits(clone, non_relu)
    for obj, name, value in edits:
        object.__setattr__(obj, name, value)
    _check_all_replaced(model, _plain_relus(clone))
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
    one_of("non_relu", non_relu, NON_RELU)
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


def guided_relus(edits: list[tuple[Any, str, Any]]):
    """Apply :func:`guided_edits` while the block runs, in this thread only; restored in ``finally``.

    Meant to be active only while a function is traced (as
    :meth:`keras_gradcam.core.capture.Capture.active`, through the same
    :func:`~keras_gradcam.core.capture.thread_patches`): the traced graph then holds guided ReLUs and
    the model's own variables, another thread calling the model meanwhile gets its plain ReLUs,
    and the model is left exactly as it was, also when tracing raises.
    """
    return thread_patches(edits)


def checked_guided_edits(model: keras.Model, non_relu: str = "raise", stacklevel: int = 2) -> tuple[list, bool]:
    """:func:`guided_edits` of the user's model itself, checked to guide every ReLU of its graph.

    Parameters
    ----------
    model : keras.Model
        A built single-input model; left as it is (the edits are applied only while a throw-away
        trace checks them).
    non_relu : {"raise", "keep"}, default="raise"
        See :func:`guided_clone`.
    stacklevel : int, default=2
        Ignored: the "no ReLU" warning points at the user's line (the first caller outside the package).

    Returns
    -------
    edits : list of (object, str, object)
        For :func:`guided_relus`.
    channels_first : bool
        Whether a layer of the model is ``channels_first`` (the input's channel axis is then 1).

    Raises
    ------
    ValueError
        As :func:`guided_edits`, or a ReLU called as a function inside a custom layer's ``call``
        (it cannot be guided). A model without any ReLU gets a ``UserWarning`` instead.
    """
    edits = guided_edits(model, non_relu)
    with guided_relus(edits):
        _check_all_replaced(model, _plain_relus(model))
    _warn_if_none(model, edits, stacklevel=stacklevel + 1)
    channels_first = any(getattr(o, "data_format", "") == "channels_first" for o in _walk(model))
    return edits, channels_first


def _check_all_replaced(model, left: int) -> None:
    if left > 0:
        raise ValueError(
            f"{left} ReLU(s) of model {model.name!r} could not be replaced by the guided ReLU: they are "
            "called as functions inside a custom layer's call(). Use activation='relu', keras.layers.ReLU() "
            "or keras.ops.relu in the model's graph instead."
        )


def _warn_if_none(model, edits, stacklevel: int = 0) -> None:
    if not edits:
        warn_user(
            f"model {model.name!r} has no ReLU: guided backpropagation reduces to the plain input gradient.",
            UserWarning,
        )


def _check_same_outputs(model, clone) -> None:
    """The copy must compute what the model computes (weights copied in the same order)."""
    t = model.inputs[0]
    if any(d is None for d in t.shape[1:]):
        return
    shape = (2,) + tuple(t.shape[1:])
    dtype = np.dtype(keras.backend.standardize_dtype(t.dtype))
    x = np.random.default_rng(0).normal(size=shape).astype(dtype) if dtype.kind == "f" else np.zeros(shape, dtype)
    a = [keras.ops.convert_to_numpy(v).astype(np.float64) for v in keras.tree.flatten(model(x, training=False))]
    b = [keras.ops.convert_to_numpy(v).astype(np.float64) for v in keras.tree.flatten(clone(x, training=False))]
    same = len(a) == len(b) and all(
        u.shape == v.shape and np.allclose(u, v, rtol=1e-4, atol=1e-5 * (1 + np.abs(u).max())) for u, v in zip(a, b)
    )
    if not same:
        raise ValueError(
            f"the copy of model {model.name!r} made by keras.models.clone_model does not compute the same "
            "outputs (a custom layer whose get_config/from_config loses state?); guided backpropagation "
            "cannot be run on it."
        )
