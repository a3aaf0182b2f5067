"""The backend seam: what differs between Keras backends on the explain path, behind a few names.

Everything above this package (the capture, the engine, the methods, post-processing) computes
with ``keras.ops``; only the module chosen here, by ``keras.backend.backend()``, touches the
backend's own library: ``tensorflow.py`` (``tf.function``, ``tf.GradientTape``), ``jax.py``
(``jax.jit``, ``jax.value_and_grad`` through zero perturbations), ``torch.py`` (eager autograd).
Each exports the same names:

``compile(body, signature, contexts=list) -> callable``
    ``body`` compiled once for ``signature`` (a list of structures of ``keras.KerasTensor`` or
    backend specs, batch axes ``None``), traced inside the context managers ``contexts()``
    returns (the capture's thread-aware patching of the user's layers). The callable takes arrays
    or tensors shaped like ``signature`` and returns backend tensors.
``layer_gradients(forward, x, n_layers, gradients=True, wrt_inputs=False, differentiable=False)``
    ``-> (aux, activations, gradients, input_gradients)``. ``forward(hook)`` runs the model once
    on ``x`` and returns ``(total_score, aux)`` (JAX and PyTorch call ``forward(hook, inputs)``
    with ``wrt_inputs``, and JAX calls it twice: it must start afresh); the capture's patched
    layers call ``hook(i, out) -> out`` on the i-th explained layer's raw output. The backend
    returns the hooked outputs, ``d total / d out_i`` (None unless ``gradients``) and
    ``d total / d x`` (flattened, None unless ``wrt_inputs``), zeros where the score does not
    depend on them.
    With ``differentiable=True`` the gradients can be differentiated again (``GuidedTraining``
    trains on a loss made of them): PyTorch takes them with ``create_graph=True`` and detaches
    nothing; TensorFlow's tape and JAX's ``grad`` need nothing for it.
``no_gradients()``
    A context that records no gradient: ``torch.no_grad()`` on PyTorch (an optimizer's update),
    nothing elsewhere.
``guided_relu(x)``
    ReLU with guided backpropagation's gradient ``dy * (x > 0) * (dy > 0)``.
``plain_relus(fn, shape, dtype) -> int``
    How many ReLUs without that gradient one run of ``fn`` (a model call) on an input of
    ``shape`` and ``dtype`` computes: ``Relu`` ops of the traced graph (TensorFlow), ``relu``
    calls of the jaxpr (JAX), ``torch.relu`` calls of one eager run on zeros (PyTorch).
``fused(body, *args)``
    Graph code: ``body(*args)``, fused by XLA where that pays (a ``jit_compile=True`` function
    inside TensorFlow's traced body; JAX's jitted body is fused as a whole; PyTorch runs it).
``map_sequential(fn, count, n_outputs)``
    Graph code: ``fn(i)`` for ``i in range(count)`` one at a time (memory holds one pass), its
    ``n_outputs`` float32 outputs stacked: ``tf.map_fn`` with ``parallel_iterations=1``,
    ``jax.lax.map``, a Python loop on PyTorch.
``abstract_call(fn, args, kwargs)``
    What ``fn(*args, **kwargs)`` returns, ``fn`` run once on abstract tensors shaped like the
    symbolic inputs (``keras.KerasTensor``; sizes left unknown, ``None``, only where
    ``UNKNOWN_SIZES`` is True: TensorFlow) in ``args`` and ``kwargs`` (other
    values as they are), nothing computed; ``fn`` returns plain Python data, the shapes it read of
    what it called (the probe of the layers inside a subclassed layer,
    :mod:`keras_gradcam.core.sublayers`). A ``tf.function`` traced once; :func:`jax.eval_shape`;
    torch's ``meta`` device (eagerly on zeros where an op has no meta kernel, so ``fn`` must start afresh).
``on_host(fn, *tensors) -> tensors``
    Graph code: ``fn(*arrays)`` run on the host with the tensors' values each time the compiled
    function runs (a target's check of its data, a warning), the tensors returned unchanged (use
    them, so that the call is ordered before their uses): ``tf.py_function``,
    ``jax.debug.callback``, a plain call on PyTorch. An exception ``fn`` raises reaches the caller
    wrapped in the backend's runtime error, its message kept (:func:`~keras_gradcam.core.device.device_errors`
    says a target's own as the ``ValueError`` it is).
``stateless_normal(shape, (seed, i))``, ``stateless_normals(shape, seed, ids)``
    Standard normal noise from a seed pair (one draw per id of ``ids``): the same numbers on every
    run and machine, drawn by the backend's own counter-based generator, so the numbers differ
    between backends (``tf.random.stateless_normal``, ``jax.random`` keys, numpy's ``default_rng((seed, i))`` on PyTorch).
"""

