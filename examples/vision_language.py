"""Where a captioner's word and a VQA model's answer come from: two small vision-language models on shapes.

Each image holds two shapes of different classes (circle, square, triangle) whose masks are known.

- **A captioner** reads the image and its caption so far (teacher forcing) and predicts the next
  word: the caption names the shapes in class order, e.g. ``<start> circle triangle <end>``. The
  map of the word ``"circle"`` (``kg.TokenTarget(circle, position)``) should lie on the circle.
- **A VQA model** reads the image and a question id, "is there a <shape>?", and answers yes or no
  (a score per shape from the image, the question picking the asked one's).
  The map of the answer "yes" to "is there a square?" should lie on the square.

Both are trained here for a few epochs on the CPU. Over held-out images, the script measures the
share of the evidence inside the objects that lies on the object named by the word (or asked
about), against the other object, and how often the named object gets the larger share; it saves
a figure of a few examples.

    python examples/vision_language.py [--quick] [--out outputs/vision_language.png]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_gradcam as kg  # noqa: E402
from keras_gradcam import datasets  # noqa: E402

SHAPES = ("circle", "square", "triangle")
START, END = 3, 4  # token ids after the three shape words
VOCAB = ("circle", "square", "triangle", "<start>", "<end>")
SIZE = 32


def shapes_data(n: int, seed: int):
    """Images with two shapes of different classes, their classes (sorted) and one mask per object."""
    data = datasets.make_shapes(n, image_size=SIZE, classes=SHAPES, n_objects=2, same_class=False, seed=seed,
                                size_range=(0.35, 0.5), noise=0.03)
    order = np.argsort(data.object_labels, axis=1)  # class order: the caption's word order
    labels = np.take_along_axis(data.object_labels, order, axis=1)
    masks = np.take_along_axis(data.object_masks, order[:, :, None, None], axis=1)
    return data.images.astype("float32"), labels, masks


def trunk(images):
    x = images
    for filters in (16, 32):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.MaxPooling2D()(x)
    features = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="features")(x)  # 8x8
    return keras.layers.GlobalAveragePooling2D()(features)


# -- the captioner ----------------------------------------------------------------------------------
def captions(labels):
    """Token ids ``<start> a b`` (the input) and ``a b <end>`` (the words to predict)."""
    n = labels.shape[0]
    inputs = np.stack([np.full(n, START), labels[:, 0], labels[:, 1]], axis=1).astype("int32")
    targets = np.stack([labels[:, 0], labels[:, 1], np.full(n, END)], axis=1).astype("int32")
    return inputs, targets


def build_captioner() -> keras.Model:
    """logits[b, p] = f(image, token p): the next word after position p, (batch, 3, vocabulary)."""
    images = keras.Input((SIZE, SIZE, 3), name="images")
    tokens = keras.Input((3,), dtype="int32", name="token_ids")
    seen = keras.layers.RepeatVector(3)(trunk(images))
    words = keras.layers.Embedding(len(VOCAB), 16)(tokens)
    h = keras.layers.Dense(64, activation="relu")(keras.layers.Concatenate()([seen, words]))
    return keras.Model({"images": images, "token_ids": tokens}, keras.layers.Dense(len(VOCAB), name="logits")(h))


# -- the VQA model ----------------------------------------------------------------------------------
def questions(labels, rng):
    """One question per image, "is there a <shape>?", half of them about a shape that is there."""
    n = labels.shape[0]
    present = labels[np.arange(n), rng.integers(0, 2, n)]
    absent = 3 - labels.sum(axis=1)  # the one class not in the image (classes 0, 1, 2)
    ask_present = rng.random(n) < 0.5
    asked = np.where(ask_present, present, absent).astype("int32")
    return asked, ask_present.astype("int32")


def build_vqa() -> keras.Model:
    """A score per shape from the image; the question picks the asked shape's score: the logit of "yes"."""
    images = keras.Input((SIZE, SIZE, 3), name="images")
    question = keras.Input((), dtype="int32", name="question")
    asked = keras.layers.CategoryEncoding(len(SHAPES), output_mode="one_hot")(question)
    scores = keras.layers.Dense(len(SHAPES), name="shape_scores")(trunk(images))
    yes = keras.layers.Dot(axes=1)([scores, asked])
    no = keras.layers.Rescaling(-1.0)(yes)
    return keras.Model({"images": images, "question": question}, keras.layers.Concatenate(name="answer")([no, yes]))


def fit(model, x, y, epochs: int):
    keras.utils.set_random_seed(0)
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
    return model


# -- the measurement --------------------------------------------------------------------------------
def evidence_shares(heatmaps, named, other):
    """Per image, the share of the map's mass inside the two objects that lies on the named one."""
    on_named = (heatmaps * named).sum(axis=(1, 2))
    on_other = (heatmaps * other).sum(axis=(1, 2))
    total = on_named + on_other
    return np.where(total > 0, on_named / np.where(total > 0, total, 1.0), 0.5)


