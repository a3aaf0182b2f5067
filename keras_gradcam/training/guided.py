"""``GuidedTraining``: fit a model so that its Grad-CAM lies inside human annotation masks and its shortcut goes."""

from __future__ import annotations

import warnings

import keras
import tensorflow as tf
from keras import ops

from ..core import backend
from ..core.capture import output_link, thread_patches
from ..core.layers import LayerSpec, ensure_built, output_layer, resolve_layer
from ..core.validate import one_of, positive_float
from .alignment import (
    LOSSES,
    alignment_loss,
    annotated,
    class_indices,
    composite_loss,
    composites,
    compute_dtype,
    gradcam_map,
    input_gradient_map,
    inside_share,
    label_scores,
    layer_masks,
)
from .masks import checked_masks, reraised
from .report import progress_warning

__all__ = ["GuidedTraining"]

SCORES = ("logit", "contrast", "log_prob", "sum_log_prob")
_MODULE_CALL = object()  # forward() called without labels: PyTorch's nn.Module running the model
METHODS = ("gradcam", "input_gradient")


def _no_terms() -> dict:
    """The terms of a batch without masks: no alignment, no composites."""
    return {"align": ops.convert_to_tensor(0.0), "counterfactual": ops.convert_to_tensor(0.0), "inside": None}