from __future__ import annotations

from typing import Any

import keras

name = keras.backend.backend()
if name == "tensorflow":
    from . import tensorflow as _impl
elif name == "jax":
    from . import jax as _impl
elif name == "torch":
    from . import torch as _impl
else:
    raise ImportError(
        f"keras-gradcam explains models on the TensorFlow, JAX and PyTorch backends; KERAS_BACKEND is {name!r}. "
        "Set KERAS_BACKEND to tensorflow, jax or torch before importing keras."
    )

# the names every backend module exports (see above), from the one chosen
Compiled = _impl.Compiled
UNKNOWN_SIZES = _impl.UNKNOWN_SIZES
abstract_call = _impl.abstract_call
compile = _impl.compile  # noqa: A001 - the seam's name
fused = _impl.fused
guided_relu = _impl.guided_relu
layer_gradients = _impl.layer_gradients
map_sequential = _impl.map_sequential
no_gradients = _impl.no_gradients
on_host = _impl.on_host
plain_relus = _impl.plain_relus
stateless_normal = _impl.stateless_normal
stateless_normals = _impl.stateless_normals

__all__ = ["name", "UNKNOWN_SIZES", "abstract_call", "compile", "fused", "guided_relu", "layer_gradients", "map_sequential", "no_gradients", "on_host", "plain_relus",
           "stateless_normal", "stateless_normals", "Compiled", "Tensor", "TENSORFLOW_ONLY", "NOT_YET",
           "check_supported"]

Tensor = Any  # a tensor of the running backend (tf.Tensor, jax.Array, torch.Tensor), for annotations

# what runs on TensorFlow only (none today; the mechanism stays for what comes)
TENSORFLOW_ONLY: frozenset = frozenset()

# what does not run yet on a backend, by method name (none today; the mechanism stays for what comes)
NOT_YET: dict[str, frozenset] = {}


def check_supported(what: str, display: str | None = None) -> None:
    """Raise ``NotImplementedError`` naming this process's backend if ``what`` does not run on it.

    ``what`` needs TensorFlow (:data:`TENSORFLOW_ONLY`), or does not run on this backend yet
    (:data:`NOT_YET`): a clear error before any work, not a TensorFlow op failing inside a trace.

    Parameters
    ----------
    what : str
        A method's name (``"scorecam"``) or ``"guided-training"``.
    display : str, optional
        How to name it in the message (a method's display name).
    """
    if name != "tensorflow" and what in TENSORFLOW_ONLY:
        raise NotImplementedError(
            f"{display or what} runs on the TensorFlow backend only, and Keras runs the {name!r} backend here "
            f"(KERAS_BACKEND={name}). Pick another method (e.g. 'gradcam' or 'gradcam++', which run on every "
            "backend), or set KERAS_BACKEND=tensorflow before importing keras."
        )
    if what in NOT_YET.get(name, ()):
        raise NotImplementedError(
            f"{display or what} does not run on the {name!r} backend yet (KERAS_BACKEND={name}): its passes still "
            "call TensorFlow ops (see docs/backends.md). Pick a method that runs on every backend (e.g. 'gradcam', "
            "'gradcam++', 'layercam', 'eigencam'), or set KERAS_BACKEND=tensorflow before importing keras."
        )
