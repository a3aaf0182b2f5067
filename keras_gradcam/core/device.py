"""Errors of a model that this device cannot run, said in words instead of as a TensorFlow trace."""

from __future__ import annotations

import tensorflow as tf

__all__ = ["DeviceError", "TARGET_ERROR", "device_errors"]

# the start of the message of a check of a target's data (a token id, a position) made while a compiled
# function runs (backend.on_host), said as a ValueError
TARGET_ERROR = "keras-gradcam target error: "


class DeviceError(RuntimeError):
    """The model cannot run on this device (an operation this TensorFlow build has no kernel for)."""


class device_errors:  # noqa: N801 - used as a context manager, like contextlib's
    """Turn TensorFlow's "no kernel on this device" errors into a :class:`DeviceError` that says why.

    A failed check of a target's data made while a compiled function ran (``backend.on_host``:
    its message starts with :data:`TARGET_ERROR`, wrapped in any backend's runtime error) becomes
    the ``ValueError`` it says.

    The common case: ``channels_first`` convolutions on a CPU, which TensorFlow runs only through
    its oneDNN kernels (on by default on some processors only).
    """

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if error is None:
            return False
        text = str(error)
        if TARGET_ERROR in text:  # a target's own check of its data, made on the host while a compiled function ran
            raise ValueError(text.split(TARGET_ERROR, 1)[1].splitlines()[0].strip()) from None
        if not isinstance(error, (tf.errors.UnimplementedError, tf.errors.InvalidArgumentError)):
            return False
        if "NHWC" in text or "NDHWC" in text or isinstance(error, tf.errors.UnimplementedError):
            first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
            hint = (
                " The model uses channels_first convolutions, which TensorFlow runs on a CPU only "
                "through its oneDNN kernels: set TF_ENABLE_ONEDNN_OPTS=1 before importing TensorFlow, "
                "run on a GPU, or build the model with data_format='channels_last'."
                if ("NHWC" in text or "NDHWC" in text)
                else ""
            )
            raise DeviceError(f"the model cannot run on this device: {first[:300]}.{hint}") from None
        return False
