"""Score-CAM (Wang et al., CVPR-W 2020).

The channel-perturbation driver it shares with Ablation-CAM (and the XLA fusion of the masking)
lives in :mod:`keras_gradcam.methods.perturbation`; this module holds the masking and the weights.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from ..core.backend import fused
from ..core.layers import LayerSpec
from ..core.postprocess import Tensor, nonconstant, normalize, resize
from ..core.targets import batch_of
from ..core.validate import one_of
from .inputs import refuse_token_inputs
from .perturbation import ChannelPerturbation

__all__ = ["ScoreCAM", "mask_images"]

SCORECAM_WEIGHTS = ("probability", "channel-softmax")


def mask_images(images, maps, size, channels_first, *, scale=None, noise=None):
    """Score-CAM's masked inputs ``X * s(Up(A^k))``: upsample, then min-max normalise, then multiply.

    ``images`` ``(B, ...)``, ``maps`` ``(c * B, *spatial)`` copy-major. Returns the ``(c * B, ...)``
    masked images and whether each upsampled map was non-constant (relative to its magnitude).
    ``scale`` ``(c * B,)`` multiplies each normalised mask (IS-CAM's path) and ``noise``
    ``(c * B, *size)`` is added to it (SS-CAM), before the product with the image.
    """
    up = resize(maps, size)
    valid = nonconstant(up)
    masks = ops.cast(normalize(up), images.dtype)
    if scale is not None:
        masks = masks * ops.reshape(ops.cast(scale, masks.dtype), (-1,) + (1,) * len(size))
    if noise is not None:
        masks = masks + ops.cast(noise, masks.dtype)
    masks = ops.reshape(masks, (-1, ops.shape(images)[0], *ops.shape(masks)[1:]))  # (c, B, *size)
    masks = masks[:, :, None] if channels_first else masks[..., None]
    masked = masks * images[None]
    return ops.reshape(masked, (-1, *ops.shape(images)[1:])), valid


class ScoreCAM(ChannelPerturbation):
    r"""Score-CAM: each channel weighted by the model's confidence on the input masked by it.

    Gradient-free: every channel of the layer, upsampled and min-max scaled to [0, 1], is used as
    a soft mask on the input; the more the masked image alone convinces the model of the target
    class, the larger the channel's weight.

    Parameters
    ----------
    model, layer, output, score, batch_size
        See :class:`~keras_gradcam.core.engine.BaseCAM`. ``batch_size`` bounds the number of masked images
        in one forward pass. ``counterfactual`` is not supported (no gradients).
    weights : {"probability", "channel-softmax"}, default="probability"
        ``"probability"`` (official code, paper section 3.2): the post-softmax probability of the
        target class on the masked input. If the explained output already ends in a softmax or a
        sigmoid (``score="output"`` on such a model) it is used as it is; otherwise the head's own
        link is applied to the logits, never twice: its sigmoid for a sigmoid head (multi-label,
        or a one-unit binary classifier), else a softmax over the class axis.
        ``"channel-softmax"`` (paper Algorithm 1): a softmax over channels of the explained score
        (the logit by default) on the masked inputs; the baseline term of Algorithm 1 cancels in
        that softmax.
    max_channels : int, optional
        "Faster Score-CAM": perturb only the ``max_channels`` channels with the largest spatial
        standard deviation in each sample; the others get weight 0.
    verbose : {0, 1, 2}, default=1
        ``keras.utils.Progbar`` over the forward passes; 0 is silent.

    Returns
    -------
    Explanation
        ``extras["channel_weights"]`` holds the ``(n_samples, channels)`` weights.

    Raises
    ------
    ValueError
        Unknown ``weights``, ``max_channels < 1``, ``counterfactual=True``, a model without an
        image input of the heatmap's size to mask, or one whose inputs all take integer token ids
        (an integer input, or an ``Embedding`` reading an input): a masked token id is another
        token. Ablation-CAM perturbs the layer instead and works on such models. (Token inputs
        next to an image input are not masked, only repeated.)

    Notes
    -----
    With :math:`H^k = s(\mathrm{Up}(A^k))`, :math:`s` the per-map min-max to [0, 1] (upsample
    *then* normalise), and the masked input :math:`X \circ H^k` (the preprocessed input, so masked
    pixels become 0):

    .. math:: \alpha^c_k = \mathrm{softmax}\big(f(X \circ H^k)\big)_c,\qquad
              L^c = \mathrm{ReLU}\Big(\sum_k \alpha^c_k A^k\Big)

    Channels whose upsampled map is constant (a range within float rounding of its magnitude)
    are skipped (weight 0), as in the official code. With a callable target the weight is the callable's score on the masked
    input (``"probability"``) or its softmax over channels (``"channel-softmax"``). The map is
    computed at layer resolution, then upsampled (the official code sums upsampled maps; the two
    differ only by the order of the ReLU and the interpolation). Cost: one forward pass plus
    ``K`` (or ``max_channels``) forward passes per sample, no backward pass.

    References
    ----------
    H. Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural
    Networks", CVPR Workshops 2020, arXiv:1910.01279, Eq. 7-9 and Algorithm 1.

    Examples
    --------
    >>> cam = ScoreCAM(model, layer="conv2d_1", max_channels=64, verbose=0)   # doctest: +SKIP
    >>> exp = cam(images)                                                     # doctest: +SKIP
    >>> exp.extras["channel_weights"].shape                                   # doctest: +SKIP
    (8, 128)
    """

    name = "scorecam"
    display_name = "Score-CAM"
    input_action = "multiplies the input by masks"  # refuses token models (methods.inputs)
    # the masks come from the layer, the score from the masked image through the model's own path
    off_branch = None
    off_branch_note = (
        "the method still runs, as it uses the layer's channels only as masks on the input and scores each masked "
        "image by that output through the model's own path, so the map shows which of those channels' regions keep "
        "that output's score, not how the output uses this layer. To explain the output the layer feeds, pass "
        "output=<index or name>; for that output's own evidence, pick a layer on its path."
    )

    def __init__(
        self, model, layer: LayerSpec = None, *, weights: str = "probability", max_channels: int | None = None, **kwargs
    ):
        self.weights = one_of("weights", weights, SCORECAM_WEIGHTS)
        super().__init__(model, layer, max_channels=max_channels, **kwargs)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "weights": self.weights}

    def _setup(self, sample=None) -> None:
        super()._setup(sample)
        refuse_token_inputs(self.model, self.display_name, self.input_action, only_if_all=True)

    def _mask_terms(self, ids: Tensor, size: tuple) -> dict:
        """Graph code: extra :func:`mask_images` arguments (``scale``, ``noise``) for the ``(c * B,)``
        copy-major copy ids of a pass; none for Score-CAM (SS-CAM and IS-CAM override it)."""
        return {}

    def _perturbed_scores(self, xb, acts, ids, targets, size):
        c = ops.shape(ids)[1]
        copies = self._copies()
        channels = ids // copies if copies > 1 else ids
        terms = self._mask_terms(ops.reshape(ops.transpose(ids), (-1,)), tuple(size))
        rank = len(acts.shape)
        index = ops.reshape(channels, (-1,) + (1,) * (rank - 2) + (c,))
        maps = ops.take_along_axis(acts, index, axis=-1)  # (B, *spatial, c)
        maps = ops.transpose(maps, [rank - 1] + list(range(rank - 1)))  # (c, B, *spatial)
        maps = ops.reshape(maps, (-1, *ops.shape(maps)[2:]))  # (c * B, *spatial)
        first = self.layers[0].channels_first
        valid, found = None, []

        def one(a):
            nonlocal valid
            dims = tuple(a.shape[2:] if first else a.shape[1:-1])
            if len(a.shape) == len(size) + 2 and dims == tuple(size):
                # fused by XLA, the masking costs a few percent of a forward pass; unfused, up to half
                masked, valid = fused(lambda images, m, t: mask_images(images, m, tuple(size), first, **t), a, maps, terms)
                found.append(True)
                return masked
            return self._tile(a, c)

        masked = keras.tree.map_structure(one, xb)
        if not found:
            raise ValueError(
                f"Score-CAM masks image inputs of spatial size {tuple(size)} (the heatmap size), but the model "
                "has no such input; pass images shaped (n_samples, height, width, channels)."
            )
        cap = self._capture(masked, self._tile_targets(targets, c), gradients=False)
        if not batch_of(targets).names_classes or self.weights == "channel-softmax":
            got = cap.scores
        else:
            out = ops.cast(cap.output, "float32")
            probs = self._capture.probabilities(out)
            got = ops.take_along_axis(probs, cap.targets[:, None], axis=1)[:, 0]
        return ops.reshape(got, (c, -1)), ops.reshape(valid, (c, -1))

    def _weights(self, clean_scores, scores, valid):
        copies = self._copies()
        if copies > 1:  # SS-CAM, IS-CAM: the mean over a channel's copies (its validity is theirs)
            scores = scores.reshape(scores.shape[0], -1, copies).mean(axis=2)
            valid = valid.reshape(valid.shape[0], -1, copies)[..., 0]
        if self.weights == "probability":
            return np.where(valid, scores, 0.0)
        logits = np.where(valid, scores, -np.inf)
        top = logits.max(axis=1, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        e = np.where(valid, np.exp(logits - top), 0.0)
        total = e.sum(axis=1, keepdims=True)
        return np.divide(e, total, out=np.zeros_like(e), where=total > 0)
