"""Grad-CAM (Selvaraju et al., ICCV 2017 / IJCV 2020)."""

from __future__ import annotations

from ..core.engine import BaseCAM
from ..core.postprocess import Tensor, spatial_mean
from ..core.smoothing import OPTIONS


class GradCAM(BaseCAM):
    r"""Grad-CAM: activations weighted by their global-average-pooled gradients.

    Intuition: a channel matters for class *c* as much as, on average over the map, raising it
    raises the class score. The map keeps only positive evidence.

    Parameters
    ----------
    model, layer, output, score, counterfactual, batch_size
        See :class:`~keras_gradcam.core.engine.BaseCAM`. ``counterfactual=True`` negates the gradients
        (paper section on counterfactual explanations): ``ReLU(-M)`` of the pre-ReLU map ``M``.

    Notes
    -----
    With ``y^c`` the pre-softmax score and ``A^k`` channel *k* of the layer (``Z`` positions):

    .. math:: \alpha^c_k = \frac{1}{Z}\sum_{ij} \frac{\partial y^c}{\partial A^k_{ij}},\qquad
              L^c = \mathrm{ReLU}\Big(\sum_k \alpha^c_k A^k\Big)

    The mean (paper) rather than the original Lua code's sum: a constant factor that
    normalisation removes. One forward and one backward pass for the whole batch.

    References
    ----------
    R. R. Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
    Localization", ICCV 2017, Eq. 1-2.

    Examples
    --------
    >>> cam = kg.GradCAM(model, layer="conv2d_1")     # doctest: +SKIP
    >>> exp = cam(images, targets=[3, 7])             # doctest: +SKIP
    """

    name = "gradcam"
    display_name = "Grad-CAM"
    supports = frozenset(OPTIONS)  # aug_smooth, eigen_smooth, relu

    def compute(self, acts: Tensor, grads: Tensor) -> Tensor:
        return self.combine(acts, spatial_mean(grads))
