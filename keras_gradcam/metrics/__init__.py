"""Evaluation metrics for saliency maps (see docs/metrics.md).

Two kinds of metric live here.

* **Map-only metrics** compare precomputed maps with ground truth and never run a model
  (:mod:`~keras_gradcam.metrics.localisation`): :func:`energy_pointing_game`,
  :func:`pointing_game` (its default tolerance: :func:`pointing_tolerance`),
  :func:`localization`, :func:`instance_coverage`, :func:`map_area`, :func:`map_entropy`, plus the helpers :func:`boxes_to_masks`, :func:`masks_to_boxes` and, in
  :mod:`~keras_gradcam.metrics.stats`, :func:`spearman`, :func:`auc`, :func:`gaussian_blur`.
* **Model metrics** perturb the input according to a map and read the model's confidence:
  :func:`average_drop`, :func:`increase_in_confidence`, :func:`win_rate`,
  :func:`deletion_curve` / :func:`deletion_auc`, :func:`insertion_curve` /
  :func:`insertion_auc` (:mod:`~keras_gradcam.metrics.faithfulness`), ROAD's
  :func:`road_curve` / :func:`road` with :func:`noisy_linear_imputation`
  (:mod:`~keras_gradcam.metrics.road`),
  :func:`occlusion_map` / :func:`occlusion_correlation`
  (:mod:`~keras_gradcam.metrics.occlusion`), and the :func:`randomization_check`
  (:mod:`~keras_gradcam.metrics.sanity`), which re-explains a randomised *copy* of the model.
  The model runs in :mod:`~keras_gradcam.metrics.scoring`; the argument checks are in
  :mod:`~keras_gradcam.metrics.arrays`.

Conventions shared by every function:

* maps are ``(n_samples, height, width)`` arrays (an :class:`~keras_gradcam.Explanation` is
  accepted too and its ``heatmaps`` are used); images are channels-last
  ``(n_samples, height, width, channels)``, preprocessed as the model expects, with the same
  height and width as the maps; masks are ``(n_samples, height, width)``, boolean or 0/1, or
  float soft weights in ``[0, 1]`` (see :func:`energy_pointing_game`); boxes are
  ``(y_min, x_min, y_max, x_max)`` pixel indices with the max **exclusive** (as in
  :mod:`keras_gradcam.datasets`), clipped to the image; a row with ``y_min == y_max`` or
  ``x_min == x_max`` is empty (padding) and an inverted one is an error;
* ``reduction="mean"`` returns the mean over images as a Python ``float``;
  ``reduction=None`` returns the per-image values as an ndarray of shape ``(n_samples,)``;
* model metrics state their score space with ``score=``: ``"probability"`` (default; the
  model's own output when it ends in a softmax or a sigmoid, else the softmax of its
  ``(batch, classes >= 2)`` output, except for rows that already are probabilities, i.e.
  non-negative and summing to 1 within ``1e-4``, which are used as they are; refused with a
  ``ValueError`` for an output that is no class probability, such as one linear unit),
  ``"logit"`` (the score before that softmax or sigmoid, computed without modifying the model)
  or ``"output"`` (the selected output as the model gives it);
* the explained class is ``targets`` when given, else the model's top-1 class on the
  unperturbed image (Grad-CAM++ and RISE protocols); a class outside the output's classes
  raises :class:`~keras_gradcam.core.validate.ClassIndexError` (an ``IndexError`` and a
  ``ValueError``);
* all perturbed images of a batch go through one compiled forward function (traced once per
  input shape), ``batch_size`` images per call; nothing loops over pixels in Python.

Notes
-----
``score`` here and in the explainers: the explainers take ``score`` in ``{"logit", "output"}`` and the model metrics in
``{"probability", "logit", "output"}``; ``"logit"`` and ``"output"`` mean the same in both (the
score before the head's softmax or sigmoid, or the output as it is). ``"probability"`` exists
only here, because a confidence metric compares confidences: it is the explainer's ``"logit"``
score passed through the head's link (its sigmoid, else a softmax over the classes) applied
exactly once, which for a softmax or sigmoid head is the model's own output.
"""

from __future__ import annotations

from .faithfulness import (
    average_drop,
    deletion_auc,
    deletion_curve,
    increase_in_confidence,
    insertion_auc,
    insertion_curve,
    win_rate,
)
from .localisation import (
    Localization,
    boxes_to_masks,
    energy_pointing_game,
    instance_coverage,
    localization,
    map_area,
    map_entropy,
    masks_to_boxes,
    pointing_game,
    pointing_tolerance,
)
from .occlusion import occlusion_correlation, occlusion_map
from .road import ROAD_PERCENTAGES, noisy_linear_imputation, road, road_curve
from .sanity import RandomizationResult, randomization_check
from .scoring import SCORES
from .stats import auc, gaussian_blur, saliency_ranks, spearman

__all__ = [
    # map-only: localisation and sharpness
    "energy_pointing_game",
    "pointing_game",
    "pointing_tolerance",
    "localization",
    "Localization",
    "instance_coverage",
    "map_area",
    "map_entropy",
    "boxes_to_masks",
    "masks_to_boxes",
    # model metrics: confidence, deletion and insertion
    "SCORES",
    "average_drop",
    "increase_in_confidence",
    "win_rate",
    "deletion_curve",
    "deletion_auc",
    "insertion_curve",
    "insertion_auc",
    # model metrics: ROAD (remove and debias)
    "ROAD_PERCENTAGES",
    "road_curve",
    "road",
    "noisy_linear_imputation",
    # model metrics: occlusion
    "occlusion_map",
    "occlusion_correlation",
    # sanity check
    "randomization_check",
    "RandomizationResult",
    # numerical helpers
    "auc",
    "saliency_ranks",
    "spearman",
    "gaussian_blur",
]
