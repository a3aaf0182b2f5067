"""Shared test fixtures and probes of what this machine's TensorFlow can run.

The shared pieces that test files import live beside this file, since pytest advises against
importing a conftest: ``models.py`` (the tiny models with hand-set weights) and ``oracles.py``
(the numpy references and the one assertion helper, ``close``).
"""

import functools

import pytest


@functools.cache
def channels_first_convolutions_run() -> bool:
    """Whether this device can run a ``channels_first`` (NCHW) convolution.

    On a CPU, TensorFlow runs NCHW convolutions only through its oneDNN kernels, which are on by
    default on some processors (e.g. with AVX-512) and off on others (AVX2 only).
    """
    import tensorflow as tf

    try:
        tf.nn.conv2d(tf.ones([1, 1, 3, 3]), tf.ones([2, 2, 1, 1]), strides=1, padding="VALID", data_format="NCHW").numpy()
        return True
    except (tf.errors.UnimplementedError, tf.errors.InvalidArgumentError, tf.errors.NotFoundError):
        return False


@pytest.fixture
def needs_channels_first():
    """Skip, with the reason, where this device cannot run channels_first convolutions."""
    if not channels_first_convolutions_run():
        pytest.skip(
            "this TensorFlow build cannot run channels_first (NCHW) convolutions on this CPU "
            "(its oneDNN kernels are off on this processor); the check runs wherever they can"
        )
