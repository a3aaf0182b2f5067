"""Tiny Keras models with hand-set weights, shared by the test files.

Kept out of ``conftest.py`` because pytest advises against importing a conftest; the fixtures
there build on these. Each test file keeps its own weights (its hand-computed expectations follow
from them); what is shared is the architecture.
"""

from __future__ import annotations

import keras
import numpy as np


def conv_gap_model(
    kernel,
    bias,
    head,
    head_bias,
    *,
    input_shape=None,
    conv_activation=None,
    pool=None,
    activation=None,
    head_name="head",
    gap_name=None,
    nested=False,
) -> keras.Model:
    """Input -> Conv2D("conv") [-> AveragePooling2D(pool, "pool")] -> GlobalAveragePooling2D -> Dense.

    The convolution's size and channels come from ``kernel`` (shape ``(k, k, in, K)``), the Dense's
    classes from ``head`` (shape ``(K, C)``). ``input_shape`` defaults to 6x6 with ``in`` channels.
    With ``nested``, the convolution and pooling sit in a Functional sub-model named "backbone".
    """
    kernel, head = np.asarray(kernel), np.asarray(head)
    size, _, channels_in, channels = kernel.shape
    inp = keras.Input(input_shape or (6, 6, channels_in))
    conv = keras.layers.Conv2D(channels, size, activation=conv_activation, name="conv")
    layers = [conv] + ([keras.layers.AveragePooling2D(pool, name="pool")] if pool else [])
    h = inp
    for layer in layers:
        h = layer(h)
    if nested:
        h = keras.Model(inp, h, name="backbone")(inp)
    h = keras.layers.GlobalAveragePooling2D(name=gap_name)(h)
    dense = keras.layers.Dense(head.shape[1], activation=activation, name=head_name)
    model = keras.Model(inp, dense(h))
    conv.set_weights([kernel, np.asarray(bias)])
    dense.set_weights([head, np.asarray(head_bias)])
    return model
