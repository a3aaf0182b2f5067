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
