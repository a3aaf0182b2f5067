"""Ablation-CAM (Desai & Ramaswamy, WACV 2020)."""

from __future__ import annotations

import warnings
from typing import Any

import keras
import numpy as np
from keras import ops

from ..core.capture import Capture
from ..core.layers import LayerSpec
from ..core.tokens import token_mask
from ..core.validate import boolean, one_of
from .perturbation import ChannelPerturbation, head_model

__all__ = ["AblationCAM"]

DROPS = ("relative", "absolute")


class AblationCAM(ChannelPerturbation):
    r"""Ablation-CAM: each channel weighted by how much the class score drops without it.

    Gradient-free: channel *k* of the layer is set to zero inside the network (an intervention
    on the activations, not on the input) and the forward pass is finished; a channel whose
    removal lowers the target score a lot gets a large weight.

    Parameters
    ----------
    model, layer, output, score, batch_size
        See :class:`~keras_gradcam.core.engine.BaseCAM`. ``batch_size`` bounds the number of ablated copies
        in one forward pass. ``counterfactual`` is not supported (no gradients).
    drop : {"relative", "absolute"}, default="relative"
        ``"relative"`` is the paper's :math:`(y^c - y^c_k) / y^c`; ``"absolute"`` is
        :math:`y^c - y^c_k`. The relative drop is meaningless when :math:`y^c \le 0` (the sign
        flips): such samples use the absolute drop and a ``UserWarning`` says how many there were.
    head_only : bool, default=True
        When the layer is a top-level layer of a Functional or Sequential model and the model's
        output depends on the input only through that layer (no skip connection around it), the
        ablated passes run only the sub-network after the layer, which is much cheaper. Otherwise,
        and with ``head_only=False``, every ablated pass runs the whole model with the channel
        zeroed as the layer's output is produced (this works for layers inside nested backbones).
        Both give the same weights.
    max_channels : int, optional
        Ablate only the ``max_channels`` channels with the largest spatial standard deviation of
        their activation map in each sample (the selection of Score-CAM's ``max_channels``); the
        others get weight 0 and do not enter the map. Bounds the cost on wide layers.
    verbose : {0, 1, 2}, default=1
        ``keras.utils.Progbar`` over the ablated forward passes; 0 is silent.

    Returns
    -------
    Explanation
        ``extras["channel_weights"]`` holds the ``(n_samples, channels)`` weights.

    Raises
    ------
    ValueError
        Unknown ``drop``, ``max_channels < 1`` or ``counterfactual=True``.

    Notes
    -----
    With :math:`y^c` the explained score (the pre-softmax logit by default) and :math:`y^c_k` the
    same score with channel :math:`A^k` set to 0:

    .. math:: w^c_k = \frac{y^c - y^c_k}{y^c},\qquad L^c = \mathrm{ReLU}\Big(\sum_k w^c_k A^k\Big)

    Ablation sets the channel to 0, as in the paper (pytorch-grad-cam uses ``min - 1e7`` for
    layers with negative activations).

    Cost: one forward pass of the batch plus ``K`` ablated passes per sample (``K`` = channels of
    the layer, or ``max_channels``), batched ``batch_size`` copies per pass, no backward pass.
    What an ablated pass runs depends on the layer (:attr:`uses_head` says which):

    - the layer is a top-level layer and everything after it depends on the input only through
      it (typically the last feature map before the pooling): only the sub-network after the
      layer, usually a few cheap layers;
    - a connection goes around the layer (a layer *inside* a residual block, e.g. the default
      layer of ConvNeXt, ``stage_3_block_2_identity``, which precedes the block's residual add),
      or the layer sits in a nested backbone, or ``head_only=False``: the whole network, so the
      cost is ``K`` full forward passes per sample. On ConvNeXtTiny at 96x96 (768 channels) that
      is 1536 full forward passes for 2 images, minutes on a CPU; ``max_channels=64`` makes it 128.

    References
    ----------
    S. Desai and H. G. Ramaswamy, "Ablation-CAM: Visual Explanations for Deep Convolutional
    Network via Gradient-free Localization", WACV 2020.

    Examples
    --------
    >>> cam = AblationCAM(model, layer="conv2d_1", verbose=0)   # doctest: +SKIP
    >>> exp = cam(images)                                       # doctest: +SKIP
    >>> exp.extras["channel_weights"].shape                     # doctest: +SKIP
    (8, 128)
    """

    name = "ablationcam"
    display_name = "Ablation-CAM"
    off_branch = "ablating its channels cannot change that output, so every Ablation-CAM map would be zero"

    def __init__(self, model, layer: LayerSpec = None, *, drop: str = "relative", head_only: bool = True, **kwargs):
        self.drop = one_of("drop", drop, DROPS)
        self.head_only = boolean("head_only", head_only)
        self._head_capture: Capture | None = None
        self._nonpositive = 0
        super().__init__(model, layer, **kwargs)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "drop": self.drop, "head_only": self.head_only}

    # -- the sub-network after the layer -------------------------------------------------------
    def _setup(self, sample=None) -> None:
        super()._setup(sample)
        head = head_model(self.model, self.layers[0]) if self.head_only else None
        self._head_capture = None
        if head is not None:
            self._head_capture = Capture(head, [], output=self._capture.output_index, score=self.score)

    @property
    def uses_head(self) -> bool:
        """Whether ablated passes run only the sub-network after the layer."""
        if self._capture is None:
            raise RuntimeError("the model is not built yet; call the explainer on a batch first.")
        return self._head_capture is not None

    def _contexts(self) -> list:
        extra = [self._head_capture.active()] if self._head_capture is not None else []
        return super()._contexts() + extra

    # -- the ablated passes --------------------------------------------------------------------
    def _perturbed_scores(self, xb, acts, channels, targets, size):
        info = self.layers[0]
        c = ops.shape(channels)[1]
        k = acts.shape[-1]
        keep = ops.reshape(1.0 - ops.one_hot(ops.transpose(channels), k), (-1, k))  # (c * B, K)
        rank = len(acts.shape)
        tiled_targets = self._tile_targets(targets, c)
        if self._head_capture is not None:
            ablated = self._tile(acts, c) * ops.reshape(keep, (-1,) + (1,) * (rank - 2) + (k,))
            if info.channels_first:
                ablated = ops.transpose(ablated, [0, rank - 1] + list(range(1, rank - 1)))
            ablated = ops.cast(ablated, info.layer.output.dtype)
            cap = self._head_capture(ablated, tiled_targets, gradients=False)
        else:
            tiled = keras.tree.map_structure(lambda a: self._tile(a, c), xb)
            cap = self._capture(tiled, tiled_targets, gradients=False, edit=self._edit(keep))
        scores = ops.reshape(cap.scores, (c, -1))
        return scores, ops.ones_like(scores, dtype="bool")

    def _edit(self, keep):
        """The edit of the layer's raw output that zeroes, in copy ``j``, the channels ``keep`` (c * B, K) drops."""
        info = self.layers[0]
        k = keep.shape[-1]
        if info.tokens:  # raw tokens (B, T, K): the channel is zeroed on the patch tokens only
            def edit(i, out):
                drop = token_mask(out, info.prefix_tokens, info.reshape, info.grid) * (1.0 - ops.reshape(keep, (-1, 1, k)))
                return out * ops.cast(1.0 - drop, out.dtype)

            return edit
        rank = len(info.shape)
        shape = (-1, k) + (1,) * (rank - 2) if info.channels_first else (-1,) + (1,) * (rank - 2) + (k,)
        return lambda i, out: out * ops.cast(ops.reshape(keep, shape), out.dtype)

    def _begin(self) -> None:
        self._nonpositive = 0

    def _weights(self, clean_scores, scores, valid):
        y = clean_scores[:, None].astype(np.float64)
        drop = y - scores
        if self.drop == "absolute":
            return drop
        positive = y > 0
        self._nonpositive += int((~positive).sum())
        return np.where(positive, drop / np.where(positive, y, 1.0), drop)

    def _finish(self) -> None:
        if self._nonpositive:
            warnings.warn(
                f"{self._nonpositive} sample(s) have an explained score y <= 0, where the relative drop "
                "(y - y_k) / y is undefined or flips sign; their channel weights use the absolute drop "
                "y - y_k instead. Pass drop='absolute' to use it for all samples.",
                UserWarning,
                stacklevel=3,
            )
        self._nonpositive = 0
