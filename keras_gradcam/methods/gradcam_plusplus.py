"""Grad-CAM++ (Chattopadhyay et al., WACV 2018)."""

from __future__ import annotations

from keras import ops

from ..core.engine import BaseCAM
from ..core.layers import LayerSpec
from ..core.postprocess import Tensor, spatial_sum
from ..core.smoothing import OPTIONS
from ..core.validate import one_of

ALPHA_NORMS = (None, "positive", "all")


def gradcampp_alpha(acts: Tensor, grads: Tensor, mode: str | None = None, eps: float = 1e-7) -> Tensor:
    r"""Paper Eq. 19 in its stable form, :math:`\alpha = 1 / (2 + g \sum_{ab} A_{ab})`.

    Equal to :math:`g^2 / (2g^2 + \sum_{ab}A_{ab}\, g^3)` wherever ``g != 0``. Zero where ``g <= 0``
    (it is multiplied by ReLU(g) anyway) and where the denominator is ``<= eps`` (possible only
    for layers with negative activations, where the closed form breaks down).

    ``mode`` renormalises alpha per channel, as some implementations do (not the paper):
    ``"positive"`` divides by its sum over the positive-gradient positions (original TF code),
    ``"all"`` by its sum over every position with a non-zero gradient, negative ones included
    (tf-keras-vis).
    """
    den = 2.0 + grads * spatial_sum(acts, keepdims=True)
    defined = ops.logical_and(grads != 0, ops.abs(den) > eps)
    alpha = ops.where(defined, 1.0 / ops.where(defined, den, 1.0), 0.0)
    positive = ops.where(ops.logical_and(grads > 0, den > eps), alpha, 0.0)
    if mode is None:
        return positive
    return ops.divide_no_nan(positive, spatial_sum(positive if mode == "positive" else alpha, keepdims=True))


class GradCAMPlusPlus(BaseCAM):
    r"""Grad-CAM++: positive gradients weighted per position by the paper's alpha coefficients.

    Grad-CAM averages gradients, so a large object dominates small ones; Grad-CAM++ weights each
    position so that every instance of the class contributes, which helps with several objects
    of the same class in one image.

    Parameters
    ----------
    model, layer, output, score, counterfactual, batch_size
        See :class:`~keras_gradcam.core.engine.BaseCAM`.
    alpha_norm : {None, "positive", "all"}, default=None
        None follows the paper (no renormalisation). ``"positive"`` divides alpha per channel by
        its sum over positive-gradient positions (the original TF code), ``"all"`` by its sum
        over all positions (tf-keras-vis).

    Notes
    -----
    With :math:`g = \partial S^c / \partial A^k_{ij}` the gradient of the pre-softmax score and
    :math:`Y^c = \exp(S^c)` (paper Eq. 12-19; the network after the layer is assumed
    piece-wise linear, so only first derivatives are needed):

    .. math:: \alpha^{kc}_{ij} = \frac{g^2}{2 g^2 + \sum_{ab} A^k_{ab}\, g^3},\qquad
              w^c_k = \sum_{ij} \alpha^{kc}_{ij}\, \mathrm{ReLU}(g),\qquad
              L^c = \mathrm{ReLU}\Big(\sum_k w^c_k A^k\Big)

    The sum of the activations, as in the paper and its original code (xplique uses the mean,
    torch-cam :math:`\sum_{ab} A_{ab} g_{ab}^3`). The :math:`\exp(S^c)` factor cancels in alpha and
    only scales each sample's weights, so it is dropped (it overflows float32 above 88). One
    forward and one backward pass.

    References
    ----------
    A. Chattopadhyay et al., "Grad-CAM++: Improved Visual Explanations for Deep Convolutional
    Networks", WACV 2018, arXiv:1710.11063, Eq. 19-20.
    """

    name = "gradcam++"
    display_name = "Grad-CAM++"
    supports = frozenset(OPTIONS)  # aug_smooth, eigen_smooth, relu

    def __init__(self, model, layer: LayerSpec = None, *, alpha_norm: str | None = None, **kwargs):
        self.alpha_norm = one_of("alpha_norm", alpha_norm, ALPHA_NORMS)
        super().__init__(model, layer, **kwargs)

    def get_config(self):
        return {**super().get_config(), "alpha_norm": self.alpha_norm}

    def compute(self, acts: Tensor, grads: Tensor) -> Tensor:
        alpha = gradcampp_alpha(acts, grads, self.alpha_norm)
        return self.combine(acts, spatial_sum(alpha * ops.relu(grads)))
