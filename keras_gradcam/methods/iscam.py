"""IS-CAM, Integrated Score-CAM (Naidu et al. 2020): Score-CAM with masks integrated along a path."""

from __future__ import annotations

from typing import Any

from keras import ops

from ..core.layers import LayerSpec
from ..core.postprocess import Tensor
from ..core.validate import one_of, positive_int
from .scorecam import ScoreCAM

__all__ = ["ISCAM"]

ISCAM_PATHS = ("linear", "cumulative")


class ISCAM(ScoreCAM):
    r"""IS-CAM: Score-CAM whose channel scores are averaged along a path from 0 to the mask.

    As Integrated Gradients does for gradients, IS-CAM scores each channel's mask at ``n_steps``
    intensities between 0 and the full mask and averages the scores, so that a channel is credited
    for what its mask does at every strength, not only at full strength.

    Parameters
    ----------
    model, layer, output, score, batch_size
        See :class:`~keras_gradcam.core.engine.BaseCAM`. ``batch_size`` bounds the number of masked
        images in one forward pass (the steps of a channel go through the model together with the
        other channels). ``counterfactual`` is not supported (no gradients).
    n_steps : int, default=10
        Points on the path (torch-cam's ``num_samples``).
    path : {"linear", "cumulative"}, default="linear"
        The coefficient of step ``i = 1..N``: ``"linear"`` is the paper's equation,
        ``c_i = i / N``, points from ``1/N`` to the full mask; ``"cumulative"`` is torch-cam's
        ``c_i = sum_{j<=i} j / N = i (i + 1) / (2 N)``, which exceeds 1 for ``i > 1`` when ``N > 1``.
    weights : {"channel-softmax", "probability"}, default="channel-softmax"
        ``"channel-softmax"`` (the paper, torch-cam): a softmax over channels of the mean explained
        score (the logit by default). ``"probability"``: the mean post-softmax probability of the
        target class, as in :class:`~keras_gradcam.methods.scorecam.ScoreCAM`.
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
        ``n_steps < 1``, an unknown ``path``, and everything
        :class:`~keras_gradcam.methods.scorecam.ScoreCAM` refuses (token inputs, no image input of
        the heatmap's size, ``counterfactual=True``).

    Notes
    -----
    With Score-CAM's mask :math:`H^k = s(\mathrm{Up}(A^k))` (upsample, then min-max to [0, 1]):

    .. math:: w_k = \mathrm{softmax}_k\Big(\frac{1}{N}\sum_{i=1}^{N} S^c\big(X \circ c_i H^k\big)\Big),
              \qquad L^c = \mathrm{ReLU}\Big(\sum_k w_k A^k\Big)

    The score of the clean input, subtracted in the paper, cancels in the softmax over channels.
    Whatever the path, ``c_1 = 1`` when ``N = 1``, so ``n_steps=1`` gives Score-CAM with the same
    ``weights`` exactly. Channels with a constant map get weight 0. The map is deterministic (no
    noise). Cost: one forward pass plus ``N x K`` forward passes per image (``K`` channels, or
    ``max_channels``), batched, no backward pass.

    References
    ----------
    R. Naidu, A. Ghosh, Y. Maurya, S. R. Nayak K, S. S. Kundu, "IS-CAM: Integrated Score-CAM for
    axiomatic-based explanations", arXiv:2010.03023, 2020.

    Examples
    --------
    >>> cam = ISCAM(model, layer="conv2d_1", n_steps=4, verbose=0)   # doctest: +SKIP
    >>> exp = cam(images)                                            # doctest: +SKIP
    """

    name = "iscam"
    display_name = "IS-CAM"

    def __init__(
        self,
        model,
        layer: LayerSpec = None,
        *,
        n_steps: int = 10,
        path: str = "linear",
        weights: str = "channel-softmax",
        **kwargs,
    ):
        self.n_steps = positive_int("n_steps", n_steps, expected="a positive int (points on the path)")
        self.path = one_of(
            "path", path, ISCAM_PATHS, expected="'linear' (c_i = i/N, the paper) or 'cumulative' (torch-cam)"
        )
        super().__init__(model, layer, weights=weights, **kwargs)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "n_steps": self.n_steps, "path": self.path}

    def _copies(self) -> int:
        return self.n_steps

    def _mask_terms(self, ids: Tensor, size: tuple) -> dict:
        step = ops.cast(ids % self.n_steps + 1, "float32")  # i = 1..N
        n = float(self.n_steps)
        coefficient = step / n if self.path == "linear" else step * (step + 1.0) / (2.0 * n)
        return {"scale": coefficient}
