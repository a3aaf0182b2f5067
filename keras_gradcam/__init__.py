"""keras-gradcam: Grad-CAM family explanations for Keras 3 models.

>>> import keras_gradcam as kg                                    # doctest: +SKIP
>>> exp = kg.explain(model, images, method="gradcam++")           # doctest: +SKIP
>>> cam = kg.GradCAM(model, layer="backbone/conv5_block3_out")    # doctest: +SKIP
>>> exp = cam(images, targets=[3, 7])                             # doctest: +SKIP
"""

try:
    import keras  # noqa: F401 - imported first for the message below
except ModuleNotFoundError as error:  # KERAS_BACKEND names a backend whose package is not installed
    missing = (error.name or "").split(".")[0]
    if missing not in ("jax", "jaxlib", "torch", "tensorflow"):
        raise
    extra = {"jaxlib": "jax", "tensorflow": ""}.get(missing, missing)
    raise ImportError(
        f"keras-gradcam: Keras is set to a backend whose package is not installed (no module named "
        f"{missing!r}). Install it with `pip install keras-gradcam{f'[{extra}]' if extra else ''}`, or pick "
        "an installed backend with the KERAS_BACKEND environment variable (tensorflow, jax or torch) before "
        "importing keras."
    ) from error

from . import datasets, metrics
from .audit import AuditReport, audit
from .callback import GradCAMCallback
from .core.dense_targets import BoxTarget, SegmentationTarget
from .core.device import DeviceError
from .core.engine import BaseCAM
from .core.explanation import Explanation
from .core.kerashub import RetinaNetDetections
from .core.layers import list_layers
from .core.sequence_targets import SequenceTarget, SimilarityTarget, TokenTarget
from .core.targets import ClassTarget, OutputTarget
from .evaluate import evaluate, format_table
from .explain import explain
from .methods import (
    CAM,
    ISCAM,
    METHODS,
    SSCAM,
    AblationCAM,
    EigenCAM,
    EigenGradCAM,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    GuidedBackprop,
    GuidedGradCAM,
    GuidedGradCAMPlusPlus,
    HiResCAM,
    IntegratedGradCAM,
    LayerCAM,
    ScoreCAM,
    SmoothGradCAMPlusPlus,
    XGradCAM,
    get_method,
    guided_clone,
    guided_relu,
)
from .neurons import NeuronImportance, neuron_importance, textual_explanation
from .runs import Run, explain_dataset, load_run
from .training import GuidedTraining
from .viz.overlay import overlay
from .viz.plots import plot
from .words import explain_words, plot_words

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "AblationCAM",
    "AuditReport",
    "CAM",
    "EigenCAM",
    "EigenGradCAM",
    "GuidedBackprop",
    "GuidedGradCAM",
    "GuidedGradCAMPlusPlus",
    "GuidedTraining",
    "NeuronImportance",
    "Run",
    "ScoreCAM",
    "SSCAM",
    "ISCAM",
    "guided_clone",
    "guided_relu",
    "neuron_importance",
    "textual_explanation",
    "BaseCAM",
    "DeviceError",
    "ClassTarget",
    "OutputTarget",
    "SequenceTarget",
    "SimilarityTarget",
    "TokenTarget",
    "SegmentationTarget",
    "BoxTarget",
    "RetinaNetDetections",
    "Explanation",
    "GradCAM",
    "GradCAMCallback",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "HiResCAM",
    "IntegratedGradCAM",
    "LayerCAM",
    "SmoothGradCAMPlusPlus",
    "XGradCAM",
    "audit",
    "datasets",
    "evaluate",
    "explain",
    "explain_dataset",
    "format_table",
    "get_method",
    "list_layers",
    "load_run",
    "metrics",
    "overlay",
    "explain_words",
    "plot_words",
    "plot",
    "__version__",
]
