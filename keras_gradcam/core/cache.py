"""The one compile-and-cache step: each explainer's (and metric's) compiled functions, bounded.

The compiling itself is the backend's (:func:`keras_gradcam.core.backend.compile`); this module
keys, bounds and locks.
"""

from __future__ import annotations

from collections import OrderedDict

from . import backend
from .patching import TRACE_LOCK

__all__ = ["FUNCTIONS_KEPT", "FunctionCache", "compile_cached"]

FUNCTIONS_KEPT = 16  # compiled functions an explainer keeps (least recently used dropped)


class FunctionCache(OrderedDict):
    """The compiled functions of one explainer, at most ``maxsize``, least recently used dropped.

    Keys are the input signature and the target's key (see :mod:`keras_gradcam.core.targets`):
    a callable is keyed by its code, so a new ``lambda`` of the same code shares a function, but
    callables of new code, or whose captured values must be Python values, trace anew; the bound
    keeps such a loop from holding every graph alive.
    """

    def __init__(self, maxsize: int = FUNCTIONS_KEPT):
        super().__init__()
        self.maxsize = int(maxsize)
        self.traced = 0  # functions traced into this cache so far (kept or since dropped)

    def get(self, key, default=None):
        if key in self:
            self.move_to_end(key)
            return self[key]
        return default

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.maxsize:
            self.popitem(last=False)


def compile_cached(cache: FunctionCache, key, body, signature, contexts=list):
    """``body`` compiled for ``signature`` by the backend, traced once and kept in ``cache`` under ``key``.

    The one compile-and-cache step of the package (explainers, metrics): compiled by
    :func:`keras_gradcam.core.backend.compile` (for TensorFlow a ``tf.function`` with a fixed input
    signature and autograph off, kept as its concrete function) under the process-wide
    :data:`~keras_gradcam.core.patching.TRACE_LOCK` (two threads' first calls trace once, one after
    the other) inside the context managers ``contexts()`` returns (the capture's interception),
    and kept in a bounded :class:`FunctionCache`. ``signature``: a list, or a callable giving it
    (made only when the function is traced).
    """
    with TRACE_LOCK:
        fn = cache.get(key)
        if fn is None:
            fn = backend.compile(body, signature() if callable(signature) else signature, contexts)
            cache[key] = fn
            cache.traced += 1
    return fn