class GuidedTraining(keras.Model):
    """Train ``model`` with a penalty on the Grad-CAM evidence that lies outside annotation masks.

    A ``keras.Model`` that wraps the user's model: its variables are the user's model's own
    (training the wrapper trains ``model`` in place), ``predict`` and ``evaluate`` give what
    ``model`` gives, and ``model`` is saved as usual (``model.save``; its architecture is not
    changed). The data yields ``(x, y, masks)``: ``masks`` of shape ``(batch, height, width)``
    at the input's resolution, values in [0, 1], 1 where the evidence should be. A mask that is
    all zeros or all ones means "no annotation" for that sample; ``(x, y)`` is plain training.

    Parameters
    ----------
    model : keras.Model
        A built single-output classifier (logits, or a softmax/sigmoid head, which is looked
        through to its logits the way :func:`keras_gradcam.explain` does).
    layer : None, str or keras.Layer, default=None
        The layer whose Grad-CAM is aligned (as in :func:`keras_gradcam.explain`; ``None`` is the
        last spatial feature map). It must run once per forward pass and be channels-last or
        channels-first spatial (token layers are not supported yet).
    method : {"gradcam", "input_gradient"}, default="gradcam"
        The map that is aligned: the layer's Grad-CAM, or ``"input_gradient"``, the squared
        gradient of the score with respect to the input pixels (Ross et al.'s original "right
        for the right reasons" map, :func:`~keras_gradcam.training.alignment.input_gradient_map`),
        at the input's resolution.
    weight : float, default=1.0
        ``lambda`` in ``loss = task_loss + lambda * (L_align + L_cf)`` (``>= 0``; 0 is plain
        training, bit for bit). Both terms are on a fixed scale (a share in [0, 1], a
        cross-entropy like the task loss), so 1 needs no tuning per dataset (see the table in
        ``docs/guided-training.md``).
    loss : {"rrr", "hint"}, default="rrr"
        The map term ``L_align``: ``"rrr"`` the share of the map outside the mask (Notes);
        ``"hint"`` HINT's pairwise ranking loss on the map's cells
        (:func:`keras_gradcam.training.alignment.ranking_penalty`).
    score : {"contrast", "logit", "log_prob", "sum_log_prob"}, default="contrast"
        The score whose map is aligned: ``"contrast"`` ``y_c - mean_{c' != c} y_c'``, the margin
        the softmax decides on, which also shows evidence that works by lowering the other
        classes; ``"logit"`` the label's logit ``y_c`` (the map ``kg.explain`` gives; the default
        before, which a shortcut can pass by acting on the other classes); ``"log_prob"``
        ``log p_c`` (it vanishes once ``p_c`` is near 1); ``"sum_log_prob"`` ``sum_k log p_k``
        over all classes, Ross et al.'s score, the same for every label.
    counterfactual : bool, default=True
        Add ``L_cf``: each annotated image's object pasted on another annotated image's
        background (:func:`~keras_gradcam.training.alignment.composites`) must still be
        classified as the object's label (Notes). It needs a model with one float image input.
    **kwargs
        Passed to ``keras.Model`` (``name``).

    Raises
    ------
    TypeError
        ``model`` is not a ``keras.Model``, ``weight`` is not a number, ``counterfactual`` is not a bool.
    ValueError
        Unknown ``method``, ``loss`` or ``score``, negative ``weight``, a layer that cannot be
        aligned, or a model with several outputs. During ``fit``/``evaluate``: masks whose shape
        does not match the batch's images (one ``(height, width)`` mask per image), whose values
        are not finite or not in [0, 1] (0/255 masks included: :mod:`keras_gradcam.training.masks`).

    Warns
    -----
    UserWarning
        At the end of ``fit``, when the alignment loss did not fall or the share of the map inside
        the masks (logged as ``evidence_inside``) did not rise, with both figures and what to try
        (:func:`keras_gradcam.training.report.progress_warning`).

    Notes
    -----
    **The map term.** For each sample, with ``A^k`` the layer's channels and ``s`` the score of
    the sample's label ``c`` (``score="contrast"``: ``y_c - mean_{c' != c} y_c'`` of the logits,
    before the softmax),

    .. math::

        w_k = \\frac{1}{Z} \\sum_{ij} \\frac{\\partial s}{\\partial A^k_{ij}}, \\quad
        M = \\mathrm{ReLU}\\Big(\\sum_k w_k A^k\\Big), \\quad
        \\mathrm{share} = \\frac{\\sum_{ij} M_{ij} (1 - m_{ij})}{\\sum_{ij} M_{ij} + \\epsilon}

    with ``m`` the mask resized to the layer (:func:`keras_gradcam.core.postprocess.resize`) and
    ``epsilon = 1e-8``; ``L_align`` is the mean share over the annotated samples of the batch (0
    when none is). It is the Grad-CAM form of "Right for the Right Reasons" (Ross et al., IJCAI
    2017), which penalises input gradients outside the mask, applied to the map that HINT
    (Selvaraju et al., ICCV 2019) aligns: it is bounded in [0, 1] and scale-free (multiplying
    the map by a constant does not change it, so the network cannot lower it by shrinking its
    activations), and it needs only a binary mask. The weights ``w_k`` are gradients of the
    forward pass (an inner tape; on JAX and PyTorch the backend seam's differentiable layer
    gradient), so training follows a second-order gradient through them.

    **The counterfactual term.** A map term alone leaves two loopholes, both seen on synthetic
    shortcuts (``docs/guided-training.md``): a cue on one class only works through its *absence*
    on the other classes, which leaves no evidence in their maps to penalise; and at the last
    convolutional layer a cell's receptive field covers most of a small image, so evidence
    placed on the object can be computed from the cue. ``L_cf`` asks for the behaviour directly:
    with ``a`` an annotated sample and ``b`` another one (the previous annotated sample of the
    batch, cyclically; at most ``max(1, batch // 4)`` composites, for the first annotated
    samples of the batch), the composite ``m_a x_a + (1 - m_a)((1 - m_b) x_b + m_b mean_b)`` (``a``'s
    object on ``b``'s background, ``b``'s object filled with the mean colour of its background)
    must be classified as ``a``'s label: ``L_cf`` is the mean cross-entropy of the composites.
    This is the "object on another image's background" counterfactual of Xiao et al. (ICLR
    2021, "Mixed-Rand"), built from the user's masks as the counterexamples of explanatory
    interactive learning are (Schramowski et al., 2020). The composites join the batch's
    forward pass (so ``BatchNormalization`` sees them); their maps are not aligned.

    The forward pass is the user's model run once with ``training=True``: while the step is
    traced, the chosen layer's ``call`` and the head's softmax/sigmoid are wrapped (in this
    thread only, undone in ``finally``; :func:`keras_gradcam.core.capture.thread_patches`) to
    record the layer's output and the logits. The scores are summed over the batch before
    differentiating, which is exact unless a layer mixes samples in training mode
    (``BatchNormalization``: then each map also carries the batch-statistics terms). The masks
    are checked on the host as each batch arrives: the step is not compiled with XLA (nor jitted on JAX).

    References
    ----------
    Ross, Hughes & Doshi-Velez, "Right for the Right Reasons: Training Differentiable Models by
    Constraining their Explanations", IJCAI 2017. Selvaraju et al., "Taking a HINT: Leveraging
    Explanations to Make Vision and Language Models More Grounded", ICCV 2019. Xiao, Engstrom,
    Ilyas & Madry, "Noise or Signal: The Role of Image Backgrounds in Object Recognition", ICLR
    2021. Schramowski et al., "Making deep neural networks right for the right scientific
    reasons by interacting with their explanations", Nature Machine Intelligence 2, 2020.

    Examples
    --------
    >>> guided = kg.GuidedTraining(model)                               # doctest: +SKIP
    >>> guided.compile(optimizer="adam", loss="sparse_categorical_crossentropy")  # doctest: +SKIP
    >>> guided.fit(tf.data.Dataset.from_tensor_slices((x, y, masks)).batch(32))  # doctest: +SKIP
    """

    def __init__(
        self,
        model: keras.Model,
        layer: LayerSpec = None,
        method: str = "gradcam",
        weight: float = 1.0,
        loss: str = "rrr",
        score: str = "contrast",
        counterfactual: bool = True,
        **kwargs,
    ):
        backend.check_supported("guided-training", "GuidedTraining")
        super().__init__(**kwargs)
        if not isinstance(model, keras.Model):
            raise TypeError(f"model must be a keras.Model; got {type(model).__name__}.")
        one_of("method", method, METHODS)
        self.method = method
        if not isinstance(counterfactual, bool):
            raise TypeError(f"counterfactual must be True or False; got {counterfactual!r}.")
        self.counterfactual = counterfactual
        one_of("loss", loss, LOSSES)
        self.alignment = loss
        one_of("score", score, SCORES)
        self.score = score
        self.weight = positive_float("weight", weight, allow_zero=True)
        ensure_built(model)
        if len(getattr(model, "outputs", None) or [None]) != 1:
            raise ValueError(
                f"GuidedTraining needs a model with one output; this one has {len(model.outputs)}. "
                "Wrap the classification output in a model of its own: keras.Model(model.inputs, model.outputs[i])."
            )
        info = resolve_layer(model, layer)
        if info.tokens or info.token_error:
            raise ValueError(
                f"layer {info.path!r} is a token layer; GuidedTraining supports spatial feature maps only. Pick a convolutional layer."
            )
        if info.calls != 1:
            raise ValueError(
                f"layer {info.path!r} runs {info.calls} times per forward pass; pick a layer that runs once."
            )
        self.wrapped = model
        self._target_layer = info.layer
        self._layer_path = info.path
        self._channels_first = bool(info.channels_first)
        head = output_layer(model, 0)
        found = output_link(head) if head is not None else None
        self._head, self._link = (head, found) if found else (None, None)
        self.alignment_tracker = keras.metrics.Mean(name="alignment_loss")
        self.counterfactual_tracker = keras.metrics.Mean(name="counterfactual_loss")
        self.inside_tracker = keras.metrics.Mean(name="evidence_inside")
        self.supports_jit = False  # the masks are checked on the host when a batch arrives; composites: data-dependent count
        self.built = True

    @property
    def layer_path(self) -> str:
        """The path of the layer whose Grad-CAM is aligned."""
        return self._layer_path

    @property
    def explained_model(self) -> keras.Model:
        """The wrapped model: what :class:`~keras_gradcam.GradCAMCallback` explains during ``fit``."""
        return self.wrapped

    def call(self, inputs, training=None):
        return self.wrapped(inputs, training=training)

    # -- the forward pass with the records ---------------------------------------------------
    def _recording_edits(self, record, logits: list) -> list:
        """The patches of a recorded forward pass: the layer's output goes through ``record(out) -> out``,
        and the head's input logits are appended to ``logits``."""
        layer_call = self._target_layer.call

        def recording_call(*args, **kwargs):
            return record(layer_call(*args, **kwargs))

        edits = [(self._target_layer, "call", recording_call)]
        if self._link is not None:
            name = "call" if self._link[1] == "layer" else "activation"
            original = getattr(self._head, name)

            def recording_head(inputs, *args, **kwargs):
                logits.append(inputs)
                return original(inputs, *args, **kwargs)

            edits.append((self._head, name, recording_head))
        return edits

    def _recorded_forward(self, x, training, tape):
        """``self(x)`` with the layer's output watched by ``tape`` and the logits recorded."""
        acts, logits = [], []

        def record(out):
            tape.watch(out)
            acts.append(out)
            return out

        edits = self._recording_edits(record, logits)
        with thread_patches(edits):
            y_pred = self(x, training=training)
        if len(acts) != 1:
            raise ValueError(
                f"layer {self._layer_path!r} ran {len(acts)} times in one forward pass; pick a layer that runs once."
            )
        return y_pred, acts[0], (logits[-1] if logits else keras.tree.flatten(y_pred)[0])

    def forward(self, x, y=_MODULE_CALL, masks=None, training=_MODULE_CALL, **kwargs):
        """The model's output and the alignment loss of a batch: ``(y_pred, L_align)``.

        ``L_align`` is the map term (the class Notes), differentiable with respect to the model's
        variables; it is 0 when ``masks`` is None or no sample is annotated. The counterfactual
        term is :meth:`counterfactual_loss`. (On PyTorch, ``torch.nn.Module`` runs a Keras model
        through a method of this name, with the inputs alone: such a call runs the model.)
        """
        if y is _MODULE_CALL:
            if backend.name != "torch":
                raise TypeError("forward() needs the batch's labels: forward(x, y, masks).")
            return super().forward(x, **kwargs, **({} if training is _MODULE_CALL else {"training": training}))
        training = False if training is _MODULE_CALL else training
        y_pred, terms = self._forward(x, y, masks, training)
        return y_pred, terms["align"]

    def counterfactual_loss(self, x, y, masks, training: bool = False) -> tf.Tensor:
        """``L_cf`` of a batch: the mean cross-entropy of the composites (class Notes); 0 without them."""
        return self._forward(x, y, masks, training)[1]["counterfactual"]

    def _forward(self, x, y, masks, training):
        """The output of the batch's images and the terms: ``align``, ``counterfactual`` and ``inside``.

        ``inside`` is ``(share, flags)`` per sample: the share of the aligned map inside the mask
        and 1 for the annotated samples (None without masks). TensorFlow records the layer's
        output on an inner ``GradientTape``; JAX and PyTorch take its gradient through the backend
        seam (:func:`keras_gradcam.core.backend.layer_gradients`, ``differentiable``), which the
        trainer's ``jax.value_and_grad`` or ``loss.backward()`` differentiates again.
        """
        if masks is None:
            return self(x, training=training), _no_terms()
        x = keras.tree.map_structure(lambda t: t if t is None else ops.convert_to_tensor(t), x)
        flat = [i for i in keras.tree.flatten(x) if i is not None]
        images = flat[0]
        masks = checked_masks(masks, images, self._channels_first)
        flags = annotated(masks)
        on_input = self.method == "input_gradient"
        swapped = self.counterfactual and self.weight > 0  # weight 0: the forward pass of plain training
        dtype_name = keras.backend.standardize_dtype(images.dtype)
        if (swapped or on_input) and (len(flat) != 1 or "float" not in dtype_name):
            option = "counterfactual=True" if swapped else "method='input_gradient'"
            raise ValueError(
                f"{option} needs a model with one input of float images; this batch has {len(flat)} input(s), the "
                f"first of dtype {dtype_name}. Pass counterfactual=False and method='gradcam'."
            )
        step = self._forward_tf if backend.name == "tensorflow" else self._forward_seam
        y_pred, maps, dtype, logits_all, index, batch = step(x, y, images, masks, flags, on_input, swapped, training)
        small = layer_masks(masks, maps.shape[1:], dtype)
        terms = dict(_no_terms(), align=alignment_loss(maps, small, flags, self.alignment))
        terms["inside"] = (ops.stop_gradient(inside_share(maps, small)), ops.cast(flags, dtype))
        if swapped:
            labels = ops.take(class_indices(y, logits_all.shape[-1]), index, axis=0)
            terms["counterfactual"] = composite_loss(logits_all[batch:], labels)
        return y_pred, terms

    def _gradcam_maps(self, acts, grads, batch):
        """Grad-CAM maps of the batch's first ``batch`` samples in the computation's dtype, channels last."""
        dtype = compute_dtype(acts.dtype)
        acts, grads = ops.cast(acts, dtype), ops.cast(grads, dtype)
        if self._channels_first:
            order = [0] + list(range(2, len(acts.shape))) + [1]
            acts, grads = ops.transpose(acts, order), ops.transpose(grads, order)
        return gradcam_map(acts, grads)[:batch], dtype  # the composites' maps are not aligned

    def _forward_tf(self, x, y, images, masks, flags, on_input, swapped, training):
        """:meth:`_forward`'s pass on TensorFlow: the layer's output watched by an inner tape.

        Returns ``(y_pred, maps, dtype, logits of the batch and composites, composites' sources, batch)``.
        """
        batch = tf.shape(images)[0]
        index = None
        with tf.GradientTape(watch_accessed_variables=False, persistent=False) as inner:
            if on_input:
                inner.watch(images)
            if swapped:
                # at most a quarter of the batch (at least one): the forward pass grows by 25 % at most
                extra, index = composites(images, masks, flags, self._channels_first, tf.maximum(batch // 4, 1))
                y_all, acts, logits_all = self._recorded_forward(tf.concat([images, extra], 0), training, inner)
                y_pred = keras.tree.map_structure(lambda t: t[:batch], y_all)
                logits = logits_all[:batch]
            else:
                y_pred, acts, logits = self._recorded_forward(x, training, inner)
                logits_all = logits
            total = tf.reduce_sum(label_scores(logits, y, self.score))
        if on_input:
            grads = inner.gradient(total, images, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            dtype = compute_dtype(grads.dtype)
            maps = input_gradient_map(ops.cast(grads, dtype), self._channels_first)
        else:
            grads = inner.gradient(total, acts, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            maps, dtype = self._gradcam_maps(acts, grads, batch)
        return y_pred, maps, dtype, logits_all, index, batch

    def _model_call(self, inputs, training):
        """``(self(inputs), updates, losses)``; on JAX in a :class:`keras.StatelessScope` of its own.

        It maps the model's variables to their current values (the trainer's scope's, in ``fit``), so
        what a layer assigns while differentiated (``BatchNormalization``'s statistics) comes out as
        a value of the differentiated function, not a traced value left in the trainer's scope.
        """
        if backend.name != "jax":
            return self(inputs, training=training), None, None
        variables = self.wrapped.variables
        with keras.StatelessScope(state_mapping=[(v, v.value) for v in variables], collect_losses=True) as scope:
            y = self(inputs, training=training)
        updates = [scope.get_current_value(v) for v in self.wrapped.non_trainable_variables]
        return y, updates, list(scope.losses)

    def _forward_seam(self, x, y, images, masks, flags, on_input, swapped, training):
        """:meth:`_forward`'s pass on JAX and PyTorch: the layer's gradient from the seam, itself differentiable.

        Returns what :meth:`_forward_tf` returns.
        """
        batch = int(images.shape[0])
        index = None
        if swapped:  # at most a quarter of the batch (at least one): the forward pass grows by 25 % at most
            extra, index = composites(images, masks, flags, self._channels_first, max(batch // 4, 1))
            inputs = ops.concatenate([images, extra], 0)
        else:
            inputs = x

        def forward(hook, xs=None):
            calls, logits = [], []

            def record(out):
                calls.append(out)
                return hook(0, out)

            edits = self._recording_edits(record, logits)
            with thread_patches(edits):
                y_all, updates, losses = self._model_call(inputs if xs is None else xs, training)
            if len(calls) != 1:
                raise ValueError(
                    f"layer {self._layer_path!r} ran {len(calls)} times in one forward pass; pick a layer that runs once."
                )
            logits_all = logits[-1] if logits else keras.tree.flatten(y_all)[0]
            total = ops.sum(label_scores(logits_all[:batch], y, self.score))
            return total, (y_all, logits_all, updates, losses)

        aux, acts, grads, input_grads = backend.layer_gradients(
            forward, inputs, 1, gradients=not on_input, wrt_inputs=on_input, differentiable=True
        )
        y_all, logits_all, updates, losses = aux
        if updates is not None and training:  # JAX: assigned into the trainer's scope during fit
            for variable, value in zip(self.wrapped.non_trainable_variables, updates):
                variable.assign(value)
        self._forward_losses = losses
        y_pred = keras.tree.map_structure(lambda t: t[:batch], y_all) if swapped else y_all
        if on_input:
            dtype = compute_dtype(input_grads[0].dtype)
            maps = input_gradient_map(ops.cast(input_grads[0][:batch], dtype), self._channels_first)
        else:
            maps, dtype = self._gradcam_maps(acts[0], grads[0], batch)
        return y_pred, maps, dtype, logits_all, index, batch

    # -- a mask error raised inside a compiled step reaches the user as a ValueError --------------
    def fit(self, *args, **kwargs):
        """Keras's ``fit``; at the end it warns if the alignment did not improve (:func:`~keras_gradcam.training.report.progress_warning`)."""
        with reraised(self):
            history = super().fit(*args, **kwargs)
        message = progress_warning(getattr(history, "history", None) or {}, self.weight)
        if message:
            warnings.warn(message, UserWarning, stacklevel=2)
        return history

    def evaluate(self, *args, **kwargs):
        with reraised(self):
            return super().evaluate(*args, **kwargs)

    def train_on_batch(self, *args, **kwargs):
        with reraised(self):
            return super().train_on_batch(*args, **kwargs)

    def test_on_batch(self, *args, **kwargs):
        with reraised(self):
            return super().test_on_batch(*args, **kwargs)

    # -- Keras steps -------------------------------------------------------------------------
    @staticmethod
    def _unpack(data):
        if isinstance(data, (tuple, list)):
            if len(data) == 3:
                return data[0], data[1], data[2]
            if len(data) == 2:
                return data[0], data[1], None
        raise ValueError(
            "GuidedTraining expects batches (x, y) or (x, y, masks); "
            f"got {type(data).__name__} of {len(data) if isinstance(data, (tuple, list)) else 1} element(s)."
        )

    def _batch_size(self, x):
        return ops.shape(next(i for i in keras.tree.flatten(x) if i is not None))[0]

    @staticmethod
    def _replicas() -> int:
        """The replicas of the ``tf.distribute`` strategy in scope (1 on JAX and PyTorch)."""
        return tf.distribute.get_strategy().num_replicas_in_sync if backend.name == "tensorflow" else 1

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Keras's ``compute_loss`` without sample weights: the third element of a batch is the masks.

        (Keras itself passes that element as ``sample_weight`` when it builds the compiled loss
        and metrics under a ``tf.distribute`` strategy.)
        """
        return super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=None, training=training)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Keras's ``compute_metrics`` without sample weights (see :meth:`compute_loss`)."""
        return super().compute_metrics(x, y, y_pred, sample_weight=None)

    def _total_loss(self, x, y, y_pred, terms, masks, training: bool):
        """``compute_loss`` (the compiled loss and regularisers) plus ``weight * (L_align + L_cf)``.

        Under a ``tf.distribute`` strategy Keras scales each replica's loss by ``1 / replicas``
        (the replicas' gradients are summed); the alignment terms are scaled the same way.
        """
        loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=None, training=training)
        if masks is None:
            return loss
        extra = ops.cast(terms["align"], loss.dtype) + ops.cast(terms["counterfactual"], loss.dtype)
        return loss + ops.cast(self.weight / self._replicas(), loss.dtype) * extra

    def _track(self, x, loss, terms) -> None:
        """Update the compiled ``loss`` metric (per replica, unscaled) and the terms' metrics."""
        for metric in self.metrics:  # Keras's own loss tracker, found by name (its public metrics list)
            if metric.name == "loss":
                metric.update_state(loss * ops.cast(self._replicas(), loss.dtype), sample_weight=self._batch_size(x))
        self._track_terms(terms)

    def _track_terms(self, terms) -> None:
        """Update the metrics of the terms (``alignment_loss``, ``counterfactual_loss``, ``evidence_inside``)."""
        self.alignment_tracker.update_state(terms["align"])
        if self.counterfactual:
            self.counterfactual_tracker.update_state(terms["counterfactual"])
        if terms["inside"] is not None:  # the mean over the annotated samples only
            self.inside_tracker.update_state(terms["inside"][0], sample_weight=terms["inside"][1])

    def train_step(self, *args):
        """One step of ``fit``: the task loss plus ``weight * (L_align + L_cf)``, on every backend.

        TensorFlow and PyTorch run the step here (``train_step(data)``); JAX runs Keras's own
        stateless step (``train_step(state, data)``), which differentiates :meth:`compute_loss_and_updates`.
        """
        if backend.name == "jax":
            return super().train_step(*args)
        if backend.name == "torch":
            return self._train_step_torch(*args)
        (data,) = args
        x, y, masks = self._unpack(data)
        with tf.GradientTape() as tape:
            y_pred, terms = self._forward(x, y, masks, training=True)
            loss = self._total_loss(x, y, y_pred, terms, masks, training=True)
            scaled = self.optimizer.scale_loss(loss)  # mixed_float16: LossScaleOptimizer's loss scale
        variables = self.trainable_weights
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        self._track(x, loss, terms)
        return self.compute_metrics(x, y, y_pred, sample_weight=None)

    def _train_step_torch(self, data):
        """PyTorch's step, as Keras's own (``loss.backward()``, the update under ``no_grad``) on the guided loss."""
        x, y, masks = self._unpack(data)
        y_pred, terms = self._forward(x, y, masks, training=True)
        loss = self._total_loss(x, y, y_pred, terms, masks, training=True)
        self.zero_grad()
        self.optimizer.scale_loss(loss).backward()
        variables = self.trainable_weights[:]
        with backend.no_gradients():
            self.optimizer.apply([v.value.grad for v in variables], variables)
        self._track(x, ops.stop_gradient(loss), terms)
        return self.compute_metrics(x, y, y_pred, sample_weight=None)

    def compute_loss_and_updates(
        self, trainable_variables, non_trainable_variables, metrics_variables, x, y, sample_weight,
        training=False, optimizer_variables=None,
    ):
        """JAX's stateless loss (what Keras's JAX ``train_step`` and ``test_step`` call): the guided loss.

        Keras unpacks a batch ``(x, y, masks)`` as ``(x, y, sample_weight)``: ``sample_weight`` is the
        masks here. The forward pass runs once, in a :class:`keras.StatelessScope` mapping the
        given variables' values (the traced ones, while JAX differentiates), and the terms'
        metrics are updated in the same scope; Keras's step then updates the ``loss`` metric.
        """
        mapping = list(zip(self.trainable_variables, trainable_variables))
        mapping += list(zip(self.non_trainable_variables, non_trainable_variables))
        mapping += list(zip(self.metrics_variables, metrics_variables))
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
            self._forward_losses = None
            y_pred, terms = self._forward(x, y, sample_weight, training)
            losses = self._forward_losses or list(scope.losses)  # the layers' add_loss (the model's own scope's, with masks)
            if losses:  # for compute_loss, as Keras's step does
                self._losses_override = losses
            try:
                loss = self._total_loss(x, y, y_pred, terms, sample_weight, training)
            finally:
                self._losses_override = []
                self._forward_losses = None
            self._track_terms(terms)
        non_trainable_variables = [scope.get_current_value(v) for v in self.non_trainable_variables]
        metrics_variables = [scope.get_current_value(v) for v in self.metrics_variables]
        unscaled = loss
        if training and self.optimizer is not None:  # mixed precision's loss scale, as Keras's step does
            with keras.StatelessScope(state_mapping=list(zip(self.optimizer.variables, optimizer_variables))):
                loss = self.optimizer.scale_loss(loss)
        return loss, (unscaled, y_pred, non_trainable_variables, metrics_variables)

    def test_step(self, *args):
        """One step of ``evaluate`` (JAX: Keras's own stateless step, through :meth:`compute_loss_and_updates`)."""
        if backend.name == "jax":
            return super().test_step(*args)
        (data,) = args
        x, y, masks = self._unpack(data)
        y_pred, terms = self._forward(x, y, masks, training=False)
        self._track(x, self._total_loss(x, y, y_pred, terms, masks, training=False), terms)
        return self.compute_metrics(x, y, y_pred, sample_weight=None)
