"""Eigen-CAM (Muhammad & Yeasin, IJCNN 2020)."""

from __future__ import annotations

from typing import Any

from ..core.engine import BaseCAM
from ..core.layers import LayerSpec
from ..core.postprocess import Tensor, eigen_map
from ..core.validate import boolean

__all__ = ["EigenCAM", "eigen_map"]


class EigenCAM(BaseCAM):
    r"""Eigen-CAM: the first principal component of the layer's activations.

    Class-agnostic and gradient-free: the map is where the layer's dominant activation pattern is
    strongest, whatever the target. ``exp.targets`` and ``exp.scores`` still report the top-1 class
    (or the given targets) for reference; they do not change the map.

    Parameters
    ----------
    model, layer, output, score, batch_size
        See :class:`~keras_gradcam.core.engine.BaseCAM`. ``counterfactual`` is not supported (no
        gradients).
    center : bool, default=False
        Subtract the per-channel mean before the SVD (pytorch-grad-cam); the paper does not centre.
    relu : bool, default=False
        Apply a ReLU to the projection before upsampling (pytorch-grad-cam's generic post-processing;
        not part of the method). Heatmaps are min-max normalised either way.

    Raises
    ------
    ValueError
        ``counterfactual=True``.

    Notes
    -----
    Per sample, with :math:`O` the activations reshaped to (positions, channels) and
    :math:`O = U\Sigma V^\top`:

    .. math:: L = O\, v_1 \quad (\text{reshaped to the layer's spatial grid})

    The SVD's sign is arbitrary; the rule here makes the entry of largest absolute value positive.
    One forward pass, no backward pass, plus one batched SVD of a :math:`Z \times K` matrix per
    sample. Being independent of everything above the layer, Eigen-CAM passes no
    model-randomisation sanity check for those layers.

    References
    ----------
    M. B. Muhammad and M. Yeasin, "Eigen-CAM: Class Activation Map using Principal Components",
    IJCNN 2020.

    Examples
    --------
    >>> exp = EigenCAM(model, layer="conv2d_1")(images)   # doctest: +SKIP
    >>> exp.heatmaps.shape                                # doctest: +SKIP
    (8, 64, 64)
    """

    name = "eigencam"
    display_name = "Eigen-CAM"
    relu = False
    gradients = False
    off_branch = None  # reads no output: the map is the layer's first principal component whatever is explained

    def __init__(self, model, layer: LayerSpec = None, *, center: bool = False, **kwargs):
        self.center = boolean("center", center)
        super().__init__(model, layer, **kwargs)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "center": self.center}

    def compute(self, acts: Tensor, grads: Tensor | None) -> Tensor:
        return eigen_map(acts, self.center)
