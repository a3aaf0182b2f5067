"""The alignment term of guided training, as pure functions of tensors.

Grad-CAM at layer resolution (differentiable: no stop-gradient anywhere, so a second-order
gradient flows through the channel weights), masks resized to the layer, and the share of the
map's evidence that lies outside each sample's mask.
"""

from __future__ import annotations

import tensorflow as tf

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
    "LOSSES",
]

LOSSES = ("rrr", "hint")


def compute_dtype(dtype: tf.DType) -> tf.DType:
    """The float type the map is computed in: float32 for half precision, else the layer's own."""
    return tf.float32 if dtype in (tf.float16, tf.bfloat16) or not dtype.is_floating else dtype


def gradcam_map(acts: tf.Tensor, grads: tf.Tensor) -> tf.Tensor:
    """Grad-CAM ``ReLU(sum_k w_k A^k)`` with ``w_k`` the spatial mean of ``d score / d A^k``.

    ``acts`` and ``grads`` are ``(B, *spatial, K)``; the map is ``(B, *spatial)``, differentiable
    in both (Selvaraju et al., ICCV 2017, Eq. 1-2).
    """
    return tf.nn.relu(weighted_sum(acts, spatial_mean(grads)))


def input_gradient_map(grads: tf.Tensor, channels_first: bool = False) -> tf.Tensor:
    """``sum_channels (d score / d x)^2`` per pixel: the input-gradient map of Ross et al. (2017).

    ``grads`` is ``(B, *spatial, C)`` (``(B, C, *spatial)`` with ``channels_first``); the map is
    ``(B, *spatial)``, the squared input gradient that "Right for the Right Reasons" penalises
    outside the mask (its Eq. 1), at the input's resolution.
    """
    return tf.reduce_sum(tf.square(grads), axis=1 if channels_first else -1)


def layer_masks(masks: tf.Tensor, spatial: tuple, dtype: tf.DType = tf.float32) -> tf.Tensor:
    """Masks ``(B, *input_spatial)`` resized to the layer's ``spatial`` shape (linear interpolation)."""
    resized = resize(tf.cast(masks, tf.float32), tuple(int(s) for s in spatial))
    return tf.cast(resized, dtype)


def annotated(masks: tf.Tensor) -> tf.Tensor:
    """Per sample ``(B,)`` bool: the mask says something (neither all zeros nor all ones)."""
    flat = tf.reshape(tf.cast(masks, tf.float32), [tf.shape(masks)[0], -1])
    return (tf.reduce_max(flat, axis=1) > 0) & (tf.reduce_min(flat, axis=1) < 1)


def outside_share(maps: tf.Tensor, masks: tf.Tensor, eps: float = EPS) -> tf.Tensor:
    """Per sample ``(B,)``: ``sum(M * (1 - m)) / (sum(M) + eps)``, the share of the map outside the mask.

    0 when all the evidence lies inside the mask (or the map is zero), 1 when it all lies outside.
    """
    axes = list(range(1, maps.shape.rank))
    outside = tf.reduce_sum(maps * (1 - masks), axis=axes)
    return outside / (tf.reduce_sum(maps, axis=axes) + tf.cast(eps, maps.dtype))


def inside_share(maps: tf.Tensor, masks: tf.Tensor, eps: float = EPS) -> tf.Tensor:
    """Per sample ``(B,)``: ``sum(M * m) / (sum(M) + eps)``, the share of the map inside the mask.

    ``1 - outside_share`` where the map has evidence; 0 (not 1) for an all-zero map, which has no
    evidence inside the mask either.
    """
    axes = list(range(1, maps.shape.rank))
    inside = tf.reduce_sum(maps * masks, axis=axes)
    return inside / (tf.reduce_sum(maps, axis=axes) + tf.cast(eps, maps.dtype))


