"""One module per method, each holding its math; :data:`METHODS` maps names to classes."""

from .ablationcam import AblationCAM
from .cam import CAM
from .eigencam import EigenCAM
from .eigengradcam import EigenGradCAM
from .gradcam import GradCAM
from .gradcam_elementwise import GradCAMElementWise
from .gradcam_plusplus import GradCAMPlusPlus
from .guided import GuidedBackprop, GuidedGradCAM, GuidedGradCAMPlusPlus
from .guided_model import guided_clone, guided_relu
from .hirescam import HiResCAM
from .integrated_gradcam import IntegratedGradCAM
from .iscam import ISCAM
from .layercam import LayerCAM
from .registry import METHODS, display_name, get_method
from .scorecam import ScoreCAM
from .smooth_gradcam_plusplus import SmoothGradCAMPlusPlus
from .sscam import SSCAM
from .xgradcam import XGradCAM

__all__ = [
    "METHODS",
    "display_name",
    "get_method",
    "GradCAM",
    "GradCAMPlusPlus",
    "SmoothGradCAMPlusPlus",
    "XGradCAM",
    "HiResCAM",
    "LayerCAM",
    "IntegratedGradCAM",
    "GuidedBackprop",
    "GuidedGradCAM",
    "GuidedGradCAMPlusPlus",
    "ScoreCAM",
    "AblationCAM",
    "EigenCAM",
    "CAM",
    "GradCAMElementWise",
    "EigenGradCAM",
    "SSCAM",
    "ISCAM",
    "guided_clone",
    "guided_relu",
]
