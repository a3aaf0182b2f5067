"""The backend seam on PyTorch: eager autograd.

:func:`layer_gradients` keeps each explained layer's output as the capture's hook sees it and asks
:func:`torch.autograd.grad` for ``d total / d output`` (None, where the score does not depend on
the output, becomes zeros). An output that does not require a gradient (a frozen backbone, whose
weights do not) is replaced by a detached copy that does, so the layers after it are
differentiated from there. The user's variables are read, never assigned; no ``.grad`` is
accumulated (``autograd.grad`` returns the gradients instead).

:func:`compile` runs the body eagerly: ``torch.compile`` did not pay for these bodies (see
docs/backends.md for what was measured), and the body's Python (the capture's patching) then
runs on every call. It runs under ``torch.no_grad()``; :func:`layer_gradients` turns gradients
back on for its own pass only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import keras
import numpy as np
import torch

__all__ = ["Compiled", "UNKNOWN_SIZES", "abstract_call", "compile", "fused", "guided_relu", "layer_gradients", "map_sequential", "no_gradients", "on_host", "plain_relus",
           "stateless_normal", "stateless_normals", "to_numpy"]


class Compiled:
    """``body`` run eagerly under ``torch.no_grad()`` on the arguments as tensors of keras' device."""

    def __init__(self, body: Callable, signature, contexts: Callable = list):
        self.body = body
        self.contexts = contexts
        self.signature = signature

    def _inputs(self, args) -> tuple:
        specs = self.signature if isinstance(self.signature, (list, tuple)) and len(self.signature) == len(args) else None
        out = []
        for j, a in enumerate(args):
            leaves = keras.tree.flatten(specs[j]) if specs is not None else []
            flat = keras.tree.flatten(a)
            dtypes = [getattr(getattr(s, "dtype", None), "name", getattr(s, "dtype", None)) for s in leaves]
            if len(dtypes) != len(flat):
                dtypes = [None] * len(flat)
            converted = [keras.ops.convert_to_tensor(v, dtype=d) for v, d in zip(flat, dtypes)]
            out.append(keras.tree.pack_sequence_as(a, converted))
        return tuple(out)

    def __call__(self, *args):
        args = self._inputs(args)
        with torch.no_grad(), contextlib.ExitStack() as stack:
            for ctx in self.contexts():
                stack.enter_context(ctx)
            return self.body(*args)


def compile(body: Callable, signature, contexts: Callable = list) -> Callable:  # noqa: A001 - the seam's name
    """``body`` run eagerly (no compilation; see the module docstring), arguments as torch tensors.

    Parameters
    ----------
    body : callable
        ``body(*args)`` in graph code (``keras.ops``).
    contexts : callable, default=list
        Returns the context managers to enter around the body (the capture's patching): eager
        runs the body's Python on every call, so they are entered on every call.
    signature : list
        One spec (``.dtype``) or a nest of them per argument; the arguments are cast to its dtypes.
    """
    return Compiled(body, signature, contexts)


