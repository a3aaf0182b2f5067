"""Neuron importance and textual explanations (Grad-CAM paper, IJCV version, section 7).

The Grad-CAM weights :math:`\\alpha^c_k` (signed, before any ReLU) say how much each channel of the
layer matters for class *c*: positive when the channel's presence raises the score, negative when
its absence does. Sorting them gives the most and least important channels of each sample, and,
with a name for some channels (from Network Dissection, for instance), a sentence.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from .core.layers import LayerSpec
from .core.postprocess import normalize, resize, spatial_mean
from .core.targets import Targets
from .core.validate import boolean, positive_int
from .methods.gradcam import GradCAM

__all__ = ["NeuronImportance", "neuron_importance", "textual_explanation"]


@dataclass
class NeuronImportance:
    """Channel weights of a batch, the top-k and bottom-k channels, their maps and sentences.

    Attributes
    ----------
    weights : ndarray of shape (n_samples, channels), float32
        The Grad-CAM neuron importances :math:`\\alpha^c_k` (negated with ``counterfactual=True``).
    top_channels, bottom_channels : ndarray of shape (n_samples, k), int
        The ``k`` channels with the largest weights (largest first) and with the smallest weights
        (most negative first).
    top_weights, bottom_weights : ndarray of shape (n_samples, k), float32
        Their weights.
    top_maps, bottom_maps : ndarray of shape (n_samples, k, *input_spatial_dims), or None
        Each of those channels' activation map, upsampled (bilinear) to the input size and min-max
        normalised per map; None with ``maps=False``.
    targets : ndarray of shape (n_samples,), int, or None
        The explained class of each sample (None for a callable target).
    scores : ndarray of shape (n_samples,), float32
        The explained score (the logit by default).
    layer : str
        Path of the layer.
    texts : list of str, or None
        One textual explanation per sample when ``channel_names`` was given.
    """

    weights: np.ndarray
    top_channels: np.ndarray
    top_weights: np.ndarray
    bottom_channels: np.ndarray
    bottom_weights: np.ndarray
    top_maps: np.ndarray | None
    bottom_maps: np.ndarray | None
    targets: np.ndarray | None
    scores: np.ndarray
    layer: str
    texts: list | None = None

    def __len__(self) -> int:
        return int(self.weights.shape[0])


def _check_names(channel_names) -> None:
    if channel_names is not None and not isinstance(channel_names, Mapping):
        raise TypeError(
            f"channel_names must be a dict {{channel index: concept name}}; got {type(channel_names).__name__}."
        )


def _class_label(target, class_names) -> str:
    if target is None:
        return "the explained score"
    if class_names is not None:
        try:
            return str(class_names[int(target)])
        except (KeyError, IndexError):
            pass
    return f"class {int(target)}"


def textual_explanation(weights, channel_names: Mapping, k: int = 5, target=None, class_names=None) -> str:
    """A sentence naming the most positively and negatively important named channels of one sample.

    Parameters
    ----------
    weights : array-like of shape (channels,)
        The neuron importances of one sample (:attr:`NeuronImportance.weights` row).
    channel_names : dict of {int: str}
        Concept name of some channels; the others are left out, as the paper leaves out channels
        without a Network Dissection concept.
    k : int, default=5
        How many names on each side (fewer if fewer named channels have a weight of that sign).
    target : int, optional
        The explained class, for the sentence's subject.
    class_names : dict or sequence, optional
        Class index -> name.

    Returns
    -------
    str
        ``"<class>: positively important: a, b, c; negatively important: d, e"``, names ordered by
        importance (``"none"`` when no named channel has a weight of that sign).

    Raises
    ------
    TypeError
        ``channel_names`` is not a dict.
    ValueError
        ``k < 1``.

    Notes
    -----
    Positively important channels are named channels with :math:`\\alpha_k > 0`, largest first;
    negatively important ones have :math:`\\alpha_k < 0`, most negative first.

    References
    ----------
    R. R. Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
    Localization", IJCV 2020, section 7 (textual explanations).

    Examples
    --------
    >>> textual_explanation([0.5, -0.2, 0.1], {0: "stripes", 1: "water"}, k=2, target=3)
    'class 3: positively important: stripes; negatively important: water'
    """
    _check_names(channel_names)
    k = positive_int("k", k, expected="a positive int")
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    named = [(int(c), str(n)) for c, n in channel_names.items() if 0 <= int(c) < w.size]
    pos = sorted((c for c, _ in named if w[c] > 0), key=lambda c: -w[c])[:k]
    neg = sorted((c for c, _ in named if w[c] < 0), key=lambda c: w[c])[:k]
    names = dict(named)
    pos_text = ", ".join(names[c] for c in pos) or "none"
    neg_text = ", ".join(names[c] for c in neg) or "none"
    return f"{_class_label(target, class_names)}: positively important: {pos_text}; negatively important: {neg_text}"


# explainers kept per model, so that repeated calls reuse their compiled functions
_CACHE: weakref.WeakKeyDictionary[keras.Model, dict] = weakref.WeakKeyDictionary()


class _NeuronWeights(GradCAM):
    """Grad-CAM's capture and layer resolution, returning weights and per-channel maps (its passes)."""

    name = "neuron-importance"
    NAMES = ("weights", "top_channels", "top_weights", "bottom_channels", "bottom_weights", "targets", "scores",
             "top_maps", "bottom_maps")

    def importance(self, images, targets: Targets, k: int, maps: bool) -> tuple:
        """``(the call, outputs of :meth:`passes` joined over the batches, by name)``."""
        call = self.prepare(images, targets)
        info = self.layers[0]
        channels = int(info.shape[1 if info.channels_first else -1])
        if k > channels:
            raise ValueError(f"k={k} but layer {self.layer!r} has only {channels} channels; pass k <= {channels}.")
        call.state.update(k=k, maps=maps)
        return call, self.run(call)

    def passes(self, call, start: int, stop: int) -> dict:
        fn = call.state.get("fn")
        if fn is None:
            k, maps, size = call.state["k"], call.state["maps"], call.size

            def body(xb, targets):
                return self.weights_batch(xb, targets, k, maps, size)

            fn = call.state["fn"] = self.compile(call, ("neurons", k, maps), body)
        return dict(zip(self.NAMES, self.outputs(fn, call.batch(start, stop), *call.data(start, stop))))

    def weights_batch(self, xb, targets, k: int, maps: bool, size: tuple):
        """Graph code: Grad-CAM's channel weights of a batch, the ``k`` largest and smallest, their maps."""
        cap = self.capture(xb, targets)
        acts = cap.activations[0]
        alpha = spatial_mean(self.signed(cap.gradients[0]))  # (B, K)
        top = tf.math.top_k(alpha, k=k)
        bottom = tf.math.top_k(-alpha, k=k)
        out = [alpha, top.indices, top.values, bottom.indices, -bottom.values, cap.targets, cap.scores]
        if maps:
            picked = tf.gather(acts, tf.concat([top.indices, bottom.indices], axis=1), axis=-1, batch_dims=1)
            rank = picked.shape.rank
            picked = tf.transpose(picked, [0, rank - 1] + list(range(1, rank - 1)))  # (B, 2k, *spatial)
            flat = tf.reshape(picked, tf.concat([[-1], tf.shape(picked)[2:]], axis=0))
            up = normalize(resize(flat, size))
            up = tf.reshape(up, tf.concat([[-1, 2 * k], tf.shape(up)[1:]], axis=0))
            out += [up[:, :k], up[:, k:]]
        return tuple(out)


