"""A one-unit binary output is two classes: written once, for the capture, CAM and guided training.

A binary classifier often ends in ``Dense(1, activation="sigmoid")``: one unit, the logit ``s`` of
the positive class. keras-gradcam explains it as two classes, as Keras' ``binary_crossentropy``
reads it: class 1 the positive one, class 0 the negative one. Since ``sigmoid(-s) = 1 - sigmoid(s)``,
the two class logits are ``[-s, s]`` and the two probabilities ``[1 - p, p]``; anything linear in
the logit (the head's kernel column, for CAM) becomes ``[-w, w]`` alike.
"""

from __future__ import annotations

import keras

__all__ = ["two_classes"]


def two_classes(x, probability: bool = False):
    """A ``(rows, 1)`` binary unit as ``(rows, 2)`` classes ``[negative, positive]``; other shapes as they are.

    Parameters
    ----------
    x : tensor of shape (rows, 1), or any other shape
        A logit ``s`` per row (or anything linear in it, e.g. a Dense kernel ``(channels, 1)``), or
        a probability ``p`` per row.
    probability : bool, default=False
        ``x`` holds probabilities: the negative class is ``1 - p`` (else ``-s``).

    Returns
    -------
    tensor of shape (rows, 2)
        ``[-s, s]`` or ``[1 - p, p]``; ``x`` itself when it is not a ``(rows, 1)`` tensor.

    Examples
    --------
    >>> import numpy as np
    >>> keras.ops.convert_to_numpy(two_classes(np.array([[0.25]], "float32"))).tolist()
    [[-0.25, 0.25]]
    >>> keras.ops.convert_to_numpy(two_classes(np.array([[0.25]], "float32"), probability=True)).tolist()
    [[0.75, 0.25]]
    """
    if len(x.shape) != 2 or x.shape[-1] != 1:
        return x
    negative = 1.0 - x if probability else -x
    return keras.ops.concatenate([negative, x], axis=-1)
