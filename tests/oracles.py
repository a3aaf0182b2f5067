"""Numpy reference pieces shared by the hand-computed tests (independent of the library)."""

import numpy as np


def relu(a):
    return np.maximum(a, 0.0)


def minmax(m):
    """Per-sample min-max over every axis but the first; a constant map becomes zeros."""
    axes = tuple(range(1, m.ndim))
    lo, hi = m.min(axis=axes, keepdims=True), m.max(axis=axes, keepdims=True)
    span = hi - lo
    return np.where(span > 1e-8, (m - lo) / np.where(span > 0, span, 1.0), 0.0)


def close(actual, expected, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol, atol=atol)
