"""Training that aligns Grad-CAM with annotation masks (:class:`GuidedTraining`)."""

from .guided import GuidedTraining

__all__ = ["GuidedTraining"]
