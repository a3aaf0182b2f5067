"""The backend seam on JAX: ``jax.jit`` once per input signature, gradients through zero perturbations.

JAX has no tape to watch a tensor that the forward pass computes: a gradient is taken with
respect to a function's *arguments*. :func:`layer_gradients` therefore makes each explained
layer's output an argument: the capture's hook adds a zero tensor ``eps_i`` to the layer's raw
output, and ``d total / d eps_i`` at ``eps_i = 0`` is exactly ``d total / d out_i`` (the forward
value is unchanged, the gradient passes through ``+``). The shapes of the ``eps_i`` come from
an abstract pass of the same body (:func:`jax.eval_shape`: nothing is computed), which
:func:`compile` makes anyway to find the variables the body reads.

:func:`compile` jits a body once per input shape. The user's variables are never assigned: the
variables that the body reads are found once by an abstract trace under a recording
:class:`keras.StatelessScope`, then passed to the jitted function as arguments on every call and
read inside it through a ``StatelessScope`` mapping (what ``stateless_call`` does for a whole
model). So the compiled function reads the weights as they are at each call (after more
training, too), never weights baked into the program as constants, and no variable is written.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable

import jax
import jax.extend.core
import jax.numpy as jnp
import keras
import numpy as np

__all__ = ["Compiled", "UNKNOWN_SIZES", "abstract_call", "compile", "fused", "guided_relu", "layer_gradients", "map_sequential", "no_gradients", "on_host", "plain_relus",
           "stateless_normal", "stateless_normals", "to_numpy"]


def _floating(dtype) -> bool:
    return jnp.issubdtype(dtype, jnp.inexact)


class _ReadVariables(keras.StatelessScope):
    """A stateless scope that only notes which variables are read (their values stay as they are)."""

    def __init__(self):
        super().__init__()
        self.read: dict[int, keras.Variable] = {}

    def get_current_value(self, variable):
        self.read.setdefault(id(variable), variable)
        return None  # not mapped: the variable's own value is used


class _Shapes(threading.local):
    """What :func:`layer_gradients` does in this thread: nothing special, note shapes, or replay them.

    A compiled body runs twice per new input shape: an abstract pass (``jax.eval_shape``, which
    finds the variables it reads) and the jit trace. In the abstract pass each
    :func:`layer_gradients` call runs its ``forward`` once, notes its outputs' shapes and returns
    zeros of the right shapes; in the trace that follows, the same calls, in the same order, take
    those shapes for their zero perturbations. So ``forward`` runs once per pass (the capture's
    records see one call of each layer), never twice.
    """

    mode: str | None = None
    noted: list | None = None


_SHAPES = _Shapes()


@contextlib.contextmanager
def _shapes(mode: str, noted: list):
    saved = _SHAPES.mode, _SHAPES.noted
    _SHAPES.mode, _SHAPES.noted = mode, noted
    try:
        yield
    finally:
        _SHAPES.mode, _SHAPES.noted = saved


class Compiled:
    """``body`` jitted with the variables it reads passed as arguments (see the module docstring)."""

    def __init__(self, body: Callable, signature, contexts: Callable = list):
        self.body = _within(body, contexts)
        self.signature = signature
        self.variables: list = []
        self._noted: dict = {}  # input shapes -> the layer shapes each layer_gradients call noted
        self._jitted = jax.jit(self._stateless)

    def _stateless(self, values, args):
        with keras.StatelessScope(state_mapping=list(zip(self.variables, values))):
            return self.body(*args)

    def _inputs(self, args) -> tuple:
        """``args`` as JAX arrays, cast to the signature's dtypes where it gives them."""
        specs = self.signature if isinstance(self.signature, (list, tuple)) and len(self.signature) == len(args) else None

        def one(a, spec=None):
            dtype = getattr(spec, "dtype", None)
            dtype = getattr(dtype, "as_numpy_dtype", dtype)  # a tf.TensorSpec's dtype
            return jnp.asarray(a, dtype=dtype) if dtype is not None else jnp.asarray(a)

        if specs is None:
            return tuple(jax.tree.map(one, a) for a in args)
        out = []
        for a, spec in zip(args, specs):
            leaves = jax.tree.leaves(spec, is_leaf=lambda s: hasattr(s, "dtype"))
            flat, tree = jax.tree.flatten(a)
            if len(leaves) == len(flat):
                out.append(jax.tree.unflatten(tree, [one(v, s) for v, s in zip(flat, leaves)]))
            else:
                out.append(jax.tree.map(one, a))
        return tuple(out)

    def __call__(self, *args):
        args = self._inputs(args)
        key = tuple((tuple(a.shape), str(a.dtype)) for a in jax.tree.leaves(args))
        if key not in self._noted:  # new shapes: which variables does the body read, which shapes do its layers give?
            recorder, noted = _ReadVariables(), []
            with recorder, _shapes("note", noted):
                jax.eval_shape(lambda a: self.body(*a), args)
            known = {id(v) for v in self.variables}
            self.variables += [v for v in recorder.read.values() if id(v) not in known]
            self._noted[key] = noted
        with _shapes("replay", list(self._noted[key])):  # used only if this call traces
            return self._jitted([v.value for v in self.variables], args)


