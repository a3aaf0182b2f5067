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


def vit_model(
    *,
    image: int = 16,
    patch: int = 4,
    channels: int = 3,
    dim: int = 8,
    depth: int = 2,
    heads: int = 2,
    mlp: int = 16,
    classes: int = 3,
    seed: int = 0,
) -> keras.Model:
    """A functional vision transformer from built-in layers only (it saves and loads as ``.keras``).

    Conv2D patch embedding "patch" (kernel = strides = ``patch``) -> Reshape "tokens" -> a learned
    class token prepended "with_cls" -> learned position embeddings added "embedded" -> ``depth``
    pre-norm blocks ``block{i}_...`` (LayerNormalization, MultiHeadAttention "block{i}_attn",
    residual Add "block{i}_mix"; LayerNormalization, Dense GELU MLP, residual Add "block{i}_out")
    -> LayerNormalization "final_norm" -> the class token -> Dense "logits". ViT-B/16 is
    ``image=224, patch=16, dim=768, depth=12, heads=12, mlp=3072, classes=1000``.

    The class token and the position embeddings are ``Embedding`` tables read with constant ids
    (computed from the tokens' shape), so no custom layer is needed. Weights are Keras' random
    initialisers, seeded by ``seed``.
    """
    keras.utils.set_random_seed(seed)
    grid = image // patch
    inp = keras.Input((image, image, channels))
    x = keras.layers.Conv2D(dim, patch, strides=patch, name="patch")(inp)
    x = keras.layers.Reshape((grid * grid, dim), name="tokens")(x)
    zero = keras.ops.zeros_like(keras.ops.cast(x[:, :1, 0], "int32"))  # (batch, 1) ids of the class token
    cls = keras.layers.Embedding(1, dim, name="cls_token")(zero)
    x = keras.layers.Concatenate(axis=1, name="with_cls")([cls, x])
    positions = keras.ops.cumsum(keras.ops.ones_like(keras.ops.cast(x[:, :, 0], "int32")), axis=1) - 1
    x = keras.layers.Add(name="embedded")([x, keras.layers.Embedding(grid * grid + 1, dim, name="positions")(positions)])
    for i in range(depth):
        h = keras.layers.LayerNormalization(epsilon=1e-6, name=f"block{i}_norm1")(x)
        h = keras.layers.MultiHeadAttention(heads, dim // heads, name=f"block{i}_attn")(h, h)
        x = keras.layers.Add(name=f"block{i}_mix")([x, h])
        h = keras.layers.LayerNormalization(epsilon=1e-6, name=f"block{i}_norm2")(x)
        h = keras.layers.Dense(mlp, activation="gelu", name=f"block{i}_mlp1")(h)
        h = keras.layers.Dense(dim, name=f"block{i}_mlp2")(h)
        x = keras.layers.Add(name=f"block{i}_out")([x, h])
    x = keras.layers.LayerNormalization(epsilon=1e-6, name="final_norm")(x)
    return keras.Model(inp, keras.layers.Dense(classes, name="logits")(x[:, 0]), name="vit")


# -- the hand-set token model (tests/test_token_layers.py, tests/test_token_methods.py) --------------

CLS = np.array([5.0, -3.0], np.float32)  # the class token: large, so a grid that kept it would show it
HEAD = np.array([[1.0, -1.0], [2.0, 0.5]], np.float32)  # (channels, classes)


class ClassToken(keras.layers.Layer):
    """Prepend a constant class token to (batch, tokens, channels)."""

    def __init__(self, value, **kwargs):
        super().__init__(**kwargs)
        self.value = np.asarray(value, np.float32)

    def call(self, x):
        token = keras.ops.broadcast_to(keras.ops.convert_to_tensor(self.value)[None, None], (keras.ops.shape(x)[0], 1, 2))
        return keras.ops.concatenate([token, x], axis=1)


def token_model(head="mean", attention_scale=0.0, seed=5):
    """8x8x1 -> Conv2D(2, 4, stride 4) "patch" -> 4 tokens "tokens" -> class token "with_cls" -> MHA "attn"
    -> Add "block" -> head: the mean over all 5 tokens ("mean") or the class token ("cls") -> Dense "logits".

    The patch embedding's channel 0 is the patch's pixel sum, channel 1 its first row's sum.
    ``attention_scale`` scales the attention's seeded output projection (0: the block is the identity).
    """
    inp = keras.Input((8, 8, 1))
    conv = keras.layers.Conv2D(2, 4, strides=4, name="patch")
    x = keras.layers.Reshape((4, 2), name="tokens")(conv(inp))
    x = ClassToken(CLS, name="with_cls")(x)
    attn = keras.layers.MultiHeadAttention(num_heads=1, key_dim=2, name="attn")
    x = keras.layers.Add(name="block")([x, attn(x, x)])
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(x) if head == "mean" else x[:, 0]
    dense = keras.layers.Dense(2, name="logits")
    model = keras.Model(inp, dense(pooled))
    kernel = np.zeros((4, 4, 1, 2), np.float32)
    kernel[..., 0, 0] = 1.0
    kernel[0, :, 0, 1] = 1.0
    conv.set_weights([kernel, np.zeros(2, np.float32)])
    rng = np.random.default_rng(seed)
    weights = [rng.normal(size=w.shape).astype(np.float32) * 0.5 for w in attn.get_weights()]
    weights[-2] *= attention_scale  # output projection kernel
    weights[-1] *= attention_scale
    attn.set_weights(weights)
    dense.set_weights([HEAD, np.zeros(2, np.float32)])
    return model


def patch_embedding(images):
    """The patch Conv2D in numpy: (n, 2, 2, 2), channel 0 the 4x4 patch's sum, channel 1 its first row's."""
    p = images[..., 0].reshape(len(images), 2, 4, 2, 4).transpose(0, 1, 3, 2, 4)  # (n, row, col, 4, 4)
    return np.stack([p.sum(axis=(3, 4)), p[:, :, :, 0, :].sum(axis=-1)], axis=-1)


def images_with_bright_patch(row, col, n=2, seed=1):
    x = np.random.default_rng(seed).random((n, 8, 8, 1)).astype(np.float32) * 0.1
    x[:, 4 * row : 4 * row + 4, 4 * col : 4 * col + 4] += 1.0
    return x


def audit_cnn(size: int, k: int) -> keras.Model:
    """The small CNN the audit is checked on: two conv blocks with batch norm, "last_conv", GAP, softmax.

    ``tests/test_audit.py`` trains it on each cue, and ``benchmarks/audit_cues.py`` makes
    docs/audit.md's table with the same model.
    """
    inputs = keras.Input((size, size, 3))
    x = inputs
    for f in (16, 32):
        x = keras.layers.Conv2D(f, 3, padding="same", activation="relu")(x)
        x = keras.layers.BatchNormalization(momentum=0.9)(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="last_conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(k, activation="softmax")(x))


def trained_audit_cnn(images, labels, epochs: int = 4) -> keras.Model:
    """:func:`audit_cnn` for 3 classes trained on ``images`` (seed 0, Adam 3e-3, batch 32)."""
    keras.utils.set_random_seed(0)
    model = audit_cnn(images.shape[1], 3)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(images, labels, epochs=epochs, batch_size=32, verbose=0)
    return model


def shortcut_cnn(size: int, classes: int) -> keras.Model:
    """The small CNN guided training is checked on: three conv blocks (8, 16, 32 filters, batch norm), "last_conv", GAP,
    softmax.

    ``tests/test_guided_training_shortcuts.py`` trains it on each shortcut, and
    ``benchmarks/guided_robustness.py`` makes docs/guided-training.md's robustness table with the same model.
    """
    inputs = keras.Input((size, size, 3))
    x = inputs
    for i, filters in enumerate((8, 16, 32), start=1):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(momentum=0.9)(x)
        if i < 3:
            x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="last_conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(x))
