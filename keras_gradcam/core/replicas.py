"""One pass split across devices: each device explains its share of the batch, in one graph.

Under a ``tf.distribute`` strategy (``MirroredStrategy`` on a machine's GPUs, each worker's
devices under ``MultiWorkerMirroredStrategy``) every pass of an explainer is cut into one share
per device, each share is explained under ``tf.device(device)`` inside the same compiled
function, and the outputs are joined back in the original order. A model created in
``strategy.scope()`` holds one copy of each weight per device (``MirroredVariable``); reading it
under ``tf.device(device)`` reads that device's copy, so no weight crosses devices.

Why not ``strategy.run``: ``MirroredStrategy`` calls the replica function in one Python thread per
device, while the capture's tracing-time interception acts in the tracing thread only (see
:func:`keras_gradcam.core.capture.thread_patches`); explaining needs no cross-replica reduction
(every sample's map depends on that sample alone), so the shares are placed directly, which is
what ``strategy.run`` does inside a ``tf.function``, without its threads.

:class:`Compiled` (from :mod:`keras_gradcam.core.backend`) is what
:func:`keras_gradcam.core.cache.compile_cached` keeps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tensorflow as tf

from .backend import Compiled
from .targets import TargetBatch

__all__ = ["Compiled", "split_across", "split_body"]


def _padded(x: tf.Tensor, parts: int) -> tf.Tensor:
    """``x`` with its last row repeated until its length is a multiple of ``parts``."""
    n = tf.shape(x)[0]
    pad = (parts - n % parts) % parts
    index = tf.concat([tf.range(n), tf.fill([pad], tf.maximum(n - 1, 0))], axis=0)
    return tf.gather(x, index)


def split_across(devices: Sequence[str], body: Callable, x, targets: TargetBatch):
    """``body(x, targets)`` computed as one share of the batch per device, outputs joined in order.

    Parameters
    ----------
    devices : sequence of str
        Device names (``strategy.extended.worker_devices``).
    body : callable
        ``(inputs, targets) -> tuple of (B, ...) tensors``, every output one row per sample.
    x : tensor or structure of tensors of shape (B, ...)
    targets : TargetBatch
        The target with its rows ``(B, ...)`` (cut into the shares) and shared data (whole).

    Returns
    -------
    tuple of tensors
        What ``body`` gives for the whole batch: the batch is padded (its last sample repeated) to
        a multiple of ``len(devices)``, each device gets ``ceil(B / len(devices))`` samples, and
        the padding is dropped from the joined outputs.
    """
    parts = len(devices)
    n = tf.shape(tf.nest.flatten(x)[0])[0]
    xs = [tf.split(_padded(a, parts), parts) for a in tf.nest.flatten(x)]
    rows = {k: tf.split(_padded(r, parts), parts) for k, r in targets.rows.items()}
    outputs = []
    for i, device in enumerate(devices):
        with tf.device(device):
            share = tf.nest.pack_sequence_as(x, [pieces[i] for pieces in xs])
            share_targets = TargetBatch(targets.target, {k: r[i] for k, r in rows.items()}, targets.shared)
            outputs.append(tuple(body(share, share_targets)))
    return tuple(tf.concat(list(column), axis=0)[:n] for column in zip(*outputs))


def split_body(devices: tuple, body):
    """``body(xb, targets)`` computed as one share of the batch per device (see :func:`split_across`)."""
    return lambda xb, targets: split_across(devices, body, xb, targets)