def layer_gradients(forward: Callable, x, n_layers: int, gradients: bool = True, wrt_inputs: bool = False,
                    differentiable: bool = False):
    """The explained layers' outputs and ``d total / d output`` for one batch, on PyTorch.

    Same contract as the JAX and TensorFlow versions: ``forward(hook) -> (total, aux)``, called as
    ``forward(hook, inputs)`` with ``wrt_inputs`` (``x`` with its floating leaves requiring a
    gradient); returns ``(aux, activations, gradients, input_gradients)``, gradients zero where
    the score does not depend on the output (None unless ``gradients``), ``input_gradients`` one
    per leaf of ``x`` (zeros for integer leaves) or None. With ``differentiable`` the gradients
    are taken with ``create_graph=True`` and nothing is detached: a loss made of them can be
    differentiated again (``GuidedTraining``'s ``loss.backward()``).
    """
    if not gradients and not wrt_inputs:
        kept: list = [None] * n_layers

        def keep(i, out):
            kept[i] = out if kept[i] is None else kept[i]
            return out

        with torch.no_grad():
            _, aux = forward(keep)
        return aux, kept, None, None
    leaves = [keras.ops.convert_to_tensor(v) for v in keras.tree.flatten(x)]
    with torch.enable_grad():
        wrt = [i for i, v in enumerate(leaves) if wrt_inputs and torch.is_floating_point(v)]
        for i in wrt:
            leaves[i] = leaves[i].detach().requires_grad_(True)
        outs: list = [None] * n_layers

        def hook(i, out):
            if outs[i] is None:  # a layer called again keeps its first output (the capture refuses it)
                if gradients and torch.is_tensor(out) and torch.is_floating_point(out) and not out.requires_grad:
                    out = out.detach().requires_grad_(True)
                outs[i] = out
            return out

        total, aux = forward(hook, keras.tree.pack_sequence_as(x, leaves)) if wrt_inputs else forward(hook)
        layer_sources = [o for o in outs if torch.is_tensor(o) and o.requires_grad] if gradients else []
        sources = layer_sources + [leaves[i] for i in wrt]
        got = [None] * len(sources)
        if sources and torch.is_tensor(total) and total.requires_grad:
            got = list(torch.autograd.grad(total, sources, allow_unused=True, create_graph=differentiable))
    got.reverse()

    def take(ref):
        g = got.pop()
        if g is None:
            return torch.zeros_like(ref, dtype=torch.float32)
        return g if differentiable else g.detach()

    grads = None
    if gradients:
        grads = [
            None if o is None else (take(o) if torch.is_tensor(o) and o.requires_grad else torch.zeros_like(o, dtype=torch.float32))
            for o in outs
        ]
    input_grads = None
    if wrt_inputs:
        input_grads = [torch.zeros_like(v, dtype=torch.float32) for v in leaves]
        for i in wrt:
            input_grads[i] = take(leaves[i])
    if differentiable:
        return aux, outs, grads, input_grads
    outs = [o.detach() if torch.is_tensor(o) else o for o in outs]
    return _detached(aux), outs, grads, input_grads


def no_gradients():
    """A context in which autograd records nothing: ``torch.no_grad()`` (an optimizer's update)."""
    return torch.no_grad()


def _detached(tree):
    return keras.tree.map_structure(lambda t: t.detach() if torch.is_tensor(t) else t, tree)


class _GuidedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return dy * (x > 0).to(dy.dtype) * (dy > 0).to(dy.dtype)


def guided_relu(x):
    """ReLU whose gradient passes only where the input and the incoming gradient are positive.

    Springenberg et al. 2015's guided backpropagation: ``dy * (x > 0) * (dy > 0)``; the same rule
    as the TensorFlow and JAX versions (the public, documented name is
    :func:`keras_gradcam.methods.guided_model.guided_relu`). Keras' ``ops.custom_gradient`` has
    no PyTorch implementation, hence a ``torch.autograd.Function``, whose forward pass is a
    ``clamp`` (so :func:`plain_relus` does not count it).
    """
    return _GuidedReLU.apply(x)


def fused(body: Callable, *args):
    """``body(*args)``, eagerly (see :func:`compile`)."""
    return body(*args)


def map_sequential(fn: Callable, count: int, n_outputs: int):
    """``fn(i)`` for ``i in range(count)``, one after the other (eagerly), each output stacked on a new first axis."""
    outs = [fn(i) for i in range(int(count))]
    return tuple(torch.stack([o[j] for o in outs]) for j in range(n_outputs))


def _normal(shape, seed: int, i: int) -> torch.Tensor:
    # numpy's generator seeded by the pair (a SeedSequence: distinct pairs give independent streams; torch's own
    # manual_seed keeps 32 bits), on the CPU, then moved: the same numbers on every run, machine and device
    rng = np.random.default_rng([int(seed) % 2**64, int(i) % 2**64])
    return torch.from_numpy(rng.standard_normal(tuple(shape), dtype=np.float32))


def _device():
    return keras.ops.convert_to_tensor(0.0).device


def stateless_normal(shape, seed: tuple[int, int], dtype="float32"):
    """Standard normal noise of ``shape`` from the seed pair ``seed``: numpy's ``default_rng(seed)``."""
    return _normal(shape, *seed).to(device=_device(), dtype=getattr(torch, keras.backend.standardize_dtype(dtype)))


