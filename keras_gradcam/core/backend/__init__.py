"""The backend seam: what differs between Keras backends on the explain path, behind a few names.

Everything above this package (the capture, the engine, the methods, post-processing) computes
with ``keras.ops``; only the module chosen here, by ``keras.backend.backend()``, touches the
backend's own library (TensorFlow's ``tf.function`` and ``tf.GradientTape``). A JAX or PyTorch
implementation is a sibling module exporting the same names:

``compile(body, signature, contexts=list) -> callable``
    ``body`` compiled once for ``signature`` (a list of structures of ``keras.KerasTensor`` or
    backend specs, batch axes ``None``), traced inside the context managers ``contexts()``
    returns (the capture's thread-aware patching of the user's layers). The callable takes arrays
    or tensors shaped like ``signature`` and returns backend tensors.
``layer_gradients(forward, x, n_layers, gradients=True, wrt_inputs=False)``
    ``-> (aux, activations, gradients, input_gradients)``. ``forward(hook)`` runs the model once
    on ``x`` and returns ``(total_score, aux)``; the capture's patched layers call
    ``hook(i, out) -> out`` on the i-th explained layer's raw output. The backend returns the
    hooked outputs, ``d total / d out_i`` (None unless ``gradients``) and ``d total / d x``
    (flattened, None unless ``wrt_inputs``), zeros where the score does not depend on them.
"""

from __future__ import annotations

import keras

name = keras.backend.backend()
if name == "tensorflow":
    from .tensorflow import Compiled, compile, layer_gradients  # noqa: A004 - the seam's name
else:
    raise ImportError(
        f"keras-gradcam explains models on the TensorFlow backend; KERAS_BACKEND is {name!r}. Set "
        "KERAS_BACKEND=tensorflow before importing keras."
    )

__all__ = ["name", "compile", "layer_gradients", "Compiled"]
