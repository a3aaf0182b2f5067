"""Grad-CAM element-wise (pytorch-grad-cam's ``GradCAMElementWise``)."""

from __future__ import annotations

from keras import ops

from ..core.engine import BaseCAM
from ..core.postprocess import Tensor
from ..core.smoothing import OPTIONS


class GradCAMElementWise(BaseCAM):
    r"""Grad-CAM element-wise: the positive part of gradient times activation, per channel and position.

    Intuition: like HiResCAM each position keeps its own gradient, but the product is rectified
    *before* the channel sum, so a channel with negative evidence at a position cannot cancel
    another channel's positive evidence there. The map shows all positive evidence, channel by
    channel.

    Parameters
    ----------
    model, layer, output, score, counterfactual, batch_size
        See :class:`~keras_gradcam.core.engine.BaseCAM`. ``counterfactual=True`` negates the
        gradients: the map then sums the negative evidence, :math:`\sum_k \mathrm{ReLU}(-g^k \odot A^k)`.

    Notes
    -----
    With :math:`g^k = \partial y^c / \partial A^k` (``y^c`` the pre-softmax score):

    .. math:: L^c_{ij} = \sum_k \mathrm{ReLU}\big(g^k_{ij} A^k_{ij}\big)

    HiResCAM is :math:`\mathrm{ReLU}\big(\sum_k g^k_{ij} A^k_{ij}\big)`: the two agree where the
    channels' products at a position share a sign, and element-wise is never smaller. The method
    has no paper: it is a variant that pytorch-grad-cam offers (``GradCAMElementWise``), followed
    here exactly. One forward and one backward pass.

    References
    ----------
    J. Gildenblat and contributors, "PyTorch library for CAM methods" (pytorch-grad-cam),
    ``pytorch_grad_cam/grad_cam_elementwise.py``.

    Examples
    --------
    >>> exp = kg.GradCAMElementWise(model, layer="conv2d_1")(images)   # doctest: +SKIP
    """

    name = "gradcam-elementwise"
    display_name = "Grad-CAM element-wise"
    supports = frozenset(OPTIONS)  # aug_smooth, eigen_smooth, relu

    def compute(self, acts: Tensor, grads: Tensor) -> Tensor:
        return self.combine(ops.relu(grads * acts))
