"""The alignment term of guided training, as pure functions of tensors.

Grad-CAM at layer resolution (differentiable: no stop-gradient anywhere, so a second-order
gradient flows through the channel weights), masks resized to the layer, and the share of the
map's evidence that lies outside each sample's mask. Written with ``keras.ops``: the same maths on
every backend.
"""

from __future__ import annotations

import keras
from keras import ops

from ..core.binary import two_classes
from ..core.postprocess import EPS, resize, spatial_mean, weighted_sum

__all__ = [
    "compute_dtype",
    "gradcam_map",
    "input_gradient_map",
    "layer_masks",
    "annotated",
    "outside_share",
    "inside_share",
    "ranking_penalty",
    "composites",
    "composite_loss",
    "alignment_loss",
    "class_indices",
    "label_scores",
    "LOSSES",
]

LOSSES = ("rrr", "hint")


def _floating(dtype) -> bool:
    return "float" in keras.backend.standardize_dtype(dtype)


def compute_dtype(dtype) -> str:
    """The float type the map is computed in: float32 for half precision, else the layer's own."""
    name = keras.backend.standardize_dtype(dtype)
    return "float32" if name in ("float16", "bfloat16") or not _floating(name) else name


def _rank(t) -> int:
    return len(t.shape)


def gradcam_map(acts, grads):
    """Grad-CAM ``ReLU(sum_k w_k A^k)`` with ``w_k`` the spatial mean of ``d score / d A^k``.

    ``acts`` and ``grads`` are ``(B, *spatial, K)``; the map is ``(B, *spatial)``, differentiable
    in both (Selvaraju et al., ICCV 2017, Eq. 1-2).
    """
    return ops.relu(weighted_sum(acts, spatial_mean(grads)))


def input_gradient_map(grads, channels_first: bool = False):
    """``sum_channels (d score / d x)^2`` per pixel: the input-gradient map of Ross et al. (2017).

    ``grads`` is ``(B, *spatial, C)`` (``(B, C, *spatial)`` with ``channels_first``); the map is
    ``(B, *spatial)``, the squared input gradient that "Right for the Right Reasons" penalises
    outside the mask (its Eq. 1), at the input's resolution.
    """
    return ops.sum(ops.square(grads), axis=1 if channels_first else -1)


def layer_masks(masks, spatial: tuple, dtype="float32"):
    """Masks ``(B, *input_spatial)`` resized to the layer's ``spatial`` shape (linear interpolation)."""
    resized = resize(ops.cast(masks, "float32"), tuple(int(s) for s in spatial))
    return ops.cast(resized, dtype)


def annotated(masks):
    """Per sample ``(B,)`` bool: the mask says something (neither all zeros nor all ones)."""
    flat = ops.reshape(ops.cast(masks, "float32"), (ops.shape(masks)[0], -1))
    return ops.logical_and(ops.max(flat, axis=1) > 0, ops.min(flat, axis=1) < 1)


def outside_share(maps, masks, eps: float = EPS):
    """Per sample ``(B,)``: ``sum(M * (1 - m)) / (sum(M) + eps)``, the share of the map outside the mask.

    0 when all the evidence lies inside the mask (or the map is zero), 1 when it all lies outside.
    """
    axes = tuple(range(1, _rank(maps)))
    outside = ops.sum(maps * (1 - masks), axis=axes)
    return outside / (ops.sum(maps, axis=axes) + ops.cast(eps, maps.dtype))


def inside_share(maps, masks, eps: float = EPS):
    """Per sample ``(B,)``: ``sum(M * m) / (sum(M) + eps)``, the share of the map inside the mask.

    ``1 - outside_share`` where the map has evidence; 0 (not 1) for an all-zero map, which has no
    evidence inside the mask either.
    """
    axes = tuple(range(1, _rank(maps)))
    inside = ops.sum(maps * masks, axis=axes)
    return inside / (ops.sum(maps, axis=axes) + ops.cast(eps, maps.dtype))


def ranking_penalty(maps, masks, eps: float = EPS):
    """Per sample ``(B,)``: HINT's pairwise ranking loss on the map's cells, normalised.

    With ``g = M / (mean_ij M + eps)`` (the map over its spatial mean: scale-free) and the pairs
    ``P = {(a, b) : m_a > m_b}`` of cells that the mask ranks in that order,
    ``mean_{(a, b) in P} max(0, g_b - g_a)``: every cell the mask ranks higher should have at
    least the importance of every cell it ranks lower. 0 when no pair is ranked (no annotation).
    It costs ``O(cells^2)`` per sample.
    """
    flat_maps = ops.reshape(maps, (ops.shape(maps)[0], -1))
    flat_masks = ops.reshape(ops.cast(masks, maps.dtype), ops.shape(flat_maps))
    g = flat_maps / (ops.mean(flat_maps, axis=1, keepdims=True) + ops.cast(eps, maps.dtype))
    ranked = ops.cast(flat_masks[:, :, None] > flat_masks[:, None, :], maps.dtype)  # [B, a, b]: m_a > m_b
    hinge = ops.relu(g[:, None, :] - g[:, :, None])  # [B, a, b]: max(0, g_b - g_a)
    pairs = ops.sum(ranked, axis=(1, 2))
    return ops.sum(ranked * hinge, axis=(1, 2)) / ops.maximum(pairs, 1)


