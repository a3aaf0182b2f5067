"""Guided Backpropagation (Springenberg et al. 2015) and Guided Grad-CAM / Grad-CAM++ (Selvaraju et al.).

Guided backpropagation needs different gradients at every ReLU. The explainers get them the way
:class:`~keras_gradcam.core.capture.Capture` intercepts layers: while their compiled function is
traced (on PyTorch, which runs it eagerly: while it runs), the user's model's ReLUs are swapped
for :func:`guided_relu` and put back in a ``finally`` block. The compiled function therefore
runs the user's model itself and reads its live weights (no copy to keep in sync after
``set_weights`` or training); outside tracing the model is never touched. :func:`guided_clone` makes a separate guided copy, for use on its own.
The model surgery (finding and guiding ReLUs) is in :mod:`keras_gradcam.methods.guided_model`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from keras import ops

from ..core.capture import Capture
from ..core.engine import Call, Explainer
from ..core.layers import LayerSpec, ensure_built
from ..core.postprocess import normalize
from ..core.validate import one_of
from .gradcam import GradCAM
from .gradcam_plusplus import GradCAMPlusPlus
from .guided_model import NON_RELU, checked_guided_edits, guided_relus
from .inputs import refuse_token_inputs

__all__ = ["GuidedBackprop", "GuidedGradCAM", "GuidedGradCAMPlusPlus"]

class GuidedBackprop(Explainer):
    r"""Guided backpropagation: the input gradient of the class score through guided ReLUs.

    A fine-grained, pixel-space picture of the input patterns that excite the target score; not
    class-discriminative on its own (see :class:`GuidedGradCAM`).

    Parameters
    ----------
    model : keras.Model
        A single-input Functional or Sequential model (nested models included). Its ReLUs are
        guided only while the compiled function is traced and restored right after, so the model
        is left as it was and every call reads its current weights (after ``set_weights`` or
        training, the same explainer explains the model as it is now).
    layer : None
        Guided backpropagation explains the input, it reads no layer; the argument is there only to
        say so when one is given (``kg.explain`` passes ``layer=`` to every method).
    output, score, batch_size
        See :class:`~keras_gradcam.core.engine.BaseCAM`. It takes none of a layer method's token or
        smoothing options. With ``score="logit"`` a softmax or sigmoid head is
        removed while tracing (as for every method), so the gradient is that of the logit.
    counterfactual : bool, default=False
        Back-propagate from :math:`-y^c` instead of :math:`y^c`: with the guided rule this is not
        the negated image, but the input patterns that would *lower* the class score (the
        counterfactual of the Grad-CAM paper, applied to guided backpropagation).
    non_relu : {"raise", "keep"}, default="raise"
        Rule for ReLU-like activations other than ReLU (SiLU, GELU, ReLU6, LeakyReLU, ...): raise a
        ``ValueError`` listing them, or keep their ordinary gradient. A network without any
        rectifier then gives the plain input gradient.

    Returns
    -------
    Explanation
        ``attributions`` of shape ``(n_samples, *input_dims)`` like the input; ``heatmaps`` is the
        per-pixel maximum over channels of ``|attributions|``, min-max normalised (a display aid);
        ``layer_heatmaps`` the same before normalisation; ``layer`` is ``"input"``.

    Raises
    ------
    ValueError
        ``layer`` given, a multi-input model, other rectifiers with ``non_relu="raise"``, a ReLU
        called as a function inside a custom layer's ``call`` (it cannot be guided), or a model
        that takes integer token ids (an integer input, or an ``Embedding`` reading an input): the
        gradient stops at the embedding lookup, so the attributions would be all zero. Grad-CAM
        and the other methods that only read a layer work on such models.

    Notes
    -----
    At every ReLU the backward signal is gated by a positive forward input *and* a positive
    incoming signal, starting from a one-hot on the target logit:

    .. math:: R_{in} = R_{out}\,\mathbb{1}[x > 0]\,\mathbb{1}[R_{out} > 0],\qquad
              GB^c(x) = R_{in}\big|_{\text{input}}

    One forward and one backward pass of the model, its ReLUs guided, for the whole batch.

    References
    ----------
    J. T. Springenberg et al., "Striving for Simplicity: The All Convolutional Net", ICLR
    workshop 2015. R. R. Selvaraju et al., "Grad-CAM", ICCV 2017, section 3.1.

    Examples
    --------
    >>> exp = GuidedBackprop(model)(images)     # doctest: +SKIP
    >>> exp.attributions.shape                  # doctest: +SKIP
    (8, 64, 64, 3)
    """

    raw_size_maps = False  # pixel-space gradients of the preprocessed input, at its size

    name = "guided-backprop"
    empty_reason = (
        "no gradient reaches the input through the guided ReLUs (each ReLU passes only positive gradients "
        "at positive inputs): the target has no positive evidence the input can show. Try another target."
    )
    display_name = "Guided Backprop"
    input_action = "back-propagates to the input"  # refuses token models (methods.inputs)
    supports = frozenset()  # an input gradient: no combined map to smooth or rectify

    def __init__(self, model, layer: None = None, *, non_relu: str = "raise", **kwargs):
        if layer is not None:
            raise ValueError(
                f"guided backpropagation explains the input, it reads no layer; got layer={layer!r}. "
                "Use GuidedGradCAM(model, layer=...) for a class-discriminative map at a layer."
            )
        self.non_relu = one_of("non_relu", non_relu, NON_RELU)
        self._edits: list = []
        super().__init__(model, **kwargs)
        self._init_model()

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "non_relu": self.non_relu}

    def _setup(self, sample=None) -> None:
        ensure_built(self.model, sample)
        inputs = getattr(self.model, "inputs", None) or []
        if len(inputs) != 1:
            raise ValueError(
                f"GuidedBackprop explains models with one input (attributions shaped like it); model "
                f"{self.model.name!r} has {len(inputs)}. Wrap it in a one-input model that fixes the others."
            )
        refuse_token_inputs(self.model, type(self).__name__, self.input_action)
        self._edits, self._channels_first = checked_guided_edits(self.model, self.non_relu)
        # the user's model itself, its ReLUs guided while the function is traced (see _contexts)
        self._capture = Capture(self.model, [], output=self.output, score=self.score)

    def _contexts(self) -> list:
        return super()._contexts() + [guided_relus(self._edits)]

    def passes(self, call: Call, start: int, stop: int) -> dict[str, np.ndarray]:
        """One forward and one backward pass through the guided ReLUs: ``attributions`` shaped like the input."""
        fn = call.state.get("guided")
        if fn is None:
            fn = call.state["guided"] = self.compile(call, ("guided",), self.guided_batch)
        names = ("attributions", "heatmaps", "layer_heatmaps", "targets", "scores", "predictions", "zero_gradients")
        return dict(zip(names, self.outputs(fn, call.batch(start, stop), *call.data(start, stop))))

    def guided_batch(self, xb, targets):
        """Graph code: the input gradient of a batch and its per-pixel maximum over channels."""
        if self.counterfactual:
            targets = targets.negated()  # differentiate -y; the classes stay those of y
        # per sample, whether the score itself has no gradient (ops.argmax...): then the score, not the
        # guided ReLUs, is why nothing reaches the input (the engine's warning names it). A class's
        # logit always has one, so only callable and negated targets are probed.
        probe = self.counterfactual or not targets.names_classes
        cap = self.capture(xb, targets, gradients=False, input_gradients=True, output_gradients=probe)
        scores = -cap.scores if self.counterfactual else cap.scores
        attributions = ops.cast(cap.input_gradients[0], "float32")
        amount = ops.abs(attributions)
        if len(attributions.shape) >= 3:
            amount = ops.max(amount, axis=1 if self._channels_first else -1)
        flat = cap.zero_gradients if probe else ops.zeros_like(scores, "bool")
        return attributions, normalize(amount), amount, cap.targets, scores, cap.predictions, flat


class _GuidedMixin:
    """Guided X: guided backpropagation times the upsampled, normalised map of method X."""

    raw_size_maps = False  # multiplied with the input gradient: maps at the preprocessed size
    input_action = "back-propagates to the input"  # through GuidedBackprop: no token models

    def _init_guided(self, non_relu: str) -> None:
        self.non_relu = one_of("non_relu", non_relu, NON_RELU)
        self._guided = GuidedBackprop(
            self.model,
            output=self.output,
            score=self.score,
            counterfactual=self.counterfactual,
            batch_size=self.batch_size,
            non_relu=non_relu,
        )

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "non_relu": self.non_relu}

    def run(self, call: Call) -> dict[str, np.ndarray]:
        """The CAM method's outputs, ``attributions`` of guided X (guided backpropagation times the
        upsampled map, shaped like the input) and ``"guided_backprop"`` (to ``Explanation.extras``),
        the guided-backpropagation image, for the classes the map explains."""
        out = super().run(call)
        targets = out["targets"] if call.target.names_classes else call.target.target
        gb = self._guided.run(self._guided.prepare(call.images, targets, call.batch_size))["attributions"]
        heat = out["heatmaps"]
        if gb.ndim == heat.ndim + 1:
            heat = heat[:, None] if self.layers[0].channels_first else heat[..., None]
        elif gb.ndim != heat.ndim:
            raise ValueError(
                f"cannot align the heatmaps {out['heatmaps'].shape} with the input-gradient {gb.shape}; "
                "guided methods need an image-like input whose spatial size is the heatmaps' size."
            )
        return {**out, "attributions": gb * heat, "guided_backprop": gb}


class GuidedGradCAM(_GuidedMixin, GradCAM):
    r"""Guided Grad-CAM: guided backpropagation times the upsampled Grad-CAM map.

    Grad-CAM is class-discriminative but coarse; guided backpropagation is fine-grained but not
    class-discriminative. Their product is both (Grad-CAM paper, section 3.1).

    Parameters
    ----------
    model, layer, output, score, batch_size
        See :class:`~keras_gradcam.core.engine.BaseCAM`.
    counterfactual : bool, default=False
        Use the counterfactual Grad-CAM map (negated gradients) and guided backpropagation of
        :math:`-y^c` (see :class:`GuidedBackprop`): input patterns that would lower the score.
    non_relu : {"raise", "keep"}, default="raise"
        See :class:`GuidedBackprop`.

    Returns
    -------
    Explanation
        ``heatmaps`` / ``layer_heatmaps``: Grad-CAM's; ``attributions``: guided Grad-CAM, shaped
        like the input; ``extras["guided_backprop"]``: the guided-backpropagation image.

    Raises
    ------
    ValueError
        As :class:`~keras_gradcam.GradCAM` and :class:`GuidedBackprop`.

    Notes
    -----
    .. math:: GGC^c(x) = GB^c(x) \odot \mathrm{Nrm}\big(\mathrm{Up}(L^c_{\text{Grad-CAM}})\big)

    broadcast over the input's channels. ``Up`` is bilinear (as the paper); the map is min-max
    normalised (as pytorch-grad-cam), which differs from the original Lua code's raw map by a
    positive factor per sample. Two forward and two backward passes: Grad-CAM on the model, then
    guided backpropagation through its guided ReLUs, for the same targets.

    References
    ----------
    R. R. Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
    Localization", ICCV 2017, section 3.1.

    Examples
    --------
    >>> exp = GuidedGradCAM(model, layer="conv2d_1")(images)   # doctest: +SKIP
    >>> exp.attributions.shape, exp.heatmaps.shape              # doctest: +SKIP
    ((8, 64, 64, 3), (8, 64, 64))
    """

    name = "guided-gradcam"
    display_name = "Guided Grad-CAM"
    supports = frozenset({"eigen_smooth", "relu"})  # the guided input gradient is not augmented

    def __init__(self, model, layer: LayerSpec = None, *, non_relu: str = "raise", **kwargs):
        super().__init__(model, layer, **kwargs)
        self._init_guided(non_relu)


class GuidedGradCAMPlusPlus(_GuidedMixin, GradCAMPlusPlus):
    r"""Guided Grad-CAM++: guided backpropagation times the upsampled Grad-CAM++ map.

    Parameters
    ----------
    model, layer, output, score, batch_size, alpha_norm
        See :class:`~keras_gradcam.GradCAMPlusPlus`.
    counterfactual : bool, default=False
        Negated gradients for the Grad-CAM++ map, guided backpropagation of :math:`-y^c`.
    non_relu : {"raise", "keep"}, default="raise"
        See :class:`GuidedBackprop`.

    Returns
    -------
    Explanation
        ``heatmaps``: Grad-CAM++'s; ``attributions``: guided Grad-CAM++, shaped like the input;
        ``extras["guided_backprop"]``: the guided-backpropagation image.

    Raises
    ------
    ValueError
        As :class:`~keras_gradcam.GradCAMPlusPlus` and :class:`GuidedBackprop`.

    Notes
    -----
    .. math:: GGC^{c}_{++}(x) = GB^c(x) \odot \mathrm{Nrm}\big(\mathrm{Up}(L^c_{\text{Grad-CAM++}})\big)

    As in the Grad-CAM++ paper, which pairs its maps with guided backpropagation the way Grad-CAM
    does.

    References
    ----------
    A. Chattopadhyay et al., "Grad-CAM++: Improved Visual Explanations for Deep Convolutional
    Networks", WACV 2018, arXiv:1710.11063.

    Examples
    --------
    >>> exp = GuidedGradCAMPlusPlus(model)(images)   # doctest: +SKIP
    >>> exp.attributions.shape                       # doctest: +SKIP
    (8, 64, 64, 3)
    """

    name = "guided-gradcam++"
    display_name = "Guided Grad-CAM++"
    supports = frozenset({"eigen_smooth", "relu"})

    def __init__(self, model, layer: LayerSpec = None, *, non_relu: str = "raise", **kwargs):
        super().__init__(model, layer, **kwargs)
        self._init_guided(non_relu)
