"""The registry of methods: :data:`METHODS` maps each name to its class, :func:`get_method` finds
one by name (case, ``-`` and ``_`` ignored, a few aliases), :func:`display_name` says how papers
write it. Adding a method is one file with its class and one line here."""

from __future__ import annotations

from ..core.engine import BaseCAM
from .ablationcam import AblationCAM
from .cam import CAM
from .eigencam import EigenCAM
from .eigengradcam import EigenGradCAM
from .gradcam import GradCAM
from .gradcam_elementwise import GradCAMElementWise
from .gradcam_plusplus import GradCAMPlusPlus
from .guided import GuidedBackprop, GuidedGradCAM, GuidedGradCAMPlusPlus
from .hirescam import HiResCAM
from .integrated_gradcam import IntegratedGradCAM
from .iscam import ISCAM
from .layercam import LayerCAM
from .scorecam import ScoreCAM
from .smooth_gradcam_plusplus import SmoothGradCAMPlusPlus
from .sscam import SSCAM
from .xgradcam import XGradCAM

__all__ = ["METHODS", "get_method", "display_name", "merge_options"]

METHODS = {
    cls.name: cls
    for cls in (
        GradCAM,
        GradCAMPlusPlus,
        SmoothGradCAMPlusPlus,
        XGradCAM,
        HiResCAM,
        LayerCAM,
        IntegratedGradCAM,
        GuidedBackprop,
        GuidedGradCAM,
        GuidedGradCAMPlusPlus,
        ScoreCAM,
        AblationCAM,
        EigenCAM,
        CAM,
        GradCAMElementWise,
        EigenGradCAM,
        SSCAM,
        ISCAM,
    )
}

ALIASES = {"gradcampp": "gradcam++", "gradcamplusplus": "gradcam++", "smoothgradcampp": "smoothgradcam++",
            "smoothgradcamplusplus": "smoothgradcam++", "integratedgradcam": "integrated-gradcam",
            "guidedgradcampp": "guided-gradcam++", "guidedgradcamplusplus": "guided-gradcam++",
            "guidedbackpropagation": "guided-backprop",
            "gradcamelementwise": "gradcam-elementwise"}


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum() or ch == "+")


def get_method(name: str | type) -> type[BaseCAM]:
    """The explainer class for a method name (case, ``-`` and ``_`` ignored; ``"gradcampp"`` works).

    Raises
    ------
    ValueError
        Unknown name; the message lists the known ones.
    """
    if isinstance(name, type) and issubclass(name, BaseCAM):
        return name
    if not isinstance(name, str):
        raise TypeError(f"method must be a name from keras_gradcam.METHODS or a class; got {type(name).__name__}.")
    wanted = _key(name)
    table = {_key(k): v for k, v in METHODS.items()}
    table.update({k: METHODS[v] for k, v in ALIASES.items() if v in METHODS})
    if wanted not in table:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}.")
    return table[wanted]


def display_name(method: str) -> str:
    """How a method name is written in titles: ``"gradcam++"`` -> ``"Grad-CAM++"``.

    Parameters
    ----------
    method : str
        A name of :data:`keras_gradcam.METHODS` (or any string).

    Returns
    -------
    str
        The explainer class's ``display_name`` attribute when it has one, else ``method``
        unchanged.

    Examples
    --------
    >>> from keras_gradcam.methods.registry import display_name
    >>> display_name("gradcam++"), display_name("my-method")
    ('Grad-CAM++', 'my-method')
    """
    try:
        shown = vars(get_method(method)).get("display_name")  # not inherited: a subclass is another method
        if isinstance(shown, str) and shown:
            return shown
    except (ValueError, TypeError):
        pass
    return method


def merge_options(method_options: dict | None, options: dict) -> dict:
    """A method's options given as a ``method_options=`` dict and as keywords, merged.

    Raises
    ------
    ValueError
        A name given in both.
    """
    if not method_options:
        return dict(options)
    clash = sorted(set(method_options) & set(options))
    if clash:
        raise ValueError(f"method options {clash} are given twice, in method_options= and as keywords; give each once.")
    return {**method_options, **options}

