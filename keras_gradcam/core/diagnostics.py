"""Warnings about what an explanation came out as: non-finite scores, empty maps, probabilities explained.

Each warning names the likely cause and the fix, and points at the user's line
(:func:`~keras_gradcam.core.validate.warn_user`).
"""

from __future__ import annotations

import numpy as np

from .validate import warn_user

__all__ = ["NO_EVIDENCE", "explain_warnings", "probability_warning"]

NO_EVIDENCE = (
    "the layer shows no positive evidence for the explained target (the weighted sum is <= 0 everywhere, "
    "or the layer's activations are zero). Try counterfactual=True for negative evidence, another target, "
    "or another layer."
)


def explain_warnings(method: str, finite: np.ndarray, heat: np.ndarray, zero_gradients=None, reason: str = NO_EVIDENCE) -> None:
    """Warn about samples whose explanation carries no information, and why.

    ``finite``: per sample, whether the score and map are finite; ``zero_gradients``: per sample,
    whether every gradient at the layer was exactly zero (None for gradient-free methods).
    """
    bad = int((~finite).sum())
    if bad:
        warn_user(
            f"{method}: {bad} of {len(finite)} samples have a score or map that is not finite (NaN or inf): "
            "the model's weights or outputs are not finite (e.g. after a diverged training run). Their maps "
            "are all zero; Explanation.finite marks them.",
            RuntimeWarning,
        )
    peaks = heat.reshape(len(heat), -1).max(axis=1, initial=0.0)
    empty = finite & (peaks <= 0)
    if not empty.any():
        return
    zero = np.zeros_like(empty) if zero_gradients is None else np.asarray(zero_gradients, bool)
    no_grad = int((empty & zero).sum())
    other = int((empty & ~zero).sum())
    if no_grad:
        warn_user(
            f"{method}: {no_grad} of {len(finite)} maps are all zero because every gradient at the layer is "
            "exactly zero: the explained score does not depend on the layer (a non-differentiable score such "
            "as tf.argmax, a layer the explained output does not depend on, or a saturated output).",
            RuntimeWarning,
        )
    if other:
        warn_user(
            f"{method}: {other} of {len(finite)} maps are all zero: {reason}",
            RuntimeWarning,
        )


def probability_warning(method: str, probability_rows) -> None:
    """Warn when every explained output row looked like probabilities although logits were asked for."""
    if probability_rows is None or not np.asarray(probability_rows).all():
        return
    warn_user(
        f"{method}: the explained output looks like probabilities (non-negative rows that sum to one), "
        "but no softmax or sigmoid layer was found before it to explain the logits instead (a softmax "
        "inside a Lambda or a custom layer?). Probabilities saturate, so maps can vanish for confident "
        "samples: end the model with Dense(..., activation='softmax') or a Softmax layer, or pass "
        "score='output' to explain probabilities on purpose (this warning then stops).",
        RuntimeWarning,
    )
