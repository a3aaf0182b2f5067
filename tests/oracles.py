"""Numpy reference pieces shared by the hand-computed tests (independent of the library).

The one assertion helper of the suite is :func:`close` (and :func:`same_explanation`, which
applies it field by field to two explanations).
"""

import numpy as np


def relu(a):
    return np.maximum(a, 0.0)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def softmax(z, axis=-1):
    """The softmax along ``axis``, shifted by the maximum for stability."""
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def minmax(m):
    """Per-sample min-max over every axis but the first; a constant map becomes zeros."""
    axes = tuple(range(1, m.ndim))
    lo, hi = m.min(axis=axes, keepdims=True), m.max(axis=axes, keepdims=True)
    span = hi - lo
    return np.where(span > 1e-8, (m - lo) / np.where(span > 0, span, 1.0), 0.0)


def close(actual, expected, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol, atol=atol)


def same_explanation(a, b, atol=1e-5, detail_atol=None, labels=True):
    """Two explanations agree: heatmaps within ``atol``; layer maps and scores within ``rtol=1e-5``
    and ``detail_atol`` (``atol`` by default); with ``labels``, equal targets and predictions."""
    detail_atol = atol if detail_atol is None else detail_atol
    np.testing.assert_allclose(a.heatmaps, b.heatmaps, atol=atol)
    np.testing.assert_allclose(a.layer_heatmaps, b.layer_heatmaps, rtol=1e-5, atol=detail_atol)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=detail_atol)
    if labels:
        np.testing.assert_array_equal(a.targets, b.targets)
        np.testing.assert_array_equal(a.predictions, b.predictions)


def scorecam(x, acts, logits_of, targets, up, variant="probability", masks_of=None, eps=1e-8):
    """Score-CAM by hand, with each channel's score averaged over the masks ``masks_of`` gives.

    Parameters
    ----------
    x : ndarray (N, H, W, C)
        The images.
    acts : ndarray (N, h, w, K)
        The explained layer's activations on ``x``.
    logits_of : callable
        ``images -> (N, classes)`` logits of the model.
    targets : ndarray (N,)
        The explained class of each image.
    up : callable
        ``(N, h, w) -> (N, H, W)``: the upsampling to the image.
    variant : {"probability", "channel-softmax"}
        The weight of a channel: its mean target probability, or the softmax over the channels of
        its mean target logit.
    masks_of : callable, optional
        ``(k, normalised upsampled channel k) -> list of (N, H, W) masks``; Score-CAM's own is the
        channel itself (``[m]``); SS-CAM adds noise, IS-CAM scales it.
    eps : float
        A channel whose upsampled range is not above ``eps`` is constant: weight 0.

    Returns
    -------
    weights (N, K), layer map (N, h, w) = ReLU(sum_k w_k A^k), heatmap (N, H, W) = minmax(up(layer map)).
    """
    masks_of = masks_of or (lambda k, m: [m])
    n, channels = len(x), acts.shape[-1]
    scores = np.zeros((n, channels))
    valid = np.zeros((n, channels), bool)
    for k in range(channels):
        u = up(acts[..., k])
        valid[:, k] = (u.max(axis=(1, 2)) - u.min(axis=(1, 2))) > eps
        picked = []
        for mask in masks_of(k, minmax(u)):
            logits = logits_of(x * mask[..., None])
            picked.append((softmax(logits) if variant == "probability" else logits)[np.arange(n), targets])
        scores[:, k] = np.mean(picked, axis=0)
    if variant == "probability":
        weights = np.where(valid, scores, 0.0)
    else:
        weights = np.where(valid, softmax(np.where(valid, scores, -np.inf), axis=1), 0.0)
    layer_map = relu((acts * weights[:, None, None]).sum(-1))
    return weights, layer_map, minmax(up(layer_map))
