"""SS-CAM, Smoothed Score-CAM (Wang et al. 2020): Score-CAM with Gaussian noise on the masks."""

from __future__ import annotations

from typing import Any

from ..core.backend import stateless_normals
from ..core.layers import LayerSpec
from ..core.postprocess import Tensor
from ..core.validate import integer, positive_float, positive_int
from .scorecam import ScoreCAM

__all__ = ["SSCAM"]


class SSCAM(ScoreCAM):
    r"""SS-CAM: Score-CAM whose channel scores are averaged over noisy copies of each mask.

    Score-CAM's weight of a channel is the model's score on the input masked by that channel; a
    single mask gives a jumpy weight. SS-CAM adds Gaussian noise to each normalised mask
    ``n_samples`` times and averages the scores, which smooths the weights and sharpens the map.

    Parameters
    ----------
    model, layer, output, score, batch_size
        See :class:`~keras_gradcam.core.engine.BaseCAM`. ``batch_size`` bounds the number of noisy
        masked images in one forward pass (the draws of a channel go through the model together
        with the other channels). ``counterfactual`` is not supported (no gradients).
    n_samples : int, default=35
        Noisy copies of each channel's mask (torch-cam's ``num_samples``).
    noise_std : float, default=2.0
        Standard deviation of the noise added to the mask, whose values are in [0, 1]
        (torch-cam's ``std``). 0 gives Score-CAM.
    seed : int, default=0
        Seed of the noise. The noise of draw ``n`` of channel ``k`` depends only on
        ``(seed, k, n)``, never on the global RNG, the image, the batch or ``batch_size``: the same
        image gets the same map in any batch, and every image sees the same draws. The draw is
        the backend's stateless normal of the pair ``(seed, k * n_samples + n)``:
        ``tf.random.stateless_normal`` on TensorFlow; JAX and PyTorch have their own generators
        (docs/backends.md), so their noisy maps differ from TensorFlow's in the draws only.
    weights : {"channel-softmax", "probability"}, default="channel-softmax"
        ``"channel-softmax"`` (torch-cam, Score-CAM's Algorithm 1): a softmax over channels of the
        mean explained score (the logit by default). ``"probability"``: the mean post-softmax
        probability of the target class, as in :class:`~keras_gradcam.methods.scorecam.ScoreCAM`.
    max_channels : int, optional
        Perturb only the ``max_channels`` channels with the largest spatial standard deviation.
    verbose : {0, 1, 2}, default=1
        Progress bar over the forward passes on standard error; 0 is silent.

    Returns
    -------
    Explanation
        ``extras["channel_weights"]`` holds the ``(n_samples, channels)`` weights.

    Raises
    ------
    ValueError
        ``n_samples < 1``, a negative ``noise_std``, and everything
        :class:`~keras_gradcam.methods.scorecam.ScoreCAM` refuses (token inputs, no image input of
        the heatmap's size, ``counterfactual=True``).

    Notes
    -----
    With Score-CAM's mask :math:`H^k = s(\mathrm{Up}(A^k))` (upsample, then min-max to [0, 1]) and
    :math:`\delta_n \sim \mathcal{N}(0, \sigma^2)` of the mask's shape (one value per pixel, shared
    by the input's colour channels):

    .. math:: w_k = \mathrm{softmax}_k\Big(\frac{1}{N}\sum_{n=1}^{N} S^c\big(X \circ (H^k + \delta_n)\big)\Big),
              \qquad L^c = \mathrm{ReLU}\Big(\sum_k w_k A^k\Big)

    The score of the clean input, subtracted in the paper and in torch-cam, cancels in the softmax
    over channels. The paper adds the noise to the mask or to the input; this class follows
    torch-cam (noise on the normalised mask, ``N=35``, ``sigma=2``). torch-cam normalises the layer's
    maps before upsampling them; here, as in our Score-CAM, they are upsampled first, so that
    ``n_samples=1, noise_std=0`` gives Score-CAM with the same ``weights`` exactly. Channels with a
    constant map get weight 0. Cost: one forward pass plus ``N x K`` forward passes per image
    (``K`` channels, or ``max_channels``), batched, no backward pass.

    References
    ----------
    H. Wang, R. Naidu, J. Michael, S. S. Kundu, "SS-CAM: Smoothed Score-CAM for Sharper Visual
    Feature Localization", arXiv:2006.14255, 2020.

    Examples
    --------
    >>> cam = SSCAM(model, layer="conv2d_1", n_samples=8, verbose=0)   # doctest: +SKIP
    >>> exp = cam(images)                                              # doctest: +SKIP
    """

    name = "sscam"
    display_name = "SS-CAM"

    def __init__(
        self,
        model,
        layer: LayerSpec = None,
        *,
        n_samples: int = 35,
        noise_std: float = 2.0,
        seed: int = 0,
        weights: str = "channel-softmax",
        **kwargs,
    ):
        self.n_samples = positive_int("n_samples", n_samples, expected="a positive int (noisy copies of each mask)")
        self.noise_std = positive_float(
            "noise_std", noise_std, allow_zero=True, expected="a finite number >= 0 (the noise's standard deviation)"
        )
        self.seed = integer("seed", seed)
        super().__init__(model, layer, weights=weights, **kwargs)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "n_samples": self.n_samples, "noise_std": self.noise_std, "seed": self.seed}

    def _copies(self) -> int:
        return self.n_samples

    def _mask_terms(self, ids: Tensor, size: tuple) -> dict:
        if self.noise_std == 0:
            return {}
        return {"noise": self.noise_std * stateless_normals(size, self.seed, ids)}
