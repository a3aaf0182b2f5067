"""MkDocs hook: the figures of the segmentation and detection pages, made when the site is built.

* ``figures/segmentation.png``: a tiny fully convolutional segmenter trained on the masks of
  :mod:`keras_gradcam.datasets` shapes (background + one class per shape), explained with
  :class:`keras_gradcam.SegmentationTarget` over each image's predicted region of its class.
* ``figures/detection.png``: a tiny grid detector (each cell of an 8x8 grid predicts a class,
  background included, and a box) trained on boxes derived from the object masks of two-object
  images, explained with :class:`keras_gradcam.BoxTarget` for each object's ground-truth box.

``KG_DOCS_QUICK=1`` trains on a few images for one epoch and ``KG_DOCS_FIGURES=0`` puts grey
placeholders instead, as ``kg_docs.py`` does for the method figures.
"""

from __future__ import annotations

import io
import logging
import os
import time
import warnings

log = logging.getLogger("mkdocs.hooks.keras_gradcam_dense")

_FIGURES: dict[str, bytes] = {}
NAMES = ("figures/segmentation.png", "figures/detection.png")
GRID = 8  # the detector's cells per side


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _quick() -> bool:
    return os.environ.get("KG_DOCS_QUICK", "") not in ("", "0")


# -- segmentation ---------------------------------------------------------------------------------
def train_segmenter(quick: bool):
    """A tiny encoder-decoder trained on per-pixel labels: 0 background, 1 + k an object of class k."""
    import keras
    import numpy as np

    from keras_gradcam import datasets

    n, size, epochs = (64, 32, 1) if quick else (800, 48, 12)
    data = datasets.make_shapes(n=n, image_size=size, seed=0)
    labels = np.where(data.masks, data.labels[:, None, None] + 1, 0).astype("int32")
    inputs = keras.Input((size, size, 3))
    x = inputs
    for filters in (16, 32, 48):  # full size, 1/2, 1/4
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.BatchNormalization()(x)
        x = skip = x if filters == 48 else keras.layers.MaxPooling2D()(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(x)  # 1/8: the context of a whole shape
    # image-level features, as DeepLab's pyramid pooling has: which shape is in the image
    pooled = keras.layers.Dense(32, activation="relu")(keras.layers.GlobalAveragePooling2D(keepdims=True)(x))
    x = keras.layers.Concatenate()([x, keras.layers.UpSampling2D(size // 8)(pooled)])
    x = keras.layers.UpSampling2D(2, interpolation="bilinear")(x)
    x = keras.layers.Concatenate()([x, skip])  # back at 1/4, with the encoder's features there
    x = keras.layers.Conv2D(48, 3, padding="same", activation="relu", name="features")(x)
    x = keras.layers.UpSampling2D(4, interpolation="bilinear")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    outputs = keras.layers.Conv2D(data.num_classes + 1, 1, activation="softmax", name="segmentation")(x)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    weights = np.where(labels > 0, 4.0, 1.0).astype("float32")  # objects are a small part of each image
    model.fit(data.images, labels, sample_weight=weights, epochs=epochs, batch_size=32, verbose=0)
    return model, datasets.make_shapes(n=30, image_size=size, seed=1)


def segmentation_figure(quick: bool) -> bytes:
    import matplotlib.pyplot as plt

    import keras_gradcam as kg
    from keras_gradcam import datasets

    model, held_out = train_segmenter(quick)
    probes = held_out[datasets.make_probe_set(held_out, per_class=1)]
    predicted = model.predict(probes.images, verbose=0).argmax(-1)
    fig, axes = plt.subplots(len(probes), 4, figsize=(7.2, 1.9 * len(probes)), squeeze=False)
    for i in range(len(probes)):
        category = int(probes.labels[i]) + 1
        name = probes.class_names[probes.labels[i]]
        region = kg.explain(model, probes.images[i : i + 1], method="gradcam", layer="features",
                            targets=kg.SegmentationTarget(category))
        others = (predicted[i] != category) & (predicted[i] != 0)  # pixels of a wrongly predicted class
        panels = [
            (probes.images[i], "image"),
            (predicted[i] == category, f"predicted {name}" + (f" ({others.mean():.0%} other)" if others.any() else "")),
            (kg.overlay(probes.images[i], region.heatmaps[0]), f"Grad-CAM: {name}\nover its region ({region.scores[0]:.0f})"),
            (probes.masks[i], "true mask"),
        ]
        for ax, (picture, title) in zip(axes[i], panels):
            ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.suptitle("SegmentationTarget(class) on a tiny segmenter (layer 'features', quarter resolution)", fontsize=9)
    fig.tight_layout()
    return _png(fig)


# -- detection ------------------------------------------------------------------------------------
def detector_targets(data, size: int):
    """Per cell of the grid: the class (0 .. K-1, or K for background) and the box of the object whose
    box centre falls in the cell, encoded as the centre's place in the cell (dy, dx in [0, 1]) and
    the box's height and width over the image's (boxes are the bounding boxes of the object masks)."""
    import numpy as np

    k, cell = data.num_classes, size / GRID
    cls = np.full((len(data), GRID, GRID), k, "int32")
    code = np.zeros((len(data), GRID, GRID, 4), "float32")
    for i in range(len(data)):
        for j in np.flatnonzero(data.object_labels[i] >= 0):
            ys, xs = np.nonzero(data.object_masks[i, j])
            y1, x1, y2, x2 = ys.min(), xs.min(), ys.max() + 1, xs.max() + 1
            cy, cx = (y1 + y2) / 2 / cell, (x1 + x2) / 2 / cell
            r, c = int(cy), int(cx)
            cls[i, r, c] = data.object_labels[i, j]
            code[i, r, c] = [cy - r, cx - c, (y2 - y1) / size, (x2 - x1) / size]
    return cls.reshape(len(data), -1), code.reshape(len(data), -1, 4)


def grid_boxes(size: int):
    """The detector's adapter: its outputs as (boxes (N, 64, 4) in pixels, y1 x1 y2 x2; class logits).

    Each cell's code (dy, dx, h, w) is decoded from the cell's corner, in differentiable ops."""
    import numpy as np
    import tensorflow as tf

    cell = size / GRID
    rows, cols = np.meshgrid(np.arange(GRID), np.arange(GRID), indexing="ij")
    corners = tf.constant(np.stack([rows.ravel(), cols.ravel()], -1).astype("float32"))  # (64, 2)

    def detections(outputs):
        code = outputs["boxes"]
        centre = (corners + code[..., :2]) * cell
        half = code[..., 2:] * size / 2
        return tf.concat([centre - half, centre + half], axis=-1), outputs["logits"]

    return detections


def train_detector(quick: bool):
    """A tiny one-stage grid detector: outputs {"boxes": (N, 64, 4) box codes, "logits": (N, 64, K + 1)}."""
    import keras

    from keras_gradcam import datasets

    n, size, epochs = (64, 64, 1) if quick else (1200, 64, 20)
    kwargs = dict(image_size=size, n_objects=(1, 2), same_class=False, size_range=(0.25, 0.4))
    data = datasets.make_shapes(n=n, seed=0, **kwargs)
    cls, box = detector_targets(data, size)
    inputs = keras.Input((size, size, 3))
    x = inputs
    for filters in (16, 32, 48):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.MaxPooling2D()(x)  # 64 -> 8: one cell per 8x8 pixels
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="features")(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    logits = keras.layers.Reshape((GRID * GRID, data.num_classes + 1), name="logits")(
        keras.layers.Conv2D(data.num_classes + 1, 1)(x))
    boxes = keras.layers.Reshape((GRID * GRID, 4), name="box_codes")(keras.layers.Conv2D(4, 1, activation="sigmoid")(x))
    model = keras.Model(inputs, {"logits": logits, "boxes": boxes})
    positive = (cls < data.num_classes).astype("float32")
    model.compile(keras.optimizers.Adam(2e-3),
                  loss={"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True), "boxes": "mae"},
                  loss_weights={"logits": 1.0, "boxes": 20.0})
    # the few cells with an object count more in the class loss; only they have a box to learn
    model.fit(data.images, {"logits": cls, "boxes": box}, sample_weight={"logits": 1.0 + 9.0 * positive, "boxes": positive},
              epochs=epochs, batch_size=32, verbose=0)
    held_out = datasets.make_shapes(n=40, seed=1, **kwargs)
    return model, held_out, size


def detection_figure(quick: bool) -> bytes:
    import matplotlib.patches as patches
    import matplotlib.pyplot as plt
    import numpy as np

    import keras_gradcam as kg

    model, held_out, size = train_detector(quick)
    two = np.flatnonzero(held_out.object_counts == 2)[:3]
    detections = grid_boxes(size)  # one adapter for all the targets
    fig, axes = plt.subplots(len(two), 3, figsize=(6.4, 2.2 * len(two)), squeeze=False)
    for row, i in enumerate(two):
        image = held_out.images[i : i + 1]
        axes[row, 0].imshow(image[0])
        axes[row, 0].set_title("image, true boxes", fontsize=8)
        for col, j in enumerate((0, 1)):
            ys, xs = np.nonzero(held_out.object_masks[i, j])
            box = [ys.min(), xs.min(), ys.max() + 1, xs.max() + 1]
            category = int(held_out.object_labels[i, j])
            target = kg.BoxTarget(box, category, detections=detections, iou_threshold=0.3)
            score, iou, _, matched = (t.numpy()[0] for t in target.match(model(image, training=False)))
            exp = kg.explain(model, image, method="layercam", layer="features", targets=target)
            ax = axes[row, col + 1]
            ax.imshow(kg.overlay(image[0], exp.heatmaps[0]))
            name = held_out.class_names[category]
            ax.set_title(f"BoxTarget({name})\n" + (f"logit {score:.1f}, IoU {iou:.2f}" if matched else "no match"), fontsize=8)
            for a, colour in ((axes[row, 0], "white"), (ax, "white")):
                a.add_patch(patches.Rectangle((box[1] - 0.5, box[0] - 0.5), box[3] - box[1], box[2] - box[0],
                                              fill=False, edgecolor=colour, linewidth=1))
        for ax in axes[row]:
            ax.axis("off")
    fig.suptitle("BoxTarget on a tiny grid detector, one box at a time (LayerCAM, layer 'features', 8x8)", fontsize=9)
    fig.tight_layout()
    return _png(fig)


# -- the hook -------------------------------------------------------------------------------------
def make_figures() -> dict[str, bytes]:
    if _FIGURES:
        return _FIGURES
    if os.environ.get("KG_DOCS_FIGURES", "1") == "0":
        import numpy as np

        from keras_gradcam.io import encode_png

        blank = encode_png(np.full((8, 8, 3), 200, "uint8"))
        return _FIGURES.update(dict.fromkeys(NAMES, blank)) or _FIGURES
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import matplotlib

    matplotlib.use("Agg")
    start = time.perf_counter()
    with warnings.catch_warnings():
        if _quick():  # a model trained on 64 images for one epoch has empty maps and no matches: expected
            warnings.simplefilter("ignore", RuntimeWarning)
        keras.utils.set_random_seed(0)
        _FIGURES["figures/segmentation.png"] = segmentation_figure(_quick())
        keras.utils.set_random_seed(0)
        _FIGURES["figures/detection.png"] = detection_figure(_quick())
    log.info("keras-gradcam: dense-prediction figures in %.0f s", time.perf_counter() - start)
    return _FIGURES


def on_files(files, config, **kwargs):
    from mkdocs.structure.files import File

    for uri, data in make_figures().items():
        files.append(File.generated(config, uri, content=data))
    return files
