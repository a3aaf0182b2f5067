"""HiResCAM (Draelos & Carin, 2020)."""

from __future__ import annotations

from ..core.engine import BaseCAM
from ..core.postprocess import Tensor
from ..core.smoothing import OPTIONS


class HiResCAM(BaseCAM):
    r"""HiResCAM: the element-wise product of gradients and activations, summed over channels.

    Unlike Grad-CAM it does not average the gradients over space, so each position keeps its own
    gradient. For a layer followed by flatten and one linear layer the (pre-ReLU) map sums exactly
    to the score minus the bias, :math:`\sum_{ij} L_{ij} = y^c - b^c`.

    Parameters
    ----------
    model, layer, output, score, counterfactual, batch_size
        See :class:`~keras_gradcam.core.engine.BaseCAM`.

    Notes
    -----
    .. math:: L^c = \mathrm{ReLU}\Big(\sum_k \frac{\partial y^c}{\partial A^k} \odot A^k\Big)

    The ReLU is a display choice kept for parity with other libraries; the paper's guarantee is
    about the signed map: with ``relu=False`` ``exp.layer_heatmaps`` is that map, and for a conv ->
    global average pooling (or flatten) -> linear head it sums to ``y^c - b^c`` exactly. One forward and one backward
    pass. For a conv -> global average pooling -> linear head HiResCAM equals Grad-CAM.

    References
    ----------
    R. L. Draelos and L. Carin, "Use HiResCAM instead of Grad-CAM for faithful explanations of
    convolutional neural networks", arXiv:2011.08891, 2020.
    """

    name = "hirescam"
    display_name = "HiResCAM"
    supports = frozenset(OPTIONS)  # aug_smooth, eigen_smooth, relu

    def compute(self, acts: Tensor, grads: Tensor) -> Tensor:
        return self.combine(acts, grads)
