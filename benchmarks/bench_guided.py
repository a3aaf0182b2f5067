"""Cost of a guided training step (double backprop) relative to a plain training step.

Same model, same batch; each step compiled once, then timed over repeated calls, in rounds that
alternate plain and guided (the fastest round of each is kept: on a shared machine other jobs
only ever slow a round down). Guided is timed with its defaults (the Grad-CAM term and the
composites) with 3 and with 32 annotated images of 32 (each annotated image adds a composite to
the forward pass), without the composites, and with the input-gradient map.
Run: python benchmarks/bench_guided.py
"""

from __future__ import annotations

import time

import keras
import numpy as np

import keras_gradcam as kg


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((64, 64, 3))
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="last_conv")(x)
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs)


def _compiled(trainer, x, y, masks=None):
    trainer.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    trainer.train_on_batch(x, y, sample_weight=masks)  # trace and compile once
    return trainer


def _time(trainer, x, y, masks=None, repeats=10) -> float:
    """Seconds per ``train_on_batch`` (its third element reaches ``GuidedTraining`` as the masks)."""
    start = time.perf_counter()
    for _ in range(repeats):
        trainer.train_on_batch(x, y, sample_weight=masks)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((32, 64, 64, 3)).astype("float32")
    y = rng.integers(0, 10, 32).astype("int32")
    masks = np.zeros((32, 64, 64), "float32")
    masks[:, 16:48, 16:48] = 1  # every image annotated: the most composites a batch can have
    tenth = masks.copy()
    tenth[3:] = 0  # 3 of 32 annotated: masks on 10 % of the data
    trainers = {
        "plain": (_compiled(_model(), x, y), None),
        "guided, defaults, 3 of 32 annotated": (_compiled(kg.GuidedTraining(_model()), x, y, tenth), tenth),
        "guided, defaults, 32 of 32 annotated": (_compiled(kg.GuidedTraining(_model()), x, y, masks), masks),
        "guided, counterfactual=False, 32 of 32": (
            _compiled(kg.GuidedTraining(_model(), counterfactual=False), x, y, masks), masks),
        "guided, method='input_gradient', 32 of 32": (
            _compiled(kg.GuidedTraining(_model(), method="input_gradient", counterfactual=False), x, y, masks), masks),
    }
    rounds = [{name: _time(t, x, y, m) for name, (t, m) in trainers.items()} for _ in range(5)]
    best = {name: min(r[name] for r in rounds) for name in trainers}
    print("batch 32, 64x64x3 CNN, fastest of 5 alternating rounds of 10 steps:")
    for name, seconds in best.items():
        print(f"{name:<44} {seconds * 1e3:7.1f} ms  {seconds / best['plain']:.2f}x a plain step")


if __name__ == "__main__":
    main()
