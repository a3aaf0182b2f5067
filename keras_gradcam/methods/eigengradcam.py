"""Eigen-Grad-CAM (pytorch-grad-cam's ``EigenGradCAM``)."""

from __future__ import annotations

from typing import Any

from ..core.engine import BaseCAM
from ..core.layers import LayerSpec
from ..core.postprocess import Tensor
from ..core.validate import boolean
from .eigencam import eigen_map


class EigenGradCAM(BaseCAM):
    r"""Eigen-Grad-CAM: the first principal component of the gradient-weighted activations.

    Intuition: Eigen-CAM's dominant pattern, but of :math:`g \odot A` rather than :math:`A`, so
    that the map depends on the explained class (Eigen-CAM does not). The principal component
    keeps the pattern that most positions and channels share and drops noise that only some have.

    Parameters
    ----------
    model, layer, output, score, batch_size
        See :class:`~keras_gradcam.core.engine.BaseCAM`. ``counterfactual`` is not supported: the
        sign rule below makes the map of :math:`-g \odot A` the same as that of :math:`g \odot A`.
    center : bool, default=False
        Subtract each channel's spatial mean of :math:`g \odot A` before the SVD, as
        pytorch-grad-cam does; False by default, as for :class:`~keras_gradcam.EigenCAM`.
    relu : bool, default=False
        Apply a ReLU to the projection before upsampling (pytorch-grad-cam's generic
        post-processing; not part of the principal component). Heatmaps are min-max normalised
        either way.

    Raises
    ------
    ValueError
        ``counterfactual=True``.

    Notes
    -----
    Per sample, with :math:`O` the product :math:`g \odot A` (``g`` the gradient of the
    pre-softmax score) reshaped to (positions, channels) and :math:`O = U\Sigma V^\top`:

    .. math:: L = O\, v_1 \quad (\text{reshaped to the layer's spatial grid})

    The SVD's sign is arbitrary; as for Eigen-CAM the entry of largest absolute value is made
    positive (:func:`~keras_gradcam.methods.eigencam.eigen_map` computes both). pytorch-grad-cam
    centres and leaves the sign as the SVD returns it, then applies a ReLU: ``center=True,
    relu=True`` is its variant up to that sign. One forward and one backward pass, plus one
    batched SVD of a :math:`Z \times K` matrix per sample.

    References
    ----------
    J. Gildenblat and contributors, "PyTorch library for CAM methods" (pytorch-grad-cam),
    ``pytorch_grad_cam/eigen_grad_cam.py``; M. B. Muhammad and M. Yeasin, "Eigen-CAM: Class
    Activation Map using Principal Components", IJCNN 2020.

    Examples
    --------
    >>> exp = kg.EigenGradCAM(model, layer="conv2d_1")(images, targets=3)   # doctest: +SKIP
    """

    name = "eigengradcam"
    display_name = "Eigen-Grad-CAM"
    relu = False

    def __init__(self, model, layer: LayerSpec = None, *, center: bool = False, **kwargs):
        self.center = boolean("center", center)
        super().__init__(model, layer, **kwargs)
        if self.counterfactual:
            raise ValueError(
                "counterfactual=True negates the gradients, but Eigen-Grad-CAM's sign rule (largest entry "
                "positive) gives the same map for g*A and -g*A; use GradCAM(..., counterfactual=True) or "
                "GradCAMElementWise(..., counterfactual=True) for negative evidence."
            )

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "center": self.center}

    def compute(self, acts: Tensor, grads: Tensor) -> Tensor:
        return eigen_map(grads * acts, self.center)