def _within(body: Callable, contexts: Callable) -> Callable:
    """``body`` run inside the context managers ``contexts()`` returns (entered on each run of its Python)."""

    def run(*args):
        with contextlib.ExitStack() as stack:
            for ctx in contexts():
                stack.enter_context(ctx)
            return body(*args)

    return run


def compile(body: Callable, signature, contexts: Callable = list) -> Callable:  # noqa: A001 - the seam's name
    """``body`` compiled with :func:`jax.jit` (traced once per input shape), reading the variables' current values.

    Parameters
    ----------
    body : callable
        ``body(*args)`` in graph code (``keras.ops``).
    contexts : callable, default=list
        Returns the context managers to enter while the body is traced (the capture's patching):
        JAX traces on the first call with each new input shape, so they are entered then, inside
        the jitted function, not once here.
    signature : list
        One spec (``.shape``, ``.dtype``: a ``tf.TensorSpec``, a ``keras.KerasTensor``, a
        ``jax.ShapeDtypeStruct``) or a nest of them per argument; the arguments are cast to its dtypes.

    Returns
    -------
    callable
        ``f(*args)`` on arrays, returning the body's outputs as JAX arrays.
    """
    return Compiled(body, signature, contexts)


def layer_gradients(forward: Callable, x, n_layers: int, gradients: bool = True, wrt_inputs: bool = False,
                    differentiable: bool = False):
    """The explained layers' outputs and ``d total / d output`` for one batch, on JAX.

    Parameters
    ----------
    forward : callable
        ``forward(hook) -> (total, aux)``: runs the model once (``training=False``) on the batch; the
        capture calls ``hook(i, out) -> out`` on the i-th explained layer's raw output and uses what
        it returns. ``total`` is the scalar sum of the explained scores. With ``wrt_inputs`` it is
        called as ``forward(hook, inputs)`` and must run the model on ``inputs`` (``x`` rebuilt
        from traced leaves): JAX differentiates with respect to arguments only. Inside a body
        compiled by :func:`compile` it runs once per pass (see ``_Shapes``); called outside one,
        it runs twice (an abstract run for the shapes, then the differentiated one).
    x : array or nest of arrays
        The batch.
    n_layers : int
        How many layers the hook sees.
    gradients : bool, default=True
        Differentiate with respect to the layers' outputs (False: forward only, or inputs only).
    wrt_inputs : bool, default=False
        Also differentiate ``total`` with respect to the floating leaves of ``x``.

    Returns
    -------
    aux, activations, gradients, input_gradients
        ``activations[i]``: the i-th layer's output (None if it did not run); ``gradients[i]``:
        ``d total / d activations[i]``, zeros where the score does not depend on it (and for a
        non-floating output), or None unless ``gradients``; ``input_gradients``: one per leaf of
        ``x`` (``keras.tree.flatten`` order; zeros for integer leaves), or None.
    """
    if not gradients and not wrt_inputs:
        outs: list = [None] * n_layers

        def keep(i, out):
            outs[i] = out if outs[i] is None else outs[i]
            return out

        _, aux = forward(keep)
        return aux, outs, None, None
    leaves, tree = jax.tree.flatten(x)
    leaves = [jnp.asarray(v) for v in leaves]
    wrt = [i for i, v in enumerate(leaves) if wrt_inputs and _floating(v.dtype)]
    if _SHAPES.mode == "note":  # the abstract pass of a compiled body: shapes only (see _Shapes)
        return _noting(forward, leaves, tree, n_layers, gradients, wrt_inputs)

    def run(eps, inputs):
        outs: list = [None] * n_layers

        def hook(i, out):
            if outs[i] is None:  # a layer called again keeps its first output (the capture refuses it)
                if eps is not None and eps[i] is not None:
                    out = out + eps[i]
                outs[i] = out
            return out

        if not wrt_inputs:
            total, aux = forward(hook)
        else:
            xs = list(leaves)
            for i, v in zip(wrt, inputs):
                xs[i] = v
            total, aux = forward(hook, jax.tree.unflatten(tree, xs))
        return total, (aux, outs)

    inputs = [leaves[i] for i in wrt]
    if _SHAPES.mode == "replay" and _SHAPES.noted:
        shapes = _SHAPES.noted.pop(0)
    else:  # called outside a compiled body: an abstract run of forward for the shapes
        shapes = jax.eval_shape(lambda inp: run(None, inp)[1][1], inputs)
    eps = [None if s is None or not gradients or not _floating(s.dtype) else jnp.zeros(s.shape, s.dtype) for s in shapes]
    (_, (aux, outs)), (g_eps, g_inputs) = jax.value_and_grad(run, argnums=(0, 1), has_aux=True)(eps, inputs)
    grads = None
    if gradients:
        grads = [
            None if s is None else (g if g is not None else jnp.zeros(s.shape, jnp.float32))
            for s, g in zip(shapes, g_eps)
        ]
    input_grads = None
    if wrt_inputs:
        input_grads = [jnp.zeros(v.shape, jnp.float32) for v in leaves]
        for i, g in zip(wrt, g_inputs):
            input_grads[i] = g
    return aux, outs, grads, input_grads


