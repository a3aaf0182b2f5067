"""Grad-CAM on a small vision transformer trained on synthetic shapes.

A ViT in plain functional Keras (patch embedding, a class token, learned position embeddings,
pre-norm transformer blocks, a final LayerNorm and a head on the class token) learns
``keras_gradcam.datasets`` shapes for about a minute. ``kg.explain`` with ``layer=None`` finds the
token layer to explain and its 8x8 patch grid by itself; since the shapes' masks are known, the
share of the map's energy inside the object says whether it points at the object, compared with
the object's share of the image (what a map spread evenly would score).

    python examples/vision_transformer.py [--quick] [--epochs 20] [--out outputs/vision_transformer.png]

``build_vit`` and ``train`` are also used by ``benchmarks/vit_layers.py`` (which layer localises
best) and by the docs build's figure (docs/transformers.md).
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import keras_gradcam as kg  # noqa: E402
from keras_gradcam import datasets, metrics  # noqa: E402


class ClassToken(keras.layers.Layer):
    """Prepend one learned token to ``(batch, tokens, channels)``: ``(batch, 1 + tokens, channels)``."""

    def build(self, shape):
        self.token = self.add_weight(shape=(1, 1, shape[-1]), initializer="zeros", name="token")

    def call(self, x):
        batch = keras.ops.shape(x)[0]
        return keras.ops.concatenate([keras.ops.tile(self.token, (batch, 1, 1)), x], axis=1)


class PositionEmbedding(keras.layers.Layer):
    """Add a learned embedding per position: per token of ``(batch, tokens, channels)``, per cell of a map."""

    def build(self, shape):
        init = keras.initializers.RandomNormal(stddev=0.02)
        self.position = self.add_weight(shape=(1,) + tuple(shape[1:]), initializer=init, name="position")

    def call(self, x):
        return x + self.position


def build_vit(image_size: int = 32, patch: int = 4, dim: int = 64, depth: int = 3, heads: int = 4,
              classes: int = 3, head: str = "cls") -> keras.Model:
    """A pre-norm ViT; ``head="cls"`` reads the class token, ``head="mean"`` averages the patch tokens.

    Layer names: ``patch_embed`` (Conv2D, kernel = strides = ``patch``), ``with_cls``, ``pos_embed``;
    block ``i`` (from 1): ``block{i}_norm1`` -> ``block{i}_attn`` -> ``block{i}_add1`` ->
    ``block{i}_norm2`` -> ``block{i}_mlp1`` / ``block{i}_mlp2`` -> ``block{i}_out``; then
    ``final_norm`` and ``logits``.
    """
    grid = image_size // patch
    image = keras.Input((image_size, image_size, 3))
    x = keras.layers.Conv2D(dim, patch, strides=patch, name="patch_embed")(image)
    x = keras.layers.Reshape((grid * grid, dim), name="patches")(x)
    x = ClassToken(name="with_cls")(x)
    x = PositionEmbedding(name="pos_embed")(x)
    for i in range(1, depth + 1):
        y = keras.layers.LayerNormalization(epsilon=1e-6, name=f"block{i}_norm1")(x)
        y = keras.layers.MultiHeadAttention(heads, dim // heads, name=f"block{i}_attn")(y, y)
        x = keras.layers.Add(name=f"block{i}_add1")([x, y])
        y = keras.layers.LayerNormalization(epsilon=1e-6, name=f"block{i}_norm2")(x)
        y = keras.layers.Dense(2 * dim, activation="gelu", name=f"block{i}_mlp1")(y)
        y = keras.layers.Dense(dim, name=f"block{i}_mlp2")(y)
        x = keras.layers.Add(name=f"block{i}_out")([x, y])
    x = keras.layers.LayerNormalization(epsilon=1e-6, name="final_norm")(x)
    if head == "cls":
        pooled = keras.layers.Lambda(lambda t: t[:, 0], name="class_token")(x)
    elif head == "mean":
        pooled = keras.layers.GlobalAveragePooling1D(name="mean_pool")(keras.layers.Lambda(lambda t: t[:, 1:], name="patch_tokens")(x))
    else:
        raise ValueError(f"head must be 'cls' or 'mean', got {head!r}")
    logits = keras.layers.Dense(classes, name="logits")(pooled)
    return keras.Model(image, logits, name=f"vit_{head}")


class WindowAttention(keras.layers.Layer):
    """Self-attention inside non-overlapping ``window`` x ``window`` windows of a ``(batch, rows, cols, channels)`` map.

    As in Swin, ``shift`` rolls the map by that many cells first (and back after), so the next
    block's windows straddle the previous ones. Simplified: no attention mask, so a shifted
    window at the border mixes cells from the opposite border.
    """

    def __init__(self, heads: int, window: int, shift: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.heads, self.window, self.shift = heads, window, shift

    def build(self, shape):
        channels, cells = shape[-1], self.window * self.window
        self.attn = keras.layers.MultiHeadAttention(self.heads, channels // self.heads, name="attn")
        self.attn.build((None, cells, channels), (None, cells, channels))

    def call(self, x):
        _, rows, cols, channels = x.shape
        w, s = self.window, self.shift
        if s:
            x = keras.ops.roll(x, (-s, -s), axis=(1, 2))
        t = keras.ops.reshape(x, (-1, rows // w, w, cols // w, w, channels))
        t = keras.ops.reshape(keras.ops.transpose(t, (0, 1, 3, 2, 4, 5)), (-1, w * w, channels))
        t = self.attn(t, t)
        t = keras.ops.reshape(t, (-1, rows // w, cols // w, w, w, channels))
        y = keras.ops.reshape(keras.ops.transpose(t, (0, 1, 3, 2, 4, 5)), (-1, rows, cols, channels))
        return keras.ops.roll(y, (s, s), axis=(1, 2)) if s else y


def build_swin(image_size: int = 32, patch: int = 2, dim: int = 32, depths=(2, 2), heads=(2, 4), window: int = 4,
               classes: int = 3) -> keras.Model:
    """A small Swin-style model whose stages are maps ``(batch, rows, cols, channels)``, not token sequences.

    ``patch_embed`` (Conv2D, kernel = strides = ``patch``), ``pos_embed``; stage ``s`` (from 1): blocks of
    ``stage{s}_block{b}_norm1`` -> ``WindowAttention`` (shifted every second block) -> add ->
    ``norm2`` -> MLP -> ``stage{s}_block{b}_out``, then a patch merging (LayerNorm and a 2x2
    stride-2 Conv2D, ``stage{s}_merge``: half the grid, twice the channels) between stages;
    ``final_norm``, global average pooling, ``logits``.
    """
    image = keras.Input((image_size, image_size, 3))
    x = keras.layers.Conv2D(dim, patch, strides=patch, name="patch_embed")(image)
    x = PositionEmbedding(name="pos_embed")(x)  # Swin's relative position bias, simplified to an absolute one
    for s, (depth, n_heads) in enumerate(zip(depths, heads), start=1):
        if s > 1:
            x = keras.layers.LayerNormalization(epsilon=1e-5, name=f"stage{s}_merge_norm")(x)
            x = keras.layers.Conv2D(2 * x.shape[-1], 2, strides=2, name=f"stage{s}_merge")(x)
        channels = x.shape[-1]
        for b in range(1, depth + 1):
            name = f"stage{s}_block{b}"
            y = keras.layers.LayerNormalization(epsilon=1e-5, name=f"{name}_norm1")(x)
            y = WindowAttention(n_heads, window, shift=window // 2 if b % 2 == 0 else 0, name=f"{name}_attn")(y)
            x = keras.layers.Add(name=f"{name}_add1")([x, y])
            y = keras.layers.LayerNormalization(epsilon=1e-5, name=f"{name}_norm2")(x)
            y = keras.layers.Dense(2 * channels, activation="gelu", name=f"{name}_mlp1")(y)
            y = keras.layers.Dense(channels, name=f"{name}_mlp2")(y)
            x = keras.layers.Add(name=f"{name}_out")([x, y])
    x = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")(x)
    logits = keras.layers.Dense(classes, name="logits")(keras.layers.GlobalAveragePooling2D(name="pool")(x))
    return keras.Model(image, logits, name="swin")


class _TimeLimit(keras.callbacks.Callback):
    def __init__(self, seconds: float):
        super().__init__()
        self.seconds, self.start = seconds, None

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if time.perf_counter() - self.start > self.seconds:
            self.model.stop_training = True


def train(model: keras.Model, data, epochs: int = 20, seconds: float | None = None, lr: float = 1e-3) -> int:
    """Fit ``model`` on ``data`` (a SyntheticShapes) for ``epochs``, or until ``seconds`` have passed.

    20 epochs of 2400 32x32 images take about a minute for ``build_vit()`` on two idle CPU cores.
    Returns the number of epochs run.
    """
    model.compile(keras.optimizers.AdamW(lr, weight_decay=1e-4),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    limit = [_TimeLimit(seconds)] if seconds else []
    history = model.fit(data.images, data.labels, epochs=epochs, batch_size=64, verbose=0, callbacks=limit)
    return len(history.history["loss"])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, for the test suite")
    p.add_argument("--epochs", type=int, default=20, help="training epochs (default 20: about a minute)")
    p.add_argument("--out", default="outputs/vision_transformer.png")
    args = p.parse_args(argv)
    n, n_test, epochs, depth = (128, 24, 2, 1) if args.quick else (2400, 300, args.epochs, 3)

    keras.utils.set_random_seed(0)
    data = datasets.make_shapes(n=n, image_size=32, seed=0)
    test = datasets.make_shapes(n=n_test, image_size=32, seed=1)
    model = build_vit(depth=depth, classes=data.num_classes)
    train(model, data, epochs)
    accuracy = float(model.evaluate(test.images, test.labels, verbose=0)[1])
    print(f"{epochs} epochs, held-out accuracy {accuracy:.2f}")

    uniform = float(test.masks.mean())  # a map spread evenly over the image scores the object's area share
    report, shown = {"accuracy": accuracy, "uniform": uniform}, {}
    show = datasets.make_probe_set(test, per_class=1)  # one image per class for the figure
    for method in ("gradcam", "gradcam++"):
        with warnings.catch_warnings():  # all-zero maps are counted and left out of the share below
            warnings.simplefilter("ignore", RuntimeWarning)
            exp = kg.explain(model, test.images, method=method, targets=test.labels)  # layer=None
        heat = exp.heatmaps
        zero = heat.reshape(len(heat), -1).max(axis=1) <= 0  # no positive evidence anywhere
        share = float(metrics.energy_pointing_game(heat[~zero], test.masks[~zero])) if (~zero).any() else 0.0
        report[method], shown[method] = share, exp[show]
        print(f"{method:9s} at layer {exp.layer!r} (grid {exp.layer_heatmaps.shape[1:]}): "
              f"{share:.0%} of the energy inside the objects, uniform {uniform:.0%} "
              f"({zero.sum()} of {len(zero)} maps all zero, left out)")
    report["layer"] = exp.layer

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = kg.plot(shown, test.images[show], labels=test.labels[show], class_names=test.class_names,
                  show=("image", "overlay"))
    fig.suptitle(f"layer=None ({exp.layer!r}) of a small ViT", fontsize=9)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    fig.savefig(args.out, dpi=100)
    plt.close(fig)
    print(f"wrote {os.path.abspath(args.out)}")
    report["figure"] = args.out
    return report


if __name__ == "__main__":
    main()