def ranking_penalty(maps: tf.Tensor, masks: tf.Tensor, eps: float = EPS) -> tf.Tensor:
    """Per sample ``(B,)``: HINT's pairwise ranking loss on the map's cells, normalised.

    With ``g = M / (mean_ij M + eps)`` (the map over its spatial mean: scale-free) and the pairs
    ``P = {(a, b) : m_a > m_b}`` of cells that the mask ranks in that order,
    ``mean_{(a, b) in P} max(0, g_b - g_a)``: every cell the mask ranks higher should have at
    least the importance of every cell it ranks lower. 0 when no pair is ranked (no annotation).
    It costs ``O(cells^2)`` per sample.
    """
    flat_maps = tf.reshape(maps, [tf.shape(maps)[0], -1])
    flat_masks = tf.reshape(tf.cast(masks, maps.dtype), tf.shape(flat_maps))
    g = flat_maps / (tf.reduce_mean(flat_maps, axis=1, keepdims=True) + tf.cast(eps, maps.dtype))
    ranked = tf.cast(flat_masks[:, :, None] > flat_masks[:, None, :], maps.dtype)  # [B, a, b]: m_a > m_b
    hinge = tf.nn.relu(g[:, None, :] - g[:, :, None])  # [B, a, b]: max(0, g_b - g_a)
    pairs = tf.reduce_sum(ranked, axis=[1, 2])
    return tf.reduce_sum(ranked * hinge, axis=[1, 2]) / tf.maximum(pairs, 1)


def composites(images: tf.Tensor, masks: tf.Tensor, flags: tf.Tensor, channels_first: bool = False, limit=None) -> tuple:
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
    still the previous annotated samples among all of them).
    """
    index = tf.reshape(tf.where(flags), [-1])
    partner = tf.roll(index, shift=1, axis=0)
    if limit is not None:
        index, partner = index[:limit], partner[:limit]
    expand = 1 if channels_first else -1
    m = tf.cast(masks, images.dtype)
    m_a, m_b = tf.expand_dims(tf.gather(m, index), expand), tf.expand_dims(tf.gather(m, partner), expand)
    x_a, x_b = tf.gather(images, index), tf.gather(images, partner)
    spatial = list(range(2, x_b.shape.rank)) if channels_first else list(range(1, x_b.shape.rank - 1))
    mean_b = tf.reduce_sum((1 - m_b) * x_b, axis=spatial, keepdims=True) / tf.maximum(
        tf.reduce_sum(1 - m_b, axis=spatial, keepdims=True), 1
    )
    return m_a * x_a + (1 - m_a) * ((1 - m_b) * x_b + m_b * mean_b), index


def composite_loss(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """The mean softmax cross-entropy of the composites' ``logits`` ``(n, K)`` for ``labels`` ``(n,)``; 0 if ``n = 0``.

    A single logit (a sigmoid head) is read as the two classes ``[0, s]``.
    """
    logits = tf.cast(logits, compute_dtype(logits.dtype))
    if logits.shape[-1] == 1:
        logits = tf.concat([tf.zeros_like(logits), logits], axis=-1)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(labels, tf.int32), logits)
    return tf.reduce_sum(ce) / tf.maximum(tf.cast(tf.size(ce), ce.dtype), 1)


def alignment_loss(maps: tf.Tensor, masks: tf.Tensor, flags: tf.Tensor, loss: str = "rrr") -> tf.Tensor:
    """The mean per-sample penalty over the samples whose ``flags`` are True; 0 if none is.

    ``maps`` and ``masks`` are ``(B, *spatial)`` at the same resolution, ``flags`` is ``(B,)``
    bool. ``loss="rrr"``: :func:`outside_share`; ``loss="hint"``: :func:`ranking_penalty`.
    """
    share = outside_share(maps, masks) if loss == "rrr" else ranking_penalty(maps, masks)
    weights = tf.cast(flags, share.dtype)
    return tf.reduce_sum(share * weights) / tf.maximum(tf.reduce_sum(weights), 1)
