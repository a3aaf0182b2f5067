"""keras-gradcam: Grad-CAM family explanations for Keras 3 models.

>>> import keras_gradcam as kg                                    # doctest: +SKIP
>>> exp = kg.explain(model, images, method="gradcam++")           # doctest: +SKIP
>>> cam = kg.GradCAM(model, layer="backbone/conv5_block3_out")    # doctest: +SKIP
>>> exp = cam(images, targets=[3, 7])                             # doctest: +SKIP
"""

from . import datasets, metrics
from .base import BaseCAM
from .evaluate import evaluate, format_table
from .explain import explain, get_method
from .explanation import Explanation
from .layers import list_layers
from .methods import (
    METHODS,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    IntegratedGradCAM,
    LayerCAM,
    SmoothGradCAMPlusPlus,
    XGradCAM,
)

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "BaseCAM",
    "Explanation",
    "GradCAM",
    "GradCAMPlusPlus",
    "HiResCAM",
    "IntegratedGradCAM",
    "LayerCAM",
    "SmoothGradCAMPlusPlus",
    "XGradCAM",
    "datasets",
    "evaluate",
    "explain",
    "format_table",
    "get_method",
    "list_layers",
    "metrics",
    "__version__",
]
