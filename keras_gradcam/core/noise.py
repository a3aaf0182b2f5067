"""Gaussian noise drawn from a seed pair: the same numbers on every run, on every machine.

SS-CAM and Smooth Grad-CAM++ document their draws as ``tf.random.stateless_normal`` of a seed
pair ``(seed, i)`` (the tests reproduce them), and ``keras.random`` has no stateless draw that
gives those numbers. This module is the one place the methods' maths reach TensorFlow for it: a
backend without TensorFlow needs its own stateless draw here (the numbers then differ).
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["stateless_normal", "stateless_normals"]


def stateless_normal(shape, seed: tuple[int, int], dtype="float32"):
    """Standard normal noise of ``shape`` from the seed pair ``seed`` (``tf.random.stateless_normal``)."""
    return tf.random.stateless_normal(tuple(shape), seed=list(seed), dtype=dtype)


def stateless_normals(shape, seed: int, ids):
    """One float32 draw of ``shape`` per entry ``i`` of the int tensor ``ids``, from the pair ``(seed, i)``: ``(len(ids), *shape)``."""
    first = tf.constant(seed, tf.int64)
    shape = tuple(shape)

    def draw(i):
        return tf.random.stateless_normal(shape, seed=tf.stack([first, tf.cast(i, tf.int64)]))

    return tf.map_fn(draw, ids, fn_output_signature=tf.TensorSpec(shape, tf.float32))
