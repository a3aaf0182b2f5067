"""``GuidedTraining``: fit a model so that its Grad-CAM lies inside human annotation masks."""

from __future__ import annotations

import keras
import tensorflow as tf

from ..core.binary import two_classes
from ..core.capture import output_link, thread_patches
from ..core.layers import LayerSpec, ensure_built, output_layer, resolve_layer
from ..core.validate import one_of, positive_float
from .alignment import LOSSES, alignment_loss, annotated, compute_dtype, gradcam_map, layer_masks

__all__ = ["GuidedTraining"]

SCORES = ("logit", "contrast", "log_prob")


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
    method : {"gradcam"}, default="gradcam"
        The map that is aligned.
    weight : float, default=1.0
        ``lambda`` in ``loss = task_loss + lambda * L_align`` (``>= 0``; 0 is plain training).
    loss : {"rrr", "hint"}, default="rrr"
        The alignment term: ``"rrr"`` the share of the map outside the mask (Notes);
        ``"hint"`` HINT's pairwise ranking loss on the map's cells
        (:func:`keras_gradcam.training.alignment.ranking_penalty`).
    score : {"logit", "contrast", "log_prob"}, default="logit"
        The score whose Grad-CAM is aligned: ``"logit"`` the label's logit ``y_c`` (the map
        ``kg.explain`` gives); ``"contrast"`` ``y_c - mean_{c' != c} y_c'``, which also shows
        evidence that works by lowering the other classes (a shortcut the logit's map cannot
        see); ``"log_prob"`` ``log p_c`` (as in Ross et al.; it vanishes once ``p_c`` is near 1).
    **kwargs
        Passed to ``keras.Model`` (``name``).

    Raises
    ------
    TypeError
        ``model`` is not a ``keras.Model``, or ``weight`` is not a number.
    ValueError
        Unknown ``method``, ``loss`` or ``score``, negative ``weight``, a layer that cannot be aligned, or a model with
        several outputs.

    Notes
    -----
    For each sample, with ``A^k`` the layer's channels and ``y_c`` the logit of the sample's
    label ``c`` (before the softmax),

    .. math::

        w_k = \\frac{1}{Z} \\sum_{ij} \\frac{\\partial y_c}{\\partial A^k_{ij}}, \\quad
        M = \\mathrm{ReLU}\\Big(\\sum_k w_k A^k\\Big), \\quad
        \\mathrm{share} = \\frac{\\sum_{ij} M_{ij} (1 - m_{ij})}{\\sum_{ij} M_{ij} + \\epsilon}

    with ``m`` the mask resized to the layer (:func:`keras_gradcam.core.postprocess.resize`) and
    ``epsilon = 1e-8``; ``L_align`` is the mean share over the annotated samples of the batch (0
    when none is). It is the Grad-CAM form of "Right for the Right Reasons" (Ross et al., IJCAI
    2017), which penalises input gradients outside the mask, applied to the map that HINT
    (Selvaraju et al., ICCV 2019) aligns: it is bounded in [0, 1] and scale-free (multiplying
    the map by a constant does not change it, so the network cannot lower it by shrinking its
    activations), and it needs only a binary mask, not a ranked importance map. The weights
    ``w_k`` are gradients of the forward pass (recorded by an inner tape), so training follows
    a second-order gradient through them.

    The forward pass is the user's model run once with ``training=True``: while the step is
    traced, the chosen layer's ``call`` and the head's softmax/sigmoid are wrapped (in this
    thread only, undone in ``finally``; :func:`keras_gradcam.core.capture.thread_patches`) to
    record the layer's output and the logits. The scores are summed over the batch before
    differentiating, which is exact unless a layer mixes samples in training mode
    (``BatchNormalization``: then each map also carries the batch-statistics terms).

    References
    ----------
    Ross, Hughes & Doshi-Velez, "Right for the Right Reasons: Training Differentiable Models by
    Constraining their Explanations", IJCAI 2017. Selvaraju et al., "Taking a HINT: Leveraging
    Explanations to Make Vision and Language Models More Grounded", ICCV 2019.

    Examples
    --------
    >>> guided = kg.GuidedTraining(model, weight=1.0)                   # doctest: +SKIP
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
        score: str = "logit",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(model, keras.Model):
            raise TypeError(f"model must be a keras.Model; got {type(model).__name__}.")
        one_of("method", method, ("gradcam",))
        self.method = method
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
    def _recorded_forward(self, x, training, tape):
        """``self(x)`` with the layer's output watched by ``tape`` and the logits recorded."""
        acts, logits = [], []
        layer_call = self._target_layer.call

        def recording_call(*args, **kwargs):
            out = layer_call(*args, **kwargs)
            tape.watch(out)
            acts.append(out)
            return out

        edits = [(self._target_layer, "call", recording_call)]
        if self._link is not None:
            name = "call" if self._link[1] == "layer" else "activation"
            original = getattr(self._head, name)

            def recording_head(inputs, *args, **kwargs):
                logits.append(inputs)
                return original(inputs, *args, **kwargs)

            edits.append((self._head, name, recording_head))
        with thread_patches(edits):
            y_pred = self(x, training=training)
        if len(acts) != 1:
            raise ValueError(
                f"layer {self._layer_path!r} ran {len(acts)} times in one forward pass; pick a layer that runs once."
            )
        return y_pred, acts[0], (logits[-1] if logits else keras.tree.flatten(y_pred)[0])

    def _label_scores(self, logits, y):
        """The logit of each sample's label ``(B,)`` (a one-unit sigmoid as two classes ``[-s, s]``)."""
        if logits.shape.rank != 2:
            raise ValueError(
                f"GuidedTraining needs class logits of shape (batch, classes); the model gives {tuple(logits.shape)}."
            )
        logits = two_classes(logits)
        if self.score == "contrast":  # y_c - mean of the other classes' logits: evidence against them counts too
            classes = logits.shape[-1]
            logits = (classes * logits - tf.reduce_sum(logits, axis=-1, keepdims=True)) / (classes - 1)
        elif self.score == "log_prob":  # log p_c = y_c - logsumexp(y)
            logits = tf.nn.log_softmax(logits, axis=-1)
        y = tf.convert_to_tensor(y)
        if y.shape.rank == 2 and y.shape[-1] == logits.shape[-1] and y.dtype.is_floating and logits.shape[-1] > 1:
            labels = tf.argmax(y, axis=-1, output_type=tf.int32)  # one-hot labels
        else:
            labels = tf.reshape(tf.cast(y, tf.int32), [-1])
        return tf.gather(logits, labels, axis=1, batch_dims=1)

    def forward(self, x, y, masks=None, training: bool = False):
        """The model's output and the alignment loss of a batch: ``(y_pred, L_align)``.

        ``L_align`` is differentiable with respect to the model's variables (see the class
        Notes); it is 0 when ``masks`` is None or no sample is annotated.
        """
        if masks is None:
            y_pred = self(x, training=training)
            return y_pred, tf.constant(0.0)
        masks = tf.convert_to_tensor(masks)
        if masks.shape.rank == 4 and masks.shape[-1] == 1:
            masks = masks[..., 0]
        with tf.GradientTape(watch_accessed_variables=False, persistent=False) as inner:
            y_pred, acts, logits = self._recorded_forward(x, training, inner)
            total = tf.reduce_sum(self._label_scores(logits, y))
        grads = inner.gradient(total, acts, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        dtype = compute_dtype(acts.dtype)
        acts, grads = tf.cast(acts, dtype), tf.cast(grads, dtype)
        if self._channels_first:
            order = [0] + list(range(2, acts.shape.rank)) + [1]
            acts, grads = tf.transpose(acts, order), tf.transpose(grads, order)
        maps = gradcam_map(acts, grads)
        if masks.shape.rank != maps.shape.rank:
            raise ValueError(
                f"masks must have shape (batch, {', '.join('...' for _ in maps.shape[1:])}) at the input's resolution, "
                f"one per image; got shape {tuple(masks.shape)} for maps {tuple(maps.shape)} at layer {self._layer_path!r}."
            )
        loss = alignment_loss(maps, layer_masks(masks, maps.shape[1:], dtype), annotated(masks), self.alignment)
        return y_pred, loss

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
        return tf.shape(next(i for i in keras.tree.flatten(x) if i is not None))[0]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Keras's ``compute_loss`` without sample weights: the third element of a batch is the masks.

        (Keras itself passes that element as ``sample_weight`` when it builds the compiled loss
        and metrics under a ``tf.distribute`` strategy.)
        """
        return super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=None, training=training)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Keras's ``compute_metrics`` without sample weights (see :meth:`compute_loss`)."""
        return super().compute_metrics(x, y, y_pred, sample_weight=None)

    def _total_loss(self, x, y, y_pred, align, masks, training: bool):
        """``compute_loss`` (the compiled loss and regularisers) plus ``weight * L_align``.

        Under a ``tf.distribute`` strategy Keras scales each replica's loss by ``1 / replicas``
        (the replicas' gradients are summed); the alignment term is scaled the same way.
        """
        loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=None, training=training)
        if masks is None:
            return loss
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return loss + tf.cast(self.weight / replicas, loss.dtype) * tf.cast(align, loss.dtype)

    def _track(self, x, loss, align) -> None:
        """Update the compiled ``loss`` metric (per replica, unscaled) and ``alignment_loss``."""
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        for metric in self.metrics:  # Keras's own loss tracker, found by name (its public metrics list)
            if metric.name == "loss":
                metric.update_state(loss * tf.cast(replicas, loss.dtype), sample_weight=self._batch_size(x))
        self.alignment_tracker.update_state(align)

    def train_step(self, data):
        x, y, masks = self._unpack(data)
        with tf.GradientTape() as tape:
            y_pred, align = self.forward(x, y, masks, training=True)
            loss = self._total_loss(x, y, y_pred, align, masks, training=True)
            scaled = self.optimizer.scale_loss(loss)  # mixed_float16: LossScaleOptimizer's loss scale
        variables = self.trainable_weights
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        self._track(x, loss, align)
        return self.compute_metrics(x, y, y_pred, sample_weight=None)

    def test_step(self, data):
        x, y, masks = self._unpack(data)
        y_pred, align = self.forward(x, y, masks, training=False)
        self._track(x, self._total_loss(x, y, y_pred, align, masks, training=False), align)
        return self.compute_metrics(x, y, y_pred, sample_weight=None)
