"""One map per word of a caption or an answer: where the image supports each token a language model gave.

A captioning or visual-question-answering model (KerasHub's ``PaliGemmaCausalLM``,
``Gemma3CausalLM``, or a small one of your own) fed its own caption (teacher forcing) scores at
position ``p - 1`` the token at position ``p``. :func:`explain_words` explains each word of the
caption with a :class:`~keras_gradcam.TokenTarget` at that position: the prompt is repeated once per
word and every word is explained in one batched pass (``batch_size`` words at a time), so a
caption of ``W`` words costs ``ceil(W / batch_size)`` passes and one compiled function.
:func:`plot_words` draws the image and each word with its map.

Matplotlib is imported when a figure is drawn, never when ``keras_gradcam`` is imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import keras
import numpy as np

from .core.explanation import Explanation
from .core.inputs import as_inputs
from .core.sequence_targets import TokenTarget
from .explain import explain
from .viz.overlay import overlay

if TYPE_CHECKING:  # pragma: no cover - typing only, keeps matplotlib a lazy import
    from matplotlib.figure import Figure

__all__ = ["explain_words", "plot_words"]


def _one_sample(inputs, shared) -> tuple:
    """The sample's inputs (leading axis 1 on every per-sample array) and its token ids' name."""
    x = as_inputs(inputs)
    if not isinstance(x, dict):
        raise TypeError(
            "explain_words takes the model's inputs as a dict keyed by input name (a causal LM's "
            f"{{'images': ..., 'token_ids': ..., ...}}); got {type(inputs).__name__}."
        )
    shared = set([shared] if isinstance(shared, str) else shared or ())
    for name, a in x.items():
        if name not in shared and (a.ndim == 0 or a.shape[0] != 1):
            raise ValueError(
                f"explain_words explains one sample: every per-sample input needs a leading axis of 1; "
                f"input {name!r} has shape {a.shape}. Pass one image and its prompt (e.g. x[:1])."
            )
    return x


def explain_words(
    model: keras.Model,
    inputs,
    positions: Sequence[int],
    *,
    tokens: Sequence[int] | None = None,
    token_input: str = "token_ids",
    method: str = "gradcam",
    layer=None,
    score: str = "logit",
    output=None,
    batch_size: int = 32,
    shared_inputs=None,
    **options,
) -> Explanation:
    """Explain each word of one sample's caption or answer: one map per word, batched over the words.

    Word ``k`` is the token at position ``positions[k]`` of the input ``token_input`` (the caption
    fed back to the model, teacher forcing); its score is the output at ``positions[k] - 1``
    (``score="logit"``, or ``"log_prob"``), where a causal language model predicts it.

    Parameters
    ----------
    model : keras.Model
        A causal language model with an image input, outputs ``(batch, sequence, vocabulary)``.
    inputs : dict of arrays
        One sample's inputs, each with a leading axis of 1 (but the ``shared_inputs``).
    positions : sequence of int
        The positions of the explained words in ``inputs[token_input]`` (each >= 1).
    tokens : sequence of int, optional
        The token ids to explain at those positions; by default the ones the input holds there.
    token_input : str, default="token_ids"
        The input holding the caption's token ids.
    method, layer, batch_size, shared_inputs, **options
        As for :func:`keras_gradcam.explain`.
    score : {"logit", "log_prob"}, default="logit"
    output : int or str, optional
        Which output holds the logits.

    Returns
    -------
    Explanation
        One row per word, in the order of ``positions``.

    Raises
    ------
    ValueError
        Inputs that are not one sample, a position outside ``1 .. length - 1``, or ``tokens`` of
        another length than ``positions``.
    """
    x = _one_sample(inputs, shared_inputs)
    if token_input not in x:
        raise ValueError(f"token_input={token_input!r} is not one of the inputs {list(x)}; name the input holding the caption's token ids.")
    ids = np.asarray(x[token_input])[0]
    positions = np.asarray(positions, dtype=np.int64).reshape(-1)
    if positions.size == 0 or (positions < 1).any() or (positions >= ids.shape[0]).any():
        raise ValueError(
            f"positions must be word positions 1 .. {ids.shape[0] - 1} of input {token_input!r} (position 0 has no "
            f"position before it to be predicted from); got {positions.tolist()}."
        )
    tokens = ids[positions] if tokens is None else np.asarray(tokens).reshape(-1)
    if tokens.shape != positions.shape:
        raise ValueError(f"tokens has {tokens.shape[0]} ids but positions {positions.shape[0]}: give one token per position.")
    shared = set([shared_inputs] if isinstance(shared_inputs, str) else shared_inputs or ())
    words = len(positions)
    repeated = {k: v if k in shared else np.repeat(v, words, axis=0) for k, v in x.items()}
    target = TokenTarget(tokens.tolist(), (positions - 1).tolist(), score=score, output=output)
    return explain(model, repeated, method=method, layer=layer, targets=target, batch_size=batch_size,
                   shared_inputs=shared_inputs, **options)


def plot_words(image, explanation: Explanation, words: Sequence[str], *, columns: int = 6, alpha: float = 0.5,
               colormap="jet") -> Figure:
    """The image, then each word with its map (an overlay), as a Matplotlib figure.

    Parameters
    ----------
    image : array of shape (height, width, channels)
        The image the words describe (as displayed; a preprocessed one is rescaled for display).
    explanation : Explanation
        From :func:`explain_words`: one map per word.
    words : sequence of str
        The words, in the order of the explanation's rows.
    columns : int, default=6
    alpha : float, default=0.5
    colormap : str, default="jet"
    """
    import matplotlib.pyplot as plt  # lazy: only when drawing

    heat = np.asarray(explanation.heatmaps)
    if len(words) != heat.shape[0]:
        raise ValueError(f"words has {len(words)} entries but the explanation {heat.shape[0]} maps: give one word per map.")
    image = np.asarray(image)
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    panels = 1 + len(words)
    cols = max(1, min(columns, panels))
    rows = -(-panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False)
    blended = overlay(np.repeat(image[None], len(words), axis=0), heat, alpha=alpha, colormap=colormap)
    shown = overlay(image, np.zeros(image.shape[:2]), alpha=0.0)
    for ax in axes.ravel():
        ax.axis("off")
    axes.ravel()[0].imshow(shown)
    axes.ravel()[0].set_title("image")
    for k, (word, picture) in enumerate(zip(words, blended), start=1):
        axes.ravel()[k].imshow(picture)
        axes.ravel()[k].set_title(repr(word))
    fig.tight_layout()
    return fig
