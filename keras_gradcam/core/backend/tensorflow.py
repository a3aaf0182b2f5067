"""The TensorFlow side of the backend seam: ``tf.function`` and ``tf.GradientTape``.

See :mod:`keras_gradcam.core.backend` for the contract. :class:`Compiled` is what
:func:`compile` returns: the traced concrete function, never the ``tf.function``, which would
retrace (outside the capture's interception) when called in another context, such as inside or
outside a ``strategy.scope()`` or another device scope.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable

import keras
import tensorflow as tf

__all__ = ["Compiled", "UNKNOWN_SIZES", "abstract_call", "compile", "fused", "guided_relu", "layer_gradients", "map_sequential", "no_gradients", "on_host", "plain_relus",
           "stateless_normal", "stateless_normals"]


def _spec(s):
    if isinstance(s, keras.KerasTensor):
        return tf.TensorSpec(s.shape, tf.as_dtype(s.dtype))
    return s


class Compiled:
    """A traced concrete function, called like the ``tf.function`` it came from (arrays become tensors)."""

    def __init__(self, traced, concrete, signature: list):
        self.traced, self.concrete, self.signature = traced, concrete, list(signature)

    @property
    def graph(self):
        return self.concrete.graph

    def get_concrete_function(self):
        """The traced function itself (as ``tf.function.get_concrete_function`` gives it)."""
        return self.concrete

    def experimental_get_tracing_count(self) -> int:
        """How many times it was traced: 1 (calls never trace)."""
        return self.traced.experimental_get_tracing_count()

    def __call__(self, *args):
        tensors = tf.nest.map_structure(lambda a, spec: tf.convert_to_tensor(a, spec.dtype), list(args),
                                        self.signature, check_types=False)
        return self.concrete(*tensors)


def compile(body: Callable, signature: list, contexts: Callable = list) -> Compiled:  # noqa: A001 - the seam's name
    """``tf.function(body)`` traced once for ``signature`` inside ``contexts()``.

    A fixed input signature (never retraced) and autograph off: the package's graph code has no
    Python control flow on tensors, and an error raised while tracing reaches the user as it was
    raised, not inside TensorFlow's "in user code" trace.
    """
    signature = keras.tree.map_structure(_spec, list(signature))
    traced = tf.function(body, input_signature=signature, autograph=False)
    with contextlib.ExitStack() as stack:
        for ctx in contexts():
            stack.enter_context(ctx)
        concrete = traced.get_concrete_function()
    return Compiled(traced, concrete, signature)


def layer_gradients(forward: Callable, x, n_layers: int, gradients: bool = True, wrt_inputs: bool = False,
                    differentiable: bool = False):
    """One forward pass under a ``tf.GradientTape``; see :mod:`keras_gradcam.core.backend`."""
    outs: list = [None] * n_layers
    with tf.GradientTape(watch_accessed_variables=False, persistent=False) as tape:
        inputs = tf.nest.flatten(x)
        if wrt_inputs:
            tape.watch(inputs)

        def hook(i, out):
            if gradients:
                tape.watch(out)
            outs[i] = out
            return out

        total, aux = forward(hook)
    grads, wrt = None, None
    if gradients or wrt_inputs:
        sources = (outs if gradients else []) + (inputs if wrt_inputs else [])
        got = tape.gradient(total, sources, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        if gradients:
            grads = got[:n_layers]
        if wrt_inputs:
            wrt = got[n_layers if gradients else 0 :]
    return aux, outs, grads, wrt


def no_gradients():
    """A context in which no gradient is recorded (PyTorch's ``no_grad``): nothing to do here."""
    return contextlib.nullcontext()


@tf.custom_gradient
def guided_relu(x):
    """ReLU whose gradient passes only where the input and the incoming gradient are positive.

    Springenberg et al. 2015's guided backpropagation: ``dy * (x > 0) * (dy > 0)``; the public,
    documented name is :func:`keras_gradcam.methods.guided_model.guided_relu`.
    """

    def grad(dy):
        return dy * tf.cast(x > 0, dy.dtype) * tf.cast(dy > 0, dy.dtype)

    return tf.nn.relu(x), grad


@functools.lru_cache(maxsize=1)
def xla_works() -> bool:
    """Whether this TensorFlow build can run ``jit_compile=True`` functions on the default device."""
    try:
        with tf.init_scope():  # run it now, eagerly, also when first asked while a function is traced
            probe = tf.function(lambda a: tf.image.resize(a, (4, 4)) * 2.0, jit_compile=True)
            probe(tf.ones([1, 2, 2, 1])).numpy()
        return True
    except (tf.errors.OpError, NotImplementedError, ValueError):  # pragma: no cover - builds without XLA
        return False


def fused(body: Callable, *args):
    """Graph code: ``body(*args)``, in a new ``jit_compile=True`` function where XLA works.

    XLA fuses element-wise work around the model's passes (Score-CAM's masking: upsample,
    normalise, multiply) that would otherwise cost as much as a small forward pass. A new function
    is made on each call, from inside the explainer's own compiled body, so that no compiled
    function (nor its trace cache) is shared between explainers, layers or sizes.
    """
    if xla_works():
        return tf.function(body, jit_compile=True)(*args)
    return body(*args)


def stateless_normal(shape, seed: tuple[int, int], dtype="float32"):
    """Standard normal noise of ``shape`` from the seed pair ``seed``: ``tf.random.stateless_normal``."""
    return tf.random.stateless_normal(tuple(shape), seed=list(seed), dtype=dtype)


def stateless_normals(shape, seed: int, ids):
    """One float32 draw of ``shape`` per entry ``i`` of the int tensor ``ids``, from the pair ``(seed, i)``."""
    first = tf.constant(seed, tf.int64)
    shape = tuple(shape)

    def draw(i):
        return tf.random.stateless_normal(shape, seed=tf.stack([first, tf.cast(i, tf.int64)]))

    return tf.map_fn(draw, ids, fn_output_signature=tf.TensorSpec(shape, tf.float32))


def map_sequential(fn: Callable, count, n_outputs: int):
    """Graph code: ``fn(i)`` for ``i in range(count)``, one after the other, each output stacked on a new first axis.

    ``fn`` returns a tuple of ``n_outputs`` float32 tensors of the same shapes on every ``i``. One
    iteration at a time (``parallel_iterations=1``), so that memory holds one pass, not several.
    """
    return tuple(
        tf.map_fn(fn, tf.range(count), fn_output_signature=(tf.float32,) * n_outputs, parallel_iterations=1)
    )


def on_host(fn: Callable, *tensors) -> tuple:
    """Graph code: ``fn(*arrays)`` on the host each time the function runs; returns ``tensors``.

    A ``tf.py_function`` whose outputs are the tensors themselves, so that it runs before their
    uses and no graph transformation prunes it. An exception ``fn`` raises reaches the caller as
    an ``InvalidArgumentError`` (a ``ValueError``) or ``UnknownError`` holding its message.
    """
    tensors = [tf.convert_to_tensor(t) for t in tensors]

    def run(*values):
        fn(*[v.numpy() for v in values])
        return values

    out = tf.py_function(run, tensors, Tout=[t.dtype for t in tensors])
    for o, t in zip(out, tensors):
        o.set_shape(t.shape)
    return tuple(out)


def plain_relus(fn: Callable, shape: tuple, dtype) -> int:
    """How many ReLU ops without the guided gradient one run of ``fn`` (a model call) holds.

    ``fn`` is traced once (nothing is computed) for an input of ``shape`` (``None`` axes stay
    symbolic) and ``dtype``; every ``Relu`` op of its graph is counted, less one per guided ReLU
    (``tf.custom_gradient`` adds an ``IdentityN`` op next to its ``Relu``). So a ReLU that a
    custom layer's ``call`` computes itself (``tf.nn.relu``, ``keras.ops.relu``) is counted too.
    """
    graph = tf.function(fn, autograph=False).get_concrete_function(tf.TensorSpec(shape, tf.as_dtype(dtype))).graph
    types = [op.type for op in graph.get_operations()]
    return types.count("Relu") - types.count("IdentityN")


# whether abstract_call takes a size left unknown (None) in its inputs (a TensorSpec's None)
UNKNOWN_SIZES = True


def abstract_call(fn: Callable, args: tuple, kwargs: dict):
    """What ``fn(*args, **kwargs)`` returns, traced once (``tf.function``, autograph off), nothing run.

    Every ``keras.KerasTensor`` in ``args`` and ``kwargs`` becomes a symbolic tensor of its shape
    (a ``None`` size stays unknown: :data:`UNKNOWN_SIZES`) and dtype; other values are passed as they are. ``fn`` returns
    plain Python data read from the tensors it saw (the probe of :mod:`keras_gradcam.core.sublayers`).
    """
    args, kwargs = keras.tree.map_structure(_spec, (tuple(args), dict(kwargs)))
    read = []
    tf.function(lambda *a, **k: read.append(fn(*a, **k)), autograph=False).get_concrete_function(*args, **kwargs)
    return read[0]