def _noting(forward, leaves, tree, n_layers, gradients, wrt_inputs):
    """:func:`layer_gradients` in the abstract pass: one forward run, its shapes noted, zeros as gradients."""
    outs: list = [None] * n_layers

    def keep(i, out):
        outs[i] = out if outs[i] is None else outs[i]
        return out

    _, aux = forward(keep, jax.tree.unflatten(tree, leaves)) if wrt_inputs else forward(keep)
    _SHAPES.noted.append([None if o is None else jax.ShapeDtypeStruct(o.shape, o.dtype) for o in outs])

    def zeros(o):
        return jnp.zeros(o.shape, o.dtype if _floating(o.dtype) else jnp.float32)

    grads = [None if o is None else zeros(o) for o in outs] if gradients else None
    input_grads = [jnp.zeros(v.shape, jnp.float32) for v in leaves] if wrt_inputs else None
    return aux, outs, grads, input_grads


def no_gradients():
    """A context in which no gradient is recorded (PyTorch's ``no_grad``): nothing to do here."""
    return contextlib.nullcontext()


@jax.custom_vjp
def guided_relu(x):
    """ReLU whose gradient passes only where the input and the incoming gradient are positive.

    Springenberg et al. 2015's guided backpropagation: ``dy * (x > 0) * (dy > 0)``; the same rule
    as the TensorFlow and PyTorch versions (the public, documented name is
    :func:`keras_gradcam.methods.guided_model.guided_relu`).
    """
    return jnp.maximum(x, 0)


def _guided_forward(x):
    return jnp.maximum(x, 0), x


def _guided_backward(x, dy):
    return (dy * (x > 0).astype(dy.dtype) * (dy > 0).astype(dy.dtype),)


guided_relu.defvjp(_guided_forward, _guided_backward)


def fused(body: Callable, *args):
    """``body(*args)``: the body is already inside a ``jax.jit`` function, which XLA fuses as a whole."""
    return body(*args)


def map_sequential(fn: Callable, count: int, n_outputs: int):
    """``fn(i)`` for ``i in range(count)``, one after the other (``jax.lax.map``), each output stacked on a new first axis."""
    return tuple(jax.lax.map(fn, jnp.arange(int(count), dtype=jnp.int32)))


def _key(seed: int, i):
    return jax.random.fold_in(jax.random.key(seed), i)


def stateless_normal(shape, seed: tuple[int, int], dtype="float32"):
    """Standard normal noise of ``shape`` from the seed pair ``seed``: ``jax.random.normal`` of the key
    ``fold_in(key(seed[0]), seed[1])`` (a counter-based draw: the same numbers on every run and machine)."""
    return jax.random.normal(_key(int(seed[0]), int(seed[1])), tuple(shape), dtype=dtype)


def stateless_normals(shape, seed: int, ids):
    """One float32 draw of ``shape`` per entry ``i`` of the int array ``ids``, from the key of ``(seed, i)``."""
    shape = tuple(shape)
    return jax.vmap(lambda i: jax.random.normal(_key(int(seed), i), shape, dtype=jnp.float32))(jnp.asarray(ids))


def _concrete(shape) -> tuple:
    """``shape`` with a ``None`` batch axis as 1 and other ``None`` axes (an image of any size) as 64."""
    return tuple((1 if i == 0 else 64) if d is None else d for i, d in enumerate(shape))


