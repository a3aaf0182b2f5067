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
``layer_gradients(forward, x, n_layers, gradients=True, wrt_inputs=False)``
    ``-> (aux, activations, gradients, input_gradients)``. ``forward(hook)`` runs the model once
    on ``x`` and returns ``(total_score, aux)`` (JAX and PyTorch call ``forward(hook, inputs)``
    with ``wrt_inputs``, and JAX calls it twice: it must start afresh); the capture's patched
    layers call ``hook(i, out) -> out`` on the i-th explained layer's raw output. The backend
    returns the hooked outputs, ``d total / d out_i`` (None unless ``gradients``) and
    ``d total / d x`` (flattened, None unless ``wrt_inputs``), zeros where the score does not
    depend on them.
``guided_relu(x)``
    ReLU with guided backpropagation's gradient ``dy * (x > 0) * (dy > 0)``.
``plain_relus(fn, shape, dtype) -> int``
    How many ReLUs without that gradient one run of ``fn`` (a model call) on an input of
    ``shape`` and ``dtype`` computes: ``Relu`` ops of the traced graph (TensorFlow), ``relu``
    calls of the jaxpr (JAX), ``torch.relu`` calls of one eager run on zeros (PyTorch).
"""

from __future__ import annotations

from typing import Any

import keras

name = keras.backend.backend()
if name == "tensorflow":
    from .tensorflow import Compiled, compile, guided_relu, layer_gradients, plain_relus  # noqa: A004 - the seam's name
elif name == "jax":
    from .jax import Compiled, compile, guided_relu, layer_gradients, plain_relus  # noqa: A004 - the seam's name
elif name == "torch":
    from .torch import Compiled, compile, guided_relu, layer_gradients, plain_relus  # noqa: A004 - the seam's name
else:
    raise ImportError(
        f"keras-gradcam explains models on the TensorFlow, JAX and PyTorch backends; KERAS_BACKEND is {name!r}. "
        "Set KERAS_BACKEND to tensorflow, jax or torch before importing keras."
    )

__all__ = ["name", "compile", "guided_relu", "layer_gradients", "plain_relus", "Compiled", "Tensor", "TENSORFLOW_ONLY", "NOT_YET",
           "check_supported"]

Tensor = Any  # a tensor of the running backend (tf.Tensor, jax.Array, torch.Tensor), for annotations

# what runs on TensorFlow only: GuidedTraining differentiates the map inside its own train_step with
# two GradientTapes (training/guided.py)
TENSORFLOW_ONLY = frozenset({"guided-training"})

# what does not run yet on a backend, by method name: the channel-perturbation driver
# (methods/perturbation.py) and the seeded noise (core/noise.py) still call TensorFlow ops, and so do
# Integrated Grad-CAM's path points and Ablation-CAM's edits under jax.jit (tests/test_backends.py)
_PERTURBATION = frozenset({"scorecam", "sscam", "iscam", "smoothgradcam++"})
NOT_YET = {"jax": _PERTURBATION | {"ablationcam", "integrated-gradcam"}, "torch": _PERTURBATION}


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