def composites(images, masks, flags, channels_first: bool = False, limit=None) -> tuple:
    """Each annotated image's object on another annotated image's background: ``(composites, index)``.

    With ``a_1 < ... < a_n`` the annotated samples (``flags``) and ``b_t = a_{t-1}`` (``b_1 = a_n``:
    the previous annotated image, cyclically), composite ``t`` is

    ``m_a * x_a + (1 - m_a) * ((1 - m_b) * x_b + m_b * mean_b)``

    the object of ``a`` (its mask), everything else from ``b``, except ``b``'s own object, which
    is filled with ``mean_b``, the mean colour of ``b``'s pixels outside its mask (so no second
    object appears). ``index`` is ``(a_1, ..., a_n)``: composite ``t`` has the label of sample
    ``a_t``. With one annotated sample its composite is the image itself (its object on a flat
    fill); with none, both are empty. ``images`` is ``(B, *spatial, C)`` (``(B, C, *spatial)``
    with ``channels_first``), ``masks`` ``(B, *spatial)`` at the images' resolution. ``limit``
    (an int or scalar tensor): only the first ``limit`` composites are made (their partners are
    still the previous annotated samples among all of them). The number of composites depends on
    the values of ``flags``: eagerly, or in a TensorFlow graph (not in a ``jax.jit`` function).
    """
    index = ops.reshape(ops.nonzero(flags)[0], (-1,))
    partner = ops.roll(index, shift=1, axis=0)
    if limit is not None:
        index, partner = index[:limit], partner[:limit]
    expand = 1 if channels_first else -1
    m = ops.cast(masks, images.dtype)
    m_a = ops.expand_dims(ops.take(m, index, axis=0), expand)
    m_b = ops.expand_dims(ops.take(m, partner, axis=0), expand)
    x_a, x_b = ops.take(images, index, axis=0), ops.take(images, partner, axis=0)
    rank = _rank(images)
    spatial = tuple(range(2, rank)) if channels_first else tuple(range(1, rank - 1))
    mean_b = ops.sum((1 - m_b) * x_b, axis=spatial, keepdims=True) / ops.maximum(
        ops.sum(1 - m_b, axis=spatial, keepdims=True), 1
    )
    return m_a * x_a + (1 - m_a) * ((1 - m_b) * x_b + m_b * mean_b), index


def composite_loss(logits, labels):
    """The mean softmax cross-entropy of the composites' ``logits`` ``(n, K)`` for ``labels`` ``(n,)``; 0 if ``n = 0``.

    A single logit (a sigmoid head) is read as the two classes ``[0, s]``.
    """
    logits = ops.cast(logits, compute_dtype(logits.dtype))
    if logits.shape[-1] == 1:
        logits = ops.concatenate([ops.zeros_like(logits), logits], axis=-1)
    ce = ops.sparse_categorical_crossentropy(ops.cast(labels, "int32"), logits, from_logits=True)
    count = ops.cast(ops.shape(ce)[0], ce.dtype)
    return ops.sum(ce) / ops.maximum(count, 1)


def alignment_loss(maps, masks, flags, loss: str = "rrr"):
    """The mean per-sample penalty over the samples whose ``flags`` are True; 0 if none is.

    ``maps`` and ``masks`` are ``(B, *spatial)`` at the same resolution, ``flags`` is ``(B,)``
    bool. ``loss="rrr"``: :func:`outside_share`; ``loss="hint"``: :func:`ranking_penalty`.
    """
    share = outside_share(maps, masks) if loss == "rrr" else ranking_penalty(maps, masks)
    weights = ops.cast(flags, share.dtype)
    return ops.sum(share * weights) / ops.maximum(ops.sum(weights), 1)


def class_indices(y, classes: int):
    """The class index of each sample ``(B,)`` int32, from indices or one-hot rows."""
    y = ops.convert_to_tensor(y)
    if len(y.shape) == 2 and y.shape[-1] == classes and _floating(y.dtype) and classes > 1:
        return ops.cast(ops.argmax(y, axis=-1), "int32")  # one-hot labels
    return ops.reshape(ops.cast(y, "int32"), (-1,))


def label_scores(logits, y, score: str = "contrast"):
    """The score of each sample's label ``(B,)`` from class ``logits`` ``(B, K)`` (a one-unit sigmoid as ``[-s, s]``).

    ``score``: ``"logit"`` ``y_c``; ``"contrast"`` ``y_c - mean_{c' != c} y_c'``; ``"log_prob"``
    ``log p_c``; ``"sum_log_prob"`` ``sum_k log p_k`` (the same for every label; see ``GuidedTraining``).
    """
    if len(logits.shape) != 2:
        raise ValueError(
            f"GuidedTraining needs class logits of shape (batch, classes); the model gives {tuple(logits.shape)}."
        )
    logits = two_classes(logits)
    if score == "contrast":  # y_c - mean of the other classes' logits: evidence against them counts too
        classes = logits.shape[-1]
        logits = (classes * logits - ops.sum(logits, axis=-1, keepdims=True)) / (classes - 1)
    elif score == "log_prob":  # log p_c = y_c - logsumexp(y)
        logits = ops.log_softmax(logits, axis=-1)
    elif score == "sum_log_prob":  # sum_k log p_k, the same for every label (Ross et al.)
        return ops.sum(ops.log_softmax(logits, axis=-1), axis=-1)
    labels = class_indices(y, logits.shape[-1])
    return ops.take_along_axis(logits, ops.expand_dims(labels, -1), axis=1)[:, 0]
