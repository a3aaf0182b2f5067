"""The options every gradient method shares: ``aug_smooth``, ``eigen_smooth`` and ``relu``.

Test-time augmentation (``aug_smooth=True``, as pytorch-grad-cam's): each image becomes six
copies, the horizontal flip of the image or not times a brightness factor in
:data:`AUG_FACTORS`, all explained in one pass of ``6 * B`` rows; the flip is undone on each map
and the six maps are averaged. :func:`augment` builds the copies and :func:`average_copies`
folds the maps back. Eigen smoothing (``eigen_smooth=True``, likewise) is
:func:`~keras_gradcam.core.postprocess.eigen_map` applied to the weighted activations, in
:meth:`~keras_gradcam.core.engine.BaseCAM.combine`.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from .validate import boolean

__all__ = [
    "AUG_FACTORS", "AUG_FLIPS", "AUG_COPIES", "OPTIONS", "check_options", "check_aug_smooth", "flip_axis", "augment",
    "average_copies", "all_copies",
]

AUG_FACTORS = (1.0, 0.9, 1.1)  # brightness: multipliers of the model's input, as pytorch-grad-cam (ttach)
AUG_FLIPS = (False, True)  # horizontal flip
AUG_COPIES = len(AUG_FACTORS) * len(AUG_FLIPS)
OPTIONS = ("aug_smooth", "eigen_smooth", "relu")

WHY = {
    "aug_smooth": "it explains flipped and brightened copies of each image and averages their maps at the layer",
    "eigen_smooth": "it replaces the method's weighted sum of activations by their first principal component",
    "relu": "it sets whether the method's combined map is rectified (ReLU)",
}


def check_options(cls, supports, aug_smooth, eigen_smooth, relu) -> tuple[bool, bool, bool]:
    """``aug_smooth=``, ``eigen_smooth=`` and ``relu=`` checked against what the method ``cls`` supports.

    Returns the three as bools (``relu=None`` is the method's own default, ``cls.relu``). A value
    other than the default for an option the method does not support raises ``ValueError``.
    """
    given = {
        "aug_smooth": boolean("aug_smooth", aug_smooth),
        "eigen_smooth": boolean("eigen_smooth", eigen_smooth),
        "relu": None if relu is None else boolean("relu", relu),
    }
    for name in OPTIONS:
        if name not in supports and given[name] is not (None if name == "relu" else False):
            takes = sorted(n for n in OPTIONS if n in supports)
            raise ValueError(
                f"{name}={given[name]!r} is not supported by {cls.__name__}: {WHY[name]}, which does not apply to "
                f"this method (see its docstring). {cls.__name__} takes {takes or 'none of them'}; GradCAM takes "
                f"all of {list(OPTIONS)}."
            )
    return given["aug_smooth"], given["eigen_smooth"], bool(cls.relu) if given["relu"] is None else given["relu"]


def flip_axis(a, channels_first: bool) -> int | None:
    """The width axis of an image input ``(B, H, W, C)`` / ``(B, C, H, W)``; None for other inputs."""
    if len(a.shape) != 4 or not keras.backend.is_float_dtype(a.dtype):
        return None
    return 3 if channels_first else 2


def check_aug_smooth(inputs: list, layers: list) -> None:
    """Raise ``ValueError`` when ``aug_smooth=True`` cannot flip the model's inputs (numpy arrays) or layer maps."""
    images = [a for a in inputs if a.ndim == 4 and np.issubdtype(a.dtype, np.floating)]
    maps = sorted({len(info.spatial_shape) for info in layers})
    if not images or maps != [2]:
        raise ValueError(
            "aug_smooth=True flips images horizontally, so it needs a float image input (batch, height, width, "
            f"channels) and a layer with a 2-D map; got inputs of shapes {[tuple(a.shape) for a in inputs]} and a "
            f"layer map with {maps} spatial axes. Use aug_smooth=False for this model or layer."
        )


def augment(x, channels_first: bool):
    """Six copies of every image input, variant-major: row ``j * B + b`` is copy ``j`` of sample ``b``.

    Copy ``j`` is ``flip_j(x) * factor_j`` for the pairs of :data:`AUG_FLIPS` x
    :data:`AUG_FACTORS` (copy 0 is the image itself). Inputs that are not float images (token ids,
    tabular side inputs) are repeated unchanged.
    """

    def one(a):
        axis = flip_axis(a, channels_first)
        if axis is None:
            return ops.concatenate([a] * AUG_COPIES, axis=0)
        copies = []
        for flip in AUG_FLIPS:
            seen = ops.flip(a, axis=axis) if flip else a
            copies.extend(seen * ops.cast(factor, a.dtype) for factor in AUG_FACTORS)
        return ops.concatenate(copies, axis=0)

    return keras.tree.map_structure(one, x)


def average_copies(maps):
    """``(6 * B, rows, cols)`` maps of :func:`augment`'s copies -> ``(B, rows, cols)``, flips undone, averaged."""
    per = ops.reshape(maps, (AUG_COPIES, -1, *maps.shape[1:]))
    total = None
    for j, part in enumerate(ops.unstack(per, AUG_COPIES, axis=0)):
        part = ops.flip(part, axis=2) if AUG_FLIPS[j // len(AUG_FACTORS)] else part
        total = part if total is None else total + part
    return total / float(AUG_COPIES)


def all_copies(flags):
    """``(6 * B,)`` bools of the copies -> ``(B,)``: true where every copy of the sample is."""
    return ops.all(ops.reshape(flags, (AUG_COPIES, -1)), axis=0)
