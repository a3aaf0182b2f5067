"""XGrad-CAM (Fu et al., BMVC 2020)."""

from __future__ import annotations

from keras import ops

from ..core.engine import BaseCAM
from ..core.layers import LayerSpec
from ..core.postprocess import Tensor, spatial_sum
from ..core.smoothing import OPTIONS
from ..core.validate import positive_float


class XGradCAM(BaseCAM):
    r"""XGrad-CAM: gradients averaged with weights proportional to the activations.

    Derived from the paper's sensitivity and conservation axioms: for a conv -> global average
    pooling -> linear head the pre-ReLU map sums to the class score minus its bias.

    Parameters
    ----------
    model, layer, output, score, counterfactual, batch_size
        See :class:`~keras_gradcam.core.engine.BaseCAM`.
    eps : float, default=1e-6
        A channel whose activation sum is at most ``eps`` times the sum of its absolute values gets
        weight 0 (a dead channel, or a signed channel whose sum cancels out and would give an
        exploding weight). Relative, so the weights do not depend on the scale of the activations.

    Notes
    -----
    .. math:: \alpha^c_k = \sum_{ij} \frac{A^k_{ij}}{\sum_{ab} A^k_{ab}}
              \frac{\partial y^c}{\partial A^k_{ij}},\qquad
              L^c = \mathrm{ReLU}\Big(\sum_k \alpha^c_k A^k\Big)

    The official code adds ``1e-6`` to the denominator instead of zeroing; both agree wherever the
    activation sum is not tiny (for post-ReLU activations the sum is its absolute sum, so only dead
    channels are zeroed). One forward and one backward pass.

    References
    ----------
    R. Fu et al., "Axiom-based Grad-CAM: Towards Accurate Visualization and Explanation of CNNs",
    BMVC 2020.
    """

    name = "xgradcam"
    display_name = "XGrad-CAM"
    supports = frozenset(OPTIONS)  # aug_smooth, eigen_smooth, relu

    def __init__(self, model, layer: LayerSpec = None, *, eps: float = 1e-6, **kwargs):
        self.eps = positive_float("eps", eps, allow_zero=True)
        super().__init__(model, layer, **kwargs)

    def get_config(self):
        return {**super().get_config(), "eps": self.eps}

    def compute(self, acts: Tensor, grads: Tensor) -> Tensor:
        total = spatial_sum(acts)
        ok = ops.logical_and(ops.abs(total) > self.eps * spatial_sum(ops.abs(acts)), total != 0)
        weights = ops.where(ok, spatial_sum(grads * acts) / ops.where(ok, total, 1.0), 0.0)
        return self.combine(acts, weights)