def plain_relus(fn: Callable, shape: tuple, dtype) -> int:
    """How many ReLUs without the guided gradient one run of ``fn`` (a model call) holds.

    ``fn`` is traced once to a jaxpr (:func:`jax.make_jaxpr`: nothing is computed) for an input of
    ``shape`` (a ``None`` batch axis taken as 1, other ``None`` axes as 64) and ``dtype``.
    ``jax.nn.relu``, which ``keras.ops.relu`` and every Keras ReLU call on JAX, is a
    ``custom_jvp`` around a function jitted under the name ``relu``: those are counted, at any
    depth of the jaxpr, but not inside the ``custom_vjp`` of :func:`guided_relu`. A custom layer's
    ``jax.nn.relu`` or ``keras.ops.relu`` is counted too; a ReLU written as ``jnp.maximum(x, 0)``
    is not (nor is ``tf.maximum`` in TensorFlow's count).
    """
    spec = jax.ShapeDtypeStruct(_concrete(shape), jnp.dtype(dtype))
    # a new function each time: make_jaxpr caches traces by function, and the ReLUs of the same
    # ``fn`` change when its model's ReLUs are swapped for guided ones
    return _relus(jax.make_jaxpr(lambda x: fn(x))(spec).jaxpr)


def _relus(jaxpr) -> int:
    count = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "custom_vjp_call":  # a guided ReLU (or another custom gradient): not looked into
            continue
        if eqn.primitive.name == "custom_jvp_call" and any(_named_relu(e) for e in _sub_jaxprs(eqn)):
            count += 1
            continue
        count += sum(_relus(sub) for sub in _sub_jaxprs(eqn))
    return count


def _named_relu(jaxpr) -> bool:
    return any(e.params.get("name") == "relu" for e in jaxpr.eqns)


def _sub_jaxprs(eqn) -> list:
    """The jaxprs an equation holds (a jit's body, a custom rule's function, a loop's body...)."""
    found = []
    for value in eqn.params.values():
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, jax.extend.core.ClosedJaxpr):
                found.append(v.jaxpr)
            elif isinstance(v, jax.extend.core.Jaxpr):
                found.append(v)
    return found


def to_numpy(t) -> np.ndarray:
    """A JAX array (or anything array-like) as a numpy array."""
    return np.asarray(t)


class _RaisedToCaller(logging.Filter):
    """Drops JAX's log of an exception raised by an :func:`on_host` callback: the caller gets it anyway."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not getattr(error, "keras_gradcam_on_host", False)


logging.getLogger("jax._src.debugging").addFilter(_RaisedToCaller())


def on_host(fn: Callable, *tensors) -> tuple:
    """Graph code: ``fn(*arrays)`` on the host each time the function runs; returns ``tensors``.

    A :func:`jax.debug.callback` (an effect: kept by ``jit``, never run by the abstract pass). An
    exception ``fn`` raises reaches the caller inside a ``JaxRuntimeError`` holding its message
    (JAX's own log of it is dropped).
    """

    def run(*values):
        try:
            fn(*[np.asarray(v) for v in values])
        except Exception as error:
            error.keras_gradcam_on_host = True
            raise

    jax.debug.callback(run, *tensors)
    return tuple(tensors)


# whether abstract_call takes a size left unknown (None) in its inputs; the probe gives such a size two values in two runs instead
UNKNOWN_SIZES = False


def abstract_call(fn: Callable, args: tuple, kwargs: dict):
    """What ``fn(*args, **kwargs)`` returns, run once abstractly (:func:`jax.eval_shape`: nothing is computed).

    Every ``keras.KerasTensor`` in ``args`` and ``kwargs`` (all sizes known) becomes an abstract
    array of its shape and dtype (a tracer, whose shape ``fn`` can read); other values
    (``training=False``) are passed as they are. ``fn`` returns plain Python data. It runs in a
    :class:`keras.StatelessScope`: no variable is assigned.
    """
    specs, read = [], []

    def spec(t):
        if isinstance(t, keras.KerasTensor):
            specs.append(jax.ShapeDtypeStruct(tuple(t.shape), t.dtype))
        return t

    structure = keras.tree.map_structure(spec, (tuple(args), dict(kwargs)))

    def run(values):
        leaves = iter(values)
        a, k = keras.tree.map_structure(lambda t: next(leaves) if isinstance(t, keras.KerasTensor) else t, structure)
        with keras.StatelessScope():
            read.append(fn(*a, **k))

    jax.eval_shape(run, specs)
    return read[0]
