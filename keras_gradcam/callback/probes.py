"""The probe set: its images, labels, masks, display images and targets checked, and scored.

Everything here is checked twice at most: once at construction (shapes, kinds, and class indices
against ``class_names`` when given) and once against the model, as soon as it is known (input
shape and number of classes), before any training step. The messages name the argument, what was
received and how to fix it. Class indices outside the model's classes raise
:class:`~keras_gradcam.core.validate.ClassIndexError` (both an ``IndexError`` and a
``ValueError``), as everywhere in the package. At each logged epoch :func:`finite_probes` and
:func:`bias_scores` score the explained probes against their masks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from ..core.capture import Capture
from ..core.inputs import as_inputs
from ..core.kerashub import preprocessor_of
from ..core.targets import ClassTarget, OutputTarget
from ..core.validate import ClassIndexError
from ..metrics import energy_pointing_game, pointing_game

__all__ = [
    "TARGET_OBJECTS",
    "to_array",
    "check_probes",
    "check_display",
    "check_masks",
    "class_vector",
    "check_targets",
    "check_class_names",
    "check_classes",
    "check_probe_shape",
    "model_classes",
    "targets_config",
    "targets_from_config",
    "finite_probes",
    "bias_scores",
]

# the core target objects a config can name (they are frozen dataclasses of plain values)
TARGET_OBJECTS = {cls.__name__: cls for cls in (ClassTarget, OutputTarget)}

_TARGETS = (
    '"predicted", "label", an int or one int per probe, a target object (kg.ClassTarget, kg.OutputTarget) '
    "or a callable"
)


def to_array(name: str, value) -> np.ndarray:
    """``value`` (an array, a tensor, a list of images or a ``tf.data.Dataset``) as one numpy array.

    The conversion is :func:`keras_gradcam.core.inputs.as_inputs`, the one every explainer uses; a
    list or tuple is one batch here (the callback takes a single-input model's images).

    Raises
    ------
    TypeError
        For data that is not numeric, naming ``name``.
    """
    if isinstance(value, (list, tuple)):
        value = np.asarray(value)
    try:
        return as_inputs(value)
    except TypeError as e:
        raise TypeError(f"{name}: {e}") from None


def check_probes(probe_images) -> np.ndarray:
    """The probe images as a contiguous float32 array of shape ``(n, height, width[, channels])``."""
    if isinstance(probe_images, (dict, str, bytes)) or probe_images is None:
        raise TypeError(
            "probe_images must be one array of images (n_probes, height, width, channels), as the model "
            f"takes them; got {type(probe_images).__name__}. Multi-input models are not supported."
        )
    arr = to_array("probe_images", probe_images)
    if arr.ndim not in (3, 4):
        hint = " Add a batch axis: probe_images[None] for a single image." if arr.ndim == 2 else ""
        raise ValueError(
            f"probe_images must have shape (n_probes, height, width, channels) or (n_probes, height, width); "
            f"got shape {arr.shape}.{hint}"
        )
    if arr.shape[0] < 1 or min(arr.shape[1:3]) < 1:
        raise ValueError(f"probe_images is empty (shape {arr.shape}); pass at least one probe image.")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError("probe_images contain NaN or inf values; pass finite, preprocessed images.")
    return arr


def check_display(display_images, probes: np.ndarray) -> np.ndarray:
    """What the heatmaps are drawn on: ``display_images``, or the probes themselves when None."""
    n = probes.shape[0]
    if display_images is None:
        if probes.ndim == 4 and probes.shape[-1] not in (1, 3, 4):
            raise ValueError(
                f"probe_images have {probes.shape[-1]} channels, which cannot be shown as an image; pass "
                "display_images=(n_probes, height, width, 3) to draw the heatmaps on."
            )
        return probes
    arr = to_array("display_images", display_images)
    shown = arr.ndim == 3 or (arr.ndim == 4 and arr.shape[-1] in (1, 3, 4))
    if not shown or arr.shape[0] != n:
        raise ValueError(
            f"display_images must be {n} images of shape (height, width[, 1 | 3 | 4]), one per probe; got "
            f"{arr.dtype} of shape {arr.shape}."
        )
    return arr


def check_masks(masks, shape: tuple) -> np.ndarray:
    """The object masks as a bool array of ``shape`` ``(n, height, width)``, none of them empty."""
    arr = to_array("probe_masks", masks)
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.shape != shape:
        raise ValueError(
            f"probe_masks must have shape {shape} (one (height, width) object mask per probe, the probes' "
            f"spatial size); got {arr.shape}."
        )
    empty = np.flatnonzero(~(arr > 0).reshape(len(arr), -1).any(axis=1))
    if empty.size:
        raise ValueError(
            f"probe_masks of probes {empty[:10].tolist()} are empty; every probe needs the mask of its object. "
            "Drop the probes without an object."
        )
    return arr > 0


def class_vector(values, name: str, n: int, what: str) -> np.ndarray:
    """One class index per probe as int64 ``(n,)``; one-hot or probability rows are argmaxed.

    Raises
    ------
    ValueError
        For anything but ``n`` ints or an ``(n, classes)`` array.
    ClassIndexError
        For a negative index.
    """
    arr = np.asarray(values)
    if arr.ndim == 2 and arr.shape[0] == n and arr.dtype.kind in "fiub":
        arr = arr.argmax(axis=1)  # one-hot / probabilities
    if arr.shape != (n,) or arr.dtype.kind not in "iu":
        raise ValueError(
            f"{name} must hold {what}: {n} ints (or an (n, classes) one-hot array), one per probe; "
            f"got {arr.dtype} of shape {arr.shape}."
        )
    if (arr < 0).any():
        raise ClassIndexError(f"{name} must be class indices >= 0; got {arr[arr < 0][:5].tolist()}.")
    return arr.astype(np.int64)


def check_targets(targets, labels: np.ndarray | None, n: int) -> np.ndarray | Callable | None:
    """What the explainer gets as ``targets``: None (top-1), int32 ``(n,)`` classes, or a callable.

    ``"predicted"`` is None, ``"label"`` the probe labels, an int that class for every probe, a
    sequence one class per probe; a target object (:class:`~keras_gradcam.ClassTarget`,
    :class:`~keras_gradcam.OutputTarget`) or any callable ``outputs -> (n,)`` is passed through to
    the explainer, as :func:`keras_gradcam.explain` does.
    """
    if isinstance(targets, str):
        if targets == "predicted":
            return None
        if targets == "label":
            if labels is None:
                raise ValueError('targets="label" explains the true class, so it needs probe_labels=<one int per probe>.')
            return labels.astype(np.int32)
        raise ValueError(f"targets must be {_TARGETS}; got {targets!r}.")
    if callable(targets):
        return targets
    if isinstance(targets, (bool, np.bool_)) or targets is None:
        raise TypeError(f"targets must be {_TARGETS}; got {targets!r}.")
    if isinstance(targets, (int, np.integer)):
        if targets < 0:
            raise ClassIndexError(f"targets must be a class index >= 0; got {targets}.")
        return np.full((n,), int(targets), np.int32)
    arr = np.asarray(targets)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise TypeError(
            f"targets must be {_TARGETS}; got {type(targets).__name__} of dtype {arr.dtype} and shape {arr.shape}."
        )
    if arr.shape[0] != n:
        raise ValueError(f"targets has {arr.shape[0]} entries but there are {n} probes; give one class per probe.")
    if (arr < 0).any():
        raise ClassIndexError(f"targets must be class indices >= 0; got {arr[arr < 0][:5].tolist()}.")
    return arr.astype(np.int32)


def check_class_names(class_names) -> tuple[str, ...] | None:
    """``class_names`` as a tuple of str (None stays None)."""
    if class_names is None:
        return None
    if isinstance(class_names, str) or not all(isinstance(c, str) for c in class_names):
        raise TypeError("class_names must be a sequence of str, e.g. ('circle', 'square', 'triangle').")
    return tuple(class_names)


def check_classes(classes: int, source: str, labels: np.ndarray | None, target_classes: np.ndarray | None) -> None:
    """Reject probe labels and target classes outside ``0 .. classes - 1``.

    ``source`` says who counts the classes (``"the model has"``, ``"class_names names"``);
    ``target_classes`` is None when there are none to check (top-1, a callable, or the labels).

    Raises
    ------
    ClassIndexError
        Naming the argument, the class, the first probe with it and the valid range.
    """
    checks = [
        ("probe_labels", labels, "pass the true class index of each probe"),
        ("targets", target_classes, "pass targets among the model's classes"),
    ]
    for name, values, fix in checks:
        if values is None or int(values.max()) < classes:
            continue
        i = int(np.argmax(values >= classes))
        raise ClassIndexError(
            f"{name} include class {int(values[i])} but {source} {classes} classes (0 .. {classes - 1}) "
            f"(first at probe {i}); {fix}, 0 .. {classes - 1}."
        )


def check_probe_shape(model, probes: np.ndarray) -> bool:
    """Check that ``probes`` fit the input of a single-input ``model``; False while it is not built.

    Raises
    ------
    ValueError
        For a multi-input model, or probes whose shape is not the model's input shape (with the fix).
    """
    inputs = getattr(model, "inputs", None) if model is not None else None
    if not inputs:
        return False  # not built yet (a Sequential without Input): checked again before the first log
    if len(inputs) != 1:
        raise ValueError(
            f"GradCAMCallback needs a single-input model; this one has {len(inputs)} inputs "
            f"{[tuple(t.shape) for t in inputs]}. Explain such models with kg.explain()."
        )
    expected = (None,) + tuple(inputs[0].shape)[1:]  # any batch size (fit may build it with its own)
    got = probes.shape
    if preprocessor_of(model) is not None:  # a KerasHub task: raw probes, its preprocessor resizes them
        expected = expected[:1] + (None,) * (len(expected) - 2) + expected[-1:]
    if len(expected) != len(got) or any(e is not None and e != g for e, g in zip(expected[1:], got[1:])):
        raise ValueError(
            f"probe_images have shape {got} but the model takes inputs of shape {expected}; pass probes "
            f"of the model's input size, preprocessed like the training data.{_shape_hint(expected, got)}"
        )
    return True


def model_classes(model: keras.Model) -> int | None:
    """The classes of a single-output classifier (a binary sigmoid unit counts as 2), else None."""
    outputs = getattr(model, "outputs", None) or []
    return Capture(model, []).num_classes() if len(outputs) == 1 else None


def _shape_hint(expected: tuple, got: tuple) -> str:
    """How to turn probes of shape ``got`` into the model's ``expected`` input shape."""
    if len(expected) == len(got) + 1 and tuple(expected[1:]) == got:
        return " A single image needs a batch axis: probe_images[None]."
    if len(expected) == len(got) + 1 and expected[-1] in (1, None):
        return " Grayscale probes need a channel axis: probe_images[..., None]."
    if len(expected) != len(got):
        return f" The model takes {len(expected)}-D batches, the probes are {len(got)}-D."
    hints = []
    size, want = got[1:-1], expected[1:-1]
    if any(e is not None and e != g for e, g in zip(want, size)):
        shown = "x".join("?" if e is None else str(e) for e in want)
        hints.append(
            f" The probes are {'x'.join(map(str, size))}, the model takes {shown}: resize them as the "
            "training images were (e.g. keras.ops.image.resize)."
        )
    if expected[-1] is not None and expected[-1] != got[-1]:
        fix = (
            "convert RGB probes to one channel, e.g. probe_images.mean(axis=-1, keepdims=True)"
            if expected[-1] == 1
            else "give the probes the channels of the training data"
        )
        hints.append(f" The probes have {got[-1]} channels, the model {expected[-1]}: {fix}.")
    return "".join(hints)


def targets_config(targets) -> Any:
    """``targets=`` as a JSON value: a name, an int, a list of ints, a target object as
    ``{"class_name": ..., "config": {...}}``, or None for a callable (code is not configuration)."""
    if isinstance(targets, str):
        return targets
    if isinstance(targets, tuple(TARGET_OBJECTS.values())):
        return {"class_name": type(targets).__name__, "config": dict(vars(targets))}
    if callable(targets):
        return None
    if isinstance(targets, (int, np.integer)):
        return int(targets)
    return [int(t) for t in np.asarray(targets)]


def targets_from_config(value) -> Any:
    """The inverse of :func:`targets_config` (a target object's dict becomes the object again)."""
    if isinstance(value, dict):
        name = value.get("class_name")
        if name not in TARGET_OBJECTS:
            raise ValueError(f"targets names an unknown target class {name!r}; known: {sorted(TARGET_OBJECTS)}.")
        return TARGET_OBJECTS[name](**value.get("config", {}))
    return value


def finite_probes(exp) -> np.ndarray:
    """Per probe of the :class:`~keras_gradcam.Explanation` ``exp``: whether its explained score
    and heatmap are finite numbers.

    A training run whose loss became NaN leaves NaN weights: every score is NaN and the
    heatmaps come back blank, which must not be read as "the evidence lies off the objects".
    """
    n = len(exp.heatmaps)
    scores = np.asarray(exp.scores, np.float64).reshape(n, -1)
    heat = np.asarray(exp.heatmaps, np.float64).reshape(n, -1)
    return np.isfinite(scores).all(axis=1) & np.isfinite(heat).all(axis=1)


def bias_scores(heat: np.ndarray, masks: np.ndarray, finite: np.ndarray, tolerance: float | None) -> tuple:
    """Per probe the energy inside its object and the pointing-game hit (NaN where not ``finite``),
    and their means ``(energy, hits)``, or None when some probe is not finite or every heatmap is
    empty (all zero: no evidence anywhere, inside or outside the objects; NaN per probe too).

    Both come from :mod:`keras_gradcam.metrics` (:func:`~keras_gradcam.metrics.energy_pointing_game`,
    :func:`~keras_gradcam.metrics.pointing_game` with ``tolerance`` pixels, None: its default).
    """
    if heat.shape != masks.shape:
        raise ValueError(
            f"heatmaps have shape {heat.shape} but probe_masks {masks.shape}; masks must have the "
            "spatial size of the model input."
        )
    scored = finite & bool(np.any(heat > 0))  # all maps empty: nothing to score (a diverged run, not a shortcut)
    energy = np.where(scored, energy_pointing_game(heat, masks, reduction=None), np.nan)
    hits = np.where(scored, pointing_game(heat, masks, tolerance=tolerance, reduction=None), np.nan)
    means = (float(energy.mean()), float(hits.mean())) if scored.all() else None  # only of maps that are numbers
    return energy, hits, means
