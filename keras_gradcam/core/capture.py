"""One forward and one backward pass of a batch, recording the chosen layers.

:class:`Capture` runs the user's model once (``training=False``) and records the outputs of the
chosen layers and the gradient of the explained score with respect to them, for a whole batch in
one forward and one backward pass. The differentiation itself is the backend's
(:func:`keras_gradcam.core.backend.layer_gradients`, a ``tf.GradientTape`` on TensorFlow); this
module uses ``keras.ops`` only. It works for any model structure, nested sub-models included,
because it does not rebuild the graph: while a compiled function is being traced it wraps the
chosen layers' ``call`` so that their outputs reach the backend's hook, and it restores every
attribute it touched in a ``finally`` block. Outside tracing the model is never touched.

Summing the per-sample scores before differentiating is exact: in inference mode sample *b*'s
score depends only on sample *b* (no layer mixes samples at inference).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import keras

from . import backend
from .binary import two_classes
from .layers import LayerInfo, output_layer
from .patching import TRACE_LOCK, thread_patches
from .targets import batch_of, class_scores
from .tokens import to_grid

__all__ = ["Capture", "Captured", "TRACE_LOCK", "thread_patches", "link_edit", "output_link"]

@dataclass
class Captured:
    """What one forward/backward pass of a batch gives (all float32, channels last)."""

    activations: list  # per layer: (B, *spatial, K)
    gradients: list | None  # per layer: same shapes, d score / d activations
    scores: Any  # (B,) explained score
    targets: Any  # (B,) int32 explained class, -1 for callable targets
    predictions: Any  # (B,) int32 top-1 class, -1 when the output is not (B, classes)
    num_classes: int | None = None  # static size of the explained class axis
    output: Any | None = None  # the explained output (B, ...) as computed (logits by default)
    zero_gradients: Any | None = None  # (B,) bool: every gradient of the sample is exactly 0
    probability_rows: Any | None = None  # (B,) bool: logits wanted, but the output row is a distribution
    input_gradients: list | None = None  # per model input (flattened): d score / d input, if asked


LINKS = ("softmax", "sigmoid")  # output activations removed to explain logits


def output_link(layer) -> tuple[str, str] | None:
    """The softmax or sigmoid that ``layer`` applies, if any: ``(link, where)``.

    ``where`` is ``"layer"`` for a ``keras.layers.Softmax`` layer and ``"activation"`` for a layer
    whose ``activation`` is the link (``Dense(..., activation="sigmoid")``, ``Activation("softmax")``).
    """
    if isinstance(layer, keras.layers.Softmax):
        return "softmax", "layer"
    name = getattr(getattr(layer, "activation", None), "__name__", "")
    return (name, "activation") if name in LINKS else None


def link_edit(head, where: str) -> tuple:
    """The attribute change that makes ``head`` (see :func:`output_link`) give logits.

    ``(object, attribute, replacement)``, to apply with :func:`thread_patches`.
    """
    if where == "layer":
        return head, "call", _identity_call
    return head, "activation", _linear


def _identity_call(inputs, *args, **kwargs):
    return inputs


def _linear(x):
    return x


class Capture:
    """Record layer activations and score gradients of a Keras model for a batch.

    Parameters
    ----------
    model : keras.Model
        The user's model; it is called with ``training=False`` and never modified.
    layers : list of LayerInfo
        The layers whose outputs (and gradients) are recorded.
    output : int or str, optional
        Which output of a multi-output model is explained by class-index targets.
    score : {"logit", "output"}, default="logit"
        ``"logit"`` explains the score before the link when the selected output ends in a softmax
        or a sigmoid (a ``Softmax`` layer, or a layer with ``activation="softmax"`` or
        ``"sigmoid"``); ``"output"`` explains the output as the model gives it.
    head : (link, logits), optional
        What the explained output is, where the model's own head no longer says it: its link
        (``"softmax"``, ``"sigmoid"`` or None) and whether the output is taken before it (the
        guided copy, whose head was replaced). Read from the model when not given.

    Notes
    -----
    A one-unit sigmoid output (``Dense(1, activation="sigmoid")``, a binary classifier) is
    explained as two classes, 1 the positive and 0 the negative one (the convention of
    pytorch-grad-cam's ``BinaryClassifierOutputTarget``): with ``s`` the logit and ``p`` the
    probability, class scores are ``[-s, s]`` before the sigmoid and ``[1 - p, p]`` after it,
    so top-1 is the predicted class and labels 0/1 are valid targets.
    """

    def __init__(self, model: keras.Model, layers: Sequence[LayerInfo], output=None, score: str = "logit", head=None):
        if score not in ("logit", "output"):
            raise ValueError(f"score must be 'logit' or 'output'; got {score!r}.")
        self.model = model
        self.layers = list(layers)
        self.output_index = self._output_index(output)
        self.score = score
        self._head = output_layer(model, self.output_index or 0)
        found = output_link(self._head) if self._head is not None else None
        self._strip = found[1] if found and score == "logit" else None  # removed while tracing
        # the head's softmax/sigmoid, and whether the explained output is taken before it
        self.link, self.logits = head or (found[0] if found else None, score == "logit" or found is None)
        self._hook = None
        self._edit = None
        self._records: list[list] = []

    # -- model outputs -------------------------------------------------------------------------
    def _output_index(self, output) -> int | None:
        """Position of the explained output in ``keras.tree.flatten(outputs)`` order."""
        names = list(getattr(self.model, "output_names", None) or [])
        n_out = len(getattr(self.model, "outputs", None) or []) or 1
        structure = getattr(self.model, "output", None) if getattr(self.model, "built", False) else None
        if output is None:
            return None if n_out > 1 else 0
        if isinstance(output, str) and isinstance(structure, dict) and output in structure:
            keys = keras.tree.flatten({k: k for k in structure})  # dict keys in flatten order
            return keys.index(output)
        if isinstance(output, str):
            if output not in names:
                raise ValueError(f"output={output!r} is not an output of the model; its outputs are {names}.")
            return names.index(output)
        if isinstance(output, int) and 0 <= output < n_out:
            return output
        raise ValueError(f"output={output!r} is out of range: the model has {n_out} output(s) {names}.")

    def select(self, outputs):
        """The output explained by class-index targets (a binary sigmoid unit as two classes)."""
        flat = keras.tree.flatten(outputs)
        if len(flat) == 1:
            out = flat[0]
        elif self.output_index is None:
            names = list(outputs) if isinstance(outputs, dict) else list(getattr(self.model, "output_names", []))
            raise ValueError(self._ambiguous(names))
        else:
            out = flat[self.output_index]
        return two_classes(out, probability=not self.logits) if self.link == "sigmoid" else out

    def num_classes(self) -> int | None:
        """Static size of the explained class axis, from the model's symbolic outputs (None if unknown)."""
        try:
            out = self.select(list(self.model.outputs))
        except (AttributeError, TypeError, ValueError):
            return None
        shape = tuple(out.shape)
        return int(shape[-1]) if len(shape) == 2 and shape[-1] is not None else None

    def probabilities(self, out: Any) -> Any:
        """The explained output ``(B, classes)`` as probabilities, its link applied exactly once.

        A head kept as it is (``score="output"``) already gives them; otherwise the head's own
        sigmoid (multi-label and one-unit binary heads), else a softmax over the class axis.
        """
        if not self.logits:
            return out
        return keras.ops.sigmoid(out) if self.link == "sigmoid" else keras.ops.softmax(out, axis=-1)

    @staticmethod
    def _ambiguous(names) -> str:
        return (
            f"the model has several outputs {names}; say which one class targets refer to with "
            "output=<index or name>, or pass a callable target, e.g. targets=lambda out: out[1][:, 0]."
        )

    # -- tracing-time interception -------------------------------------------------------------
    @contextlib.contextmanager
    def sharing(self, join: Callable):
        """While a function is traced: every model call takes ``join(x)``, the batch ``x`` with the inputs
        given whole to every batch (``shared_inputs=``: CLIP's texts) put back in place."""
        self._join = join
        try:
            yield
        finally:
            self._join = None

    def active(self):
        """Wrap the chosen layers (and a softmax/sigmoid head, for logits) while a function is traced.

        A context manager (:func:`thread_patches`): the wrappers act in the tracing thread only,
        and everything is undone in ``finally``, also when tracing raises.
        """
        edits = [(info.layer, "call", self._recording_call(info.layer.call, i)) for i, info in enumerate(self.layers)]
        if self._strip is not None:
            edits.append(link_edit(self._head, self._strip))
        return thread_patches(edits)

    def _recording_call(self, call: Callable, i: int) -> Callable:
        def recording_call(*args, **kwargs):
            out = call(*args, **kwargs)
            if self._edit is not None:
                out = self._edit(i, out)
            if self._hook is not None:
                out = self._hook(i, out)
            self._records[i].append(out)
            return out

        return recording_call

    # -- the pass ------------------------------------------------------------------------------
    def __call__(
        self, x, targets, gradients: bool = True, edit=None, input_gradients: bool = False, output_gradients: bool = False
    ) -> Captured:
        """One forward (and backward) pass of ``x``; call inside a function traced under :meth:`active`.

        ``targets`` is a :class:`~keras_gradcam.core.targets.TargetBatch` (a target with its data
        for this batch), an int32 tensor ``(B,)`` of classes (``-1`` = the top-1 class of that
        sample) or a callable ``outputs -> (B,)`` scores. ``edit(i, out) -> out``, if given, replaces the output
        of the i-th recorded layer in the forward pass (e.g. to ablate channels); it receives the
        layer's raw output (a token layer's ``(B, tokens, channels)``, channels first where the
        layer is), and what is recorded is the edited tensor. ``input_gradients=True`` also differentiates the score with respect
        to the model's inputs (guided backpropagation). ``output_gradients=True`` differentiates it with respect to the
        model's outputs too, only to say per sample whether the score has no gradient at all
        (``Captured.zero_gradients``: the score, e.g. an ``argmax``, and not the network, is then why
        nothing comes back); the layers' own ``zero_gradients`` are then not computed. The
        differentiation is the backend's (:func:`keras_gradcam.core.backend.layer_gradients`).
        """
        batch = batch_of(targets)
        self._records = [[] for _ in self.layers]
        n = len(self.layers)
        n_outputs = len(keras.tree.flatten(self.model.outputs)) if output_gradients else 0

        def forward(hook, xs=x):  # JAX and PyTorch pass the inputs to differentiate with respect to
            self._hook, self._edit = hook, edit
            try:
                join = getattr(self, "_join", None)
                outputs = self.model(xs if join is None else join(xs), training=False)
            finally:
                self._hook = self._edit = None
            for i in range(n):
                self._single(i)
            if n_outputs:  # each output through the hook too, as if it were one more layer
                leaves = keras.tree.flatten(outputs)
                outputs = keras.tree.pack_sequence_as(outputs, [hook(n + j, o) for j, o in enumerate(leaves)])
            found = self._scores(outputs, batch)
            return keras.ops.sum(found[0]), found

        found, raw, grads, wrt_inputs = backend.layer_gradients(
            forward, x, n + n_outputs, gradients=gradients or bool(n_outputs), wrt_inputs=input_gradients
        )
        scores, resolved, predictions, selected = found
        zero = None
        if n_outputs:
            per_output = [g for o, g in zip(raw[n:], grads[n:]) if o is not None and g is not None and len(o.shape) > 0]
            raw, grads = raw[:n], (grads[:n] if gradients else None)
            zero = self._all_zero(per_output) if per_output else keras.ops.zeros_like(scores, "bool")
        if grads is not None:
            grads = [self._standard(g, info) for g, info in zip(grads, self.layers)]
        acts = [self._standard(a, info) for a, info in zip(raw, self.layers)]
        if grads and zero is None:
            zero = self._all_zero(grads)
        num_classes = selected.shape[-1] if selected is not None else None
        return Captured(
            acts, grads, scores, resolved, predictions, num_classes, selected, zero, self._distribution_rows(selected), wrt_inputs
        )

    @staticmethod
    def _all_zero(grads: list):
        """Per sample, whether every gradient of ``grads`` (each ``(B, ...)``) is exactly zero."""
        per_tensor = [keras.ops.all(keras.ops.reshape(g, [keras.ops.shape(g)[0], -1]) == 0, axis=1) for g in grads]
        return keras.ops.all(keras.ops.stack(per_tensor), axis=0)

    def _scores(self, outputs, batch):
        """``(scores, resolved classes, predictions, selected output or None)`` of a batch's outputs."""
        selected = self.select(outputs) if batch.names_classes else None
        scores = keras.ops.cast(batch.score(outputs, self), "float32")
        if len(scores.shape) != 1:
            raise ValueError(
                "a callable target must return one score per sample, shape (N,); "
                f"it returned shape {tuple(scores.shape)}. Reduce the other axes, e.g. with tf.reduce_sum."
            )
        resolved = batch.classes(outputs, self)
        if selected is not None:
            predictions = class_scores(selected, None)[2]
        else:
            try:
                predictions = class_scores(self.select(outputs), None)[2]
            except ValueError:
                predictions = -keras.ops.ones_like(scores, "int32")
        if resolved is None:
            resolved = -keras.ops.ones_like(scores, "int32")
        return scores, resolved, predictions, selected

    def _distribution_rows(self, selected):
        """Per sample, whether logits were asked for but the output row is a probability distribution.

        True where no softmax/sigmoid head was found to remove (a softmax inside a ``Lambda``, or
        after layers the head detection does not see through) and the row is non-negative and sums
        to one: then probabilities, not logits, are explained.
        """
        if selected is None or self.link is not None or self.score != "logit" or len(selected.shape) != 2:
            return None
        if selected.shape[-1] is not None and selected.shape[-1] < 2:
            return None
        out = keras.ops.cast(selected, "float32")
        return keras.ops.all(out >= 0, axis=-1) & (keras.ops.abs(keras.ops.sum(out, axis=-1) - 1.0) < 1e-4)

    def _single(self, i: int):
        info, rec = self.layers[i], self._records[i]
        if len(rec) != 1:
            raise ValueError(
                f"layer {info.path!r} was called {len(rec)} times in one forward pass; keras-gradcam "
                "needs a layer that runs exactly once. Pick another layer (a shared layer has no single map)."
            )
        out = rec[0]
        if not keras.ops.is_tensor(out):
            raise ValueError(f"layer {info.path!r} returns {type(out).__name__}, not a single tensor; pick another layer.")
        return out

    @staticmethod
    def _standard(t, info: LayerInfo):
        """float32, channels last; a token layer's patch tokens on their grid (prefix tokens dropped).

        Applied alike to activations and gradients: the reshape is linear, so the gradient of the
        score with respect to the grid is the reshaped gradient of the patch tokens.
        """
        t = keras.ops.cast(t, "float32")
        if info.tokens:
            return to_grid(t, info.grid, info.prefix_tokens, info.reshape)
        if info.channels_first:
            rank = len(t.shape)
            t = keras.ops.transpose(t, [0] + list(range(2, rank)) + [1])
        return t
