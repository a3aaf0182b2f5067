"""Thread-aware patching of the user's objects while a function is traced.

Tracing replaces a few callable attributes of the user's layers (a layer's ``call`` to record its
output, a head's activation to explain logits); every explainer of a model shares those layers.
:func:`thread_patches` makes each replacement act only in the tracing thread and restores every
attribute in ``finally``. It lives below :mod:`keras_gradcam.core.layers`, whose one-off probe of
the layers inside a subclassed layer records their output shapes the same way.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

__all__ = ["TRACE_LOCK", "capturing", "thread_patches"]

# Tracing patches attributes of the user's layers, which every explainer of that model shares:
# one trace at a time, process-wide. The patches act only in the tracing thread (``_tracing``), so
# another thread calling the same model meanwhile runs it unchanged.
TRACE_LOCK = threading.RLock()
_tracing = threading.local()


def capturing(capture) -> bool:
    """Whether ``capture`` is tracing in this thread (several can be, nested: Ablation-CAM's head)."""
    return any(c is capture for c in getattr(_tracing, "captures", ()))


@contextlib.contextmanager
def thread_patches(edits):
    """Replace callable attributes of the user's objects while the block runs, in this thread only.

    ``edits`` holds ``(object, attribute, replacement)`` triples. Each attribute becomes a switch
    that calls the replacement in the thread inside the block and the original anywhere else, so
    another thread calling the same model meanwhile runs it unchanged. The block holds
    :data:`TRACE_LOCK` (one trace at a time, process-wide), and every attribute is restored in
    ``finally``, also when the block raises.
    """
    token = object()
    touched = []  # (object, attribute, had_instance_attr, old_value)
    with TRACE_LOCK:
        _tracing.captures = getattr(_tracing, "captures", ()) + (token,)
        try:
            for obj, name, replacement in edits:
                original = getattr(obj, name)
                touched.append((obj, name, name in obj.__dict__, obj.__dict__.get(name)))
                object.__setattr__(obj, name, _switch(replacement, original, token))
            yield
        finally:
            _tracing.captures = tuple(c for c in _tracing.captures if c is not token)
            for obj, name, had, old in reversed(touched):
                if had:
                    object.__setattr__(obj, name, old)
                else:
                    object.__delattr__(obj, name)


def _switch(replacement: Callable, original: Callable, token) -> Callable:
    def switched(*args, **kwargs):
        return (replacement if capturing(token) else original)(*args, **kwargs)

    return switched