def captioner_evidence(model, images, labels, masks):
    """Maps of the word ``"circle"`` on the images with a circle (then the caption's first word, predicted at 0)."""
    with_circle = labels[:, 0] == 0
    tokens, _ = captions(labels[with_circle])
    exp = kg.explain(model, {"images": images[with_circle], "token_ids": tokens}, method="gradcam", layer="features",
                     targets=kg.TokenTarget(SHAPES.index("circle"), 0))
    return exp, evidence_shares(exp.heatmaps, masks[with_circle, 0], masks[with_circle, 1])


def vqa_evidence(model, images, labels, masks):
    """Maps of the answer "yes" to "is there a <shape>?" for each shape in the image (both objects asked)."""
    heat, shares = [], []
    for k in (0, 1):
        asked = labels[:, k].astype("int32")
        exp = kg.explain(model, {"images": images, "question": asked}, method="gradcam", layer="features",
                         targets=kg.ClassTarget(1))
        heat.append(exp)
        shares.append(evidence_shares(exp.heatmaps, masks[:, k], masks[:, 1 - k]))
    return heat, np.concatenate(shares)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny run (checks that the script works)")
    parser.add_argument("--out", default="outputs/vision_language.png")
    args = parser.parse_args(argv)
    n_train, n_test, epochs = (128, 16, 1) if args.quick else (3000, 200, 12)

    images, labels, masks = shapes_data(n_train, seed=0)
    test_images, test_labels, test_masks = shapes_data(n_test, seed=1)
    rng = np.random.default_rng(0)

    captioner = fit(build_captioner(), {"images": images, "token_ids": captions(labels)[0]}, captions(labels)[1], epochs)
    cap_exp, cap_shares = captioner_evidence(captioner, test_images, test_labels, test_masks)
    predicted = np.asarray(captioner({"images": test_images, "token_ids": captions(test_labels)[0]})).argmax(-1)
    caption_accuracy = float((predicted == captions(test_labels)[1]).mean())

    asked, answers = questions(labels, rng)
    vqa = fit(build_vqa(), {"images": images, "question": asked}, answers, epochs)
    test_asked, test_answers = questions(test_labels, rng)
    vqa_accuracy = float((np.asarray(vqa({"images": test_images, "question": test_asked})).argmax(-1) == test_answers).mean())
    vqa_exps, vqa_shares = vqa_evidence(vqa, test_images, test_labels, test_masks)

    report = {
        "caption_word_accuracy": caption_accuracy,
        "captioner_share_on_named": float(cap_shares.mean()),
        "captioner_named_wins": float((cap_shares > 0.5).mean()),
        "vqa_accuracy": vqa_accuracy,
        "vqa_share_on_asked": float(vqa_shares.mean()),
        "vqa_asked_wins": float((vqa_shares > 0.5).mean()),
        "n_test": n_test,
        "n_circle": len(cap_shares),
    }
    print(f"captioner: word accuracy {caption_accuracy:.2f}; the evidence for the word 'circle' on the circle "
          f"{report['captioner_share_on_named']:.2f} of the in-object evidence (the circle larger in "
          f"{report['captioner_named_wins']:.0%} of {len(cap_shares)} held-out images with a circle)")
    print(f"VQA: answer accuracy {vqa_accuracy:.2f}; the evidence for 'yes' on the asked object "
          f"{report['vqa_share_on_asked']:.2f} of the in-object evidence (asked object larger in "
          f"{report['vqa_asked_wins']:.0%} of {2 * n_test} questions)")
    circle = test_labels[:, 0] == 0
    report["figure"] = figure(test_images[circle], test_labels[circle], cap_exp,
                              [e.heatmaps[circle] for e in vqa_exps], args.out)
    return report


def figure(images, labels, cap_exp, vqa_maps, out: str, count: int = 4) -> str:
    """Per image (with a circle): the image, the map of the word "circle", and the "yes" map for each asked shape."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = min(count, len(images))
    fig, axes = plt.subplots(count, 4, figsize=(8, 2.1 * count), squeeze=False)
    for i in range(count):
        a, b = (SHAPES[c] for c in labels[i])
        panels = [(images[i], "image"), (kg.overlay(images[i], cap_exp.heatmaps[i]), f"word {a!r}"),
                  (kg.overlay(images[i], vqa_maps[0][i]), f"is there a {a}? yes"),
                  (kg.overlay(images[i], vqa_maps[1][i]), f"is there a {b}? yes")]
        for ax, (picture, title) in zip(axes[i], panels):
            ax.imshow(np.clip(picture, 0, 255) if picture.dtype != np.float32 else np.clip(picture, 0, 1))
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


if __name__ == "__main__":
    main()
