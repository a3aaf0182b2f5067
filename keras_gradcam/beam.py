"""Apache Beam: a ``RunInference`` model handler that explains images in a pipeline, at any scale.

:class:`CAMModelHandler` loads a saved Keras model once per worker, builds one explainer on it
and explains each batch that ``RunInference`` hands it in one compiled call, on any runner
(Direct, Dataflow, Flink, Spark)::

    import apache_beam as beam
    from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
    from keras_gradcam.beam import CAMModelHandler

    handler = KeyedModelHandler(CAMModelHandler("model.keras", method="gradcam", layer="last_conv"))
    with beam.Pipeline() as p:
        (p | beam.Create(keyed_images)              # (key, image) pairs, image (height, width, channels)
           | RunInference(handler)                  # (key, PredictionResult(image, CAMResult, model_id))
           | beam.Map(lambda kv: (kv[0], kv[1].inference.heatmap)))

This module needs the ``[beam]`` extra (``pip install keras-gradcam[beam]``); ``import keras_gradcam``
does not import it, nor Beam.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import keras
import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from .core.engine import BaseCAM
from .core.validate import positive_int
from .io import load_model_file
from .methods.registry import get_method, merge_options

__all__ = ["CAMModelHandler", "CAMResult"]


class CAMResult(NamedTuple):
    """The explanation of one image: ``PredictionResult.inference`` of :class:`CAMModelHandler`.

    Attributes
    ----------
    heatmap : ndarray of shape (height, width), float32
        The map at input resolution, in [0, 1], as ``Explanation.heatmaps[i]``.
    target : int or None
        The explained class (None for a callable target).
    score : float
        The explained score (the pre-softmax logit by default).
    prediction : int or None
        The model's top-1 class (None when the output is not ``(batch, classes)``).
    finite : bool
        False when the score or the map was not finite (the heatmap is then all zero).
    """

    heatmap: np.ndarray
    target: int | None
    score: float
    prediction: int | None
    finite: bool


def _targets(targets):
    """``targets=`` checked: None (predicted), ``"label"``, a class index, or a target object / callable."""
    if targets is None or (isinstance(targets, str) and targets == "predicted"):
        return None
    if isinstance(targets, str):
        if targets != "label":
            raise ValueError(
                f"targets must be 'predicted', 'label', an int class index, or a target object / callable; got "
                f"{targets!r}."
            )
        return targets
    if callable(targets):
        return targets
    if isinstance(targets, (bool, np.bool_)) or not isinstance(targets, (int, np.integer)) or targets < 0:
        raise TypeError(
            f"targets must be 'predicted', 'label', an int class index >= 0, or a target object / callable as in "
            f"kg.explain; got {targets!r} ({type(targets).__name__}). For one class per image, make each element "
            "(image, class) and pass targets='label'."
        )
    return int(targets)


def _stack(examples: Sequence) -> Any:
    """The examples of a batch as one batch: arrays stacked (a dict or list of them for a multi-input model)."""
    return keras.tree.map_structure(lambda *parts: np.stack([np.asarray(p) for p in parts]), *examples)


class CAMModelHandler(ModelHandler[Any, PredictionResult, BaseCAM]):
    """A Beam ``ModelHandler`` that explains images with a Grad-CAM-family method.

    ``load_model`` loads the saved model (``keras.models.load_model``, through
    :func:`keras_gradcam.io.load_model_file`, which says so when the file is there but truncated
    or not a Keras file) and builds one explainer on
    it; ``run_inference`` explains a batch of images in one compiled call and yields one
    ``PredictionResult(example, CAMResult, model_id)`` per image, in the batch's order. The maps
    are those of :func:`keras_gradcam.explain_dataset` and :func:`keras_gradcam.explain` with the
    same model, method, layer, targets and options.

    Parameters
    ----------
    model_uri : str
        A saved Keras model (``.keras``, or legacy ``.h5``), as ``keras.models.load_model`` reads it
        on the workers (a local path, or ``gs://...`` where TensorFlow's file system reaches it).
    method : str or BaseCAM subclass, default="gradcam++"
        A name from :data:`keras_gradcam.METHODS`, or a :class:`~keras_gradcam.BaseCAM` subclass.
    layer : str or None, default=None
        The layer to explain, as in :func:`keras_gradcam.explain` (a name or a nested path).
    targets : {"predicted", "label"}, int or callable, default="predicted"
        ``"predicted"`` explains each image's top-1 class; an int the same class for all; a target
        object or callable ``outputs -> (batch,)`` any score; ``"label"`` makes each element an
        ``(image, class_index)`` pair and explains that class.
    batch_size : int, default=64
        The most images per batch (``BatchElements``' ``max_batch_size``) and per pass: a batch is
        one compiled call.
    min_batch_size : int, optional
        ``BatchElements``' ``min_batch_size`` (Beam's default: 1).
    max_batch_duration_secs : int, optional
        For streaming pipelines: the longest a batch waits to fill.
    load_model_args : dict, optional
        Keyword arguments of ``keras.models.load_model`` (``custom_objects=``, ``compile=``...).
    large_model : bool, default=False
        Share one model between the processes of a worker (Beam's ``large_model``).
    model_copies : int, optional
        The number of models per worker (Beam's ``model_copies``).
    method_options : dict, optional
        The method's options as a dict, merged with ``**options``.
    **options
        Method options (``counterfactual=True``, ``n_samples=``, ``score="output"``...), as in
        :func:`keras_gradcam.explain`.

    Raises
    ------
    TypeError, ValueError
        At construction, for a method name, targets, batch size or options that are wrong (the
        explainer itself is built on the workers, in ``load_model``).

    Notes
    -----
    ``inference_args`` (``RunInference(handler, inference_args={"targets": 3})``) may override
    ``targets`` for a whole pipeline; no other key is taken. Elements that are keyed
    (``(key, image)``) go through Beam's ``KeyedModelHandler(CAMModelHandler(...))``.
    """

    def __init__(
        self,
        model_uri: str,
        method: str | type = "gradcam++",
        layer: str | None = None,
        targets: str | int | Callable | None = "predicted",
        *,
        batch_size: int = 64,
        min_batch_size: int | None = None,
        max_batch_duration_secs: int | None = None,
        load_model_args: Mapping[str, Any] | None = None,
        large_model: bool = False,
        model_copies: int | None = None,
        method_options: dict | None = None,
        **options,
    ):
        self._batch_size = positive_int("batch_size", batch_size, expected="a positive int")
        if min_batch_size is not None:
            min_batch_size = positive_int("min_batch_size", min_batch_size, expected="a positive int or None")
            if min_batch_size > self._batch_size:
                raise ValueError(
                    f"min_batch_size ({min_batch_size}) must be at most batch_size ({self._batch_size}), the most "
                    "images per batch."
                )
        super().__init__(
            min_batch_size=min_batch_size,
            max_batch_size=self._batch_size,
            max_batch_duration_secs=max_batch_duration_secs,
            large_model=large_model,
            model_copies=model_copies,
        )
        self._model_uri = str(model_uri)
        self._cls = get_method(method)
        self._layer = layer
        self._targets = _targets(targets)
        self._options = merge_options(method_options, options)
        self._load_model_args = dict(load_model_args or {})

    def load_model(self) -> BaseCAM:
        """The saved model loaded and the explainer built on it (once per worker and model copy)."""
        model = load_model_file(self._model_uri, **self._load_model_args)
        return self._cls(model, self._layer, batch_size=self._batch_size, **self._options)

    def run_inference(
        self, batch: Sequence[Any], model: BaseCAM, inference_args: dict[str, Any] | None = None
    ) -> Iterable[PredictionResult]:
        """Explain ``batch`` (images, or ``(image, class)`` pairs for ``targets="label"``) in one call.

        Returns
        -------
        list of PredictionResult
            ``PredictionResult(example, CAMResult(heatmap, target, score, prediction, finite), model_uri)``
            per example, in the batch's order.
        """
        self.validate_inference_args(inference_args)
        targets = _targets((inference_args or {}).get("targets", self._targets))
        if isinstance(targets, str):  # "label": the elements are (image, class) pairs
            pair = next((e for e in batch if not isinstance(e, (tuple, list)) or len(e) != 2), None)
            if pair is not None:
                raise ValueError(
                    "targets='label' needs each element to be an (image, class_index) pair; got an element of type "
                    f"{type(pair).__name__}{f' and shape {np.shape(pair)}' if hasattr(pair, 'shape') else ''}. Make "
                    "the elements (image, class) tuples, or pass targets='predicted'."
                )
            images = _stack([example[0] for example in batch])
            targets = np.asarray([example[1] for example in batch]).astype(np.int64)
        else:
            images = _stack(batch)
        exp = model(images, targets)
        return [
            PredictionResult(
                example,
                CAMResult(
                    heatmap=exp.heatmaps[i],
                    target=None if exp.targets is None else int(exp.targets[i]),
                    score=float(exp.scores[i]),
                    prediction=None if exp.predictions is None else int(exp.predictions[i]),
                    finite=bool(exp.finite[i]),
                ),
                self._model_uri,
            )
            for i, example in enumerate(batch)
        ]

    def validate_inference_args(self, inference_args: dict[str, Any] | None) -> None:
        """Only ``targets`` may be given per pipeline."""
        unknown = sorted(set(inference_args or {}) - {"targets"})
        if unknown:
            raise ValueError(
                f"inference_args takes only 'targets'; got {unknown}. Give method options to CAMModelHandler itself."
            )

    def get_num_bytes(self, batch: Sequence[Any]) -> int:
        """The bytes of the batch's arrays (without pickling them, as Beam's default does)."""
        return int(sum(np.asarray(a).nbytes for example in batch for a in keras.tree.flatten(example)))

    def get_metrics_namespace(self) -> str:
        return "KerasGradCAM"

    def update_model_path(self, model_path: str | None = None) -> None:
        """Beam's model refresh (``model_metadata_pcoll``): the next ``load_model`` reads ``model_path``."""
        self._model_uri = str(model_path) if model_path else self._model_uri
