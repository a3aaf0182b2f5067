"""One module per method, each holding its math; :data:`METHODS` maps names to classes."""

from .gradcam import GradCAM
from .gradcam_plusplus import GradCAMPlusPlus
from .hirescam import HiResCAM
from .integrated_gradcam import IntegratedGradCAM
from .layercam import LayerCAM
from .smooth_gradcam_plusplus import SmoothGradCAMPlusPlus
from .xgradcam import XGradCAM

METHODS = {
    cls.name: cls
    for cls in (GradCAM, GradCAMPlusPlus, SmoothGradCAMPlusPlus, XGradCAM, HiResCAM, LayerCAM, IntegratedGradCAM)
}

__all__ = [
    "METHODS",
    "GradCAM",
    "GradCAMPlusPlus",
    "SmoothGradCAMPlusPlus",
    "XGradCAM",
    "HiResCAM",
    "LayerCAM",
    "IntegratedGradCAM",
]