def neuron_importance(
    model: keras.Model,
    images,
    layer: LayerSpec = None,
    targets: Targets = None,
    *,
    k: int = 5,
    channel_names: Mapping | None = None,
    class_names: Mapping | Sequence | None = None,
    maps: bool = True,
    counterfactual: bool = False,
    output: int | str | None = None,
    score: str = "logit",
    batch_size: int = 32,
) -> NeuronImportance:
    r"""Grad-CAM neuron importances of a layer's channels, top/bottom channels and their maps.

    Parameters
    ----------
    model : keras.Model
        Functional, Sequential or nested model; not modified.
    images : array-like of shape (n_samples, ...)
        Preprocessed as the model expects.
    layer : str, keras.layers.Layer or None, default=None
        The layer whose channels are ranked (None: the default layer, see :func:`keras_gradcam.core.layers.resolve_layer`).
    targets : None, int, sequence of int or callable, default=None
        What is explained, as for :class:`~keras_gradcam.GradCAM`.
    k : int, default=5
        How many top and bottom channels (the paper reports 5 of each).
    channel_names : dict of {int: str}, optional
        Concept names of some channels (e.g. from Network Dissection); gives ``texts``.
    class_names : dict or sequence, optional
        Class names used in ``texts``.
    maps : bool, default=True
        Also return the ``k`` top and bottom channels' maps at input resolution.
    counterfactual : bool, default=False
        Negate the gradients (and so the weights).
    output, score, batch_size
        See :class:`~keras_gradcam.core.engine.BaseCAM`.

    Returns
    -------
    NeuronImportance

    Raises
    ------
    ValueError
        ``k`` is not in ``1 .. channels``, or as :class:`~keras_gradcam.GradCAM`.
    TypeError
        ``channel_names`` is not a dict.

    Notes
    -----
    .. math:: \alpha^c_k = \frac{1}{Z}\sum_{ij} \frac{\partial y^c}{\partial A^k_{ij}}

    signed, with no ReLU; top-k are the largest :math:`\alpha^c_k`, bottom-k the smallest. One
    forward and one backward pass per batch, in one compiled function, kept per model so that
    repeated calls with the same arguments do not trace again.

    References
    ----------
    R. R. Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
    Localization", IJCV 2020, section 7.

    Examples
    --------
    >>> ni = neuron_importance(model, images, k=3, channel_names={0: "fur", 5: "sky"})   # doctest: +SKIP
    >>> ni.top_channels.shape, ni.texts[0]                                                # doctest: +SKIP
    ((8, 3), 'class 3: positively important: fur; negatively important: sky')
    """
    _check_names(channel_names)
    k = positive_int("k", k, expected="a positive int")
    maps = boolean("maps", maps)
    key = (layer, output, score, bool(counterfactual), batch_size)
    per_model = _CACHE.setdefault(model, {})
    explainer = per_model.get(key)
    if explainer is None:
        explainer = _NeuronWeights(
            model, layer, output=output, score=score, counterfactual=counterfactual, batch_size=batch_size
        )
        per_model[key] = explainer
    call, out = explainer.importance(images, targets, k, maps)
    alpha, top_c, top_w, bot_c, bot_w, tgt, scores = (out[name] for name in _NeuronWeights.NAMES[:7])
    top_maps, bottom_maps = (out["top_maps"], out["bottom_maps"]) if maps else (None, None)
    tgt = tgt.astype(np.int64) if call.target.names_classes else None
    texts = None
    if channel_names is not None:
        texts = [
            textual_explanation(alpha[i], channel_names, k, None if tgt is None else tgt[i], class_names)
            for i in range(len(alpha))
        ]
    return NeuronImportance(
        weights=alpha,
        top_channels=top_c.astype(np.int64),
        top_weights=top_w,
        bottom_channels=bot_c.astype(np.int64),
        bottom_weights=bot_w,
        top_maps=top_maps,
        bottom_maps=bottom_maps,
        targets=tgt,
        scores=scores,
        layer=explainer.layer,
        texts=texts,
    )