def stateless_normals(shape, seed: int, ids):
    """One float32 draw of ``shape`` per entry ``i`` of the int tensor ``ids``, from the pair ``(seed, i)``.

    Eager PyTorch has no vectorised counter-based draw: one generator per id (a draw per perturbed copy
    of a forward pass, so the loop is short next to the pass it feeds).
    """
    ids = keras.ops.convert_to_numpy(ids).reshape(-1).tolist()
    draws = [_normal(shape, seed, i) for i in ids]
    out = torch.stack(draws) if draws else torch.zeros((0, *tuple(shape)))
    return out.to(_device())


# the torch functions a ReLU is computed with: Keras' relu on PyTorch calls torch.nn.functional.relu
_RELUS = frozenset({torch.relu, torch.relu_, torch.nn.functional.relu, torch.nn.functional.relu_,
                    torch.Tensor.relu, torch.Tensor.relu_})


class _CountReLUs(torch.overrides.TorchFunctionMode):
    """Counts the calls of the functions of ``_RELUS`` made while it is active."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _RELUS:
            self.count += 1
        return func(*args, **(kwargs or {}))


def _concrete(shape) -> tuple:
    """``shape`` with a ``None`` batch axis as 1 and other ``None`` axes (an image of any size) as 64."""
    return tuple((1 if i == 0 else 64) if d is None else d for i, d in enumerate(shape))


def plain_relus(fn: Callable, shape: tuple, dtype) -> int:
    """How many ReLUs without the guided gradient one run of ``fn`` (a model call) computes.

    PyTorch has no graph to read before running: ``fn`` runs once, eagerly and without gradients,
    on zeros of ``shape`` (a ``None`` batch axis taken as 1, other ``None`` axes as 64) and
    ``dtype``, and every call of ``torch.relu`` / ``torch.nn.functional.relu`` / ``Tensor.relu``
    (what ``keras.ops.relu`` and every Keras ReLU call on PyTorch) is counted; :func:`guided_relu`
    computes its forward pass with ``clamp`` and is not. A custom layer's ``keras.ops.relu`` or ``torch.relu`` is counted
    too; a ReLU written as ``torch.clamp(x, min=0)`` is not (nor is ``tf.maximum`` in
    TensorFlow's count).
    """
    x = keras.ops.zeros(_concrete(shape), dtype)
    counter = _CountReLUs()
    with torch.no_grad(), counter:
        fn(x)
    return counter.count


def to_numpy(t) -> np.ndarray:
    """A torch tensor (or anything array-like) as a numpy array."""
    return keras.ops.convert_to_numpy(t)


def on_host(fn: Callable, *tensors) -> tuple:
    """Graph code: ``fn(*arrays)`` on the host, now (the body runs eagerly); returns ``tensors``."""
    fn(*[keras.ops.convert_to_numpy(t) for t in tensors])
    return tuple(tensors)


# whether abstract_call takes a size left unknown (None) in its inputs; the probe gives such a size two values in two runs instead
UNKNOWN_SIZES = False


def abstract_call(fn: Callable, args: tuple, kwargs: dict):
    """What ``fn(*args, **kwargs)`` returns, run on tensors of torch's ``meta`` device (nothing is computed).

    Every ``keras.KerasTensor`` in ``args`` and ``kwargs`` (all sizes known) becomes a tensor of
    its shape and dtype; other values (``training=False``) are passed as they are. ``fn`` returns
    plain Python data (the shapes it read). Where an op has no ``meta`` kernel, ``fn`` runs again,
    eagerly on zeros of keras' device (as keras' own ``compute_output_spec`` does), so ``fn`` must
    start afresh on each run. Under ``torch.no_grad()`` and a :class:`keras.StatelessScope`: no
    gradient is kept, no variable assigned.
    """

    def run(meta: bool):
        place = keras.device("meta") if meta else contextlib.nullcontext()
        with place, torch.no_grad(), keras.StatelessScope():
            a, k = keras.tree.map_structure(
                lambda t: keras.ops.zeros(tuple(t.shape), t.dtype) if isinstance(t, keras.KerasTensor) else t,
                (tuple(args), dict(kwargs)),
            )
            return fn(*a, **k)

    try:
        return run(True)
    except Exception:  # noqa: BLE001 - an op without a meta kernel: run it on zeros instead
        return run(False)
