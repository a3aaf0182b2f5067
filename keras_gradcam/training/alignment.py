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
    "layer_masks",
    "annotated",
    "outside_share",
    "ranking_penalty",
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


def alignment_loss(maps: tf.Tensor, masks: tf.Tensor, flags: tf.Tensor, loss: str = "rrr") -> tf.Tensor:
    """The mean per-sample penalty over the samples whose ``flags`` are True; 0 if none is.

    ``maps`` and ``masks`` are ``(B, *spatial)`` at the same resolution, ``flags`` is ``(B,)``
    bool. ``loss="rrr"``: :func:`outside_share`; ``loss="hint"``: :func:`ranking_penalty`.
    """
    share = outside_share(maps, masks) if loss == "rrr" else ranking_penalty(maps, masks)
    weights = tf.cast(flags, share.dtype)
    return tf.reduce_sum(share * weights) / tf.maximum(tf.reduce_sum(weights), 1)
