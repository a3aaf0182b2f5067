"""Grad-CAM on a Conv1D model: which moments of a time series decide the class.

Synthetic two-channel signals of noise and drift, in three classes: nothing happens (``quiet``),
a single bump (``spike``), or a short oscillation burst (``burst``) at a random moment. A small
Conv1D network learns them; Grad-CAM++ at its last convolution gives one weight per time step,
drawn by ``kg.plot`` as a coloured band behind the signal. Since the events' positions are
known, the share of the heatmap inside the event window measures whether the model looks at the
right moment.

    python examples/timeseries_conv1d.py [--quick] [--out outputs/timeseries_conv1d.png]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_gradcam as kg  # noqa: E402

CLASSES = ("quiet", "spike", "burst")


def make_signals(n: int, steps: int = 256, seed: int = 0):
    """Signals ``(n, steps, 2)``, labels ``(n,)`` and event windows ``(n, steps)`` (bool).

    Class 0 has no event (an empty window); class 1 a Gaussian bump on channel 0; class 2 a
    sine burst on channel 1. Noise and a slow random drift are on both channels.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(steps, dtype=np.float32)
    labels = rng.permutation(np.arange(n) % len(CLASSES))
    x = rng.normal(0.0, 0.3, (n, steps, 2)).astype(np.float32)
    x += (np.cumsum(rng.normal(0.0, 0.05, (n, steps, 2)), axis=1)).astype(np.float32)
    width = steps // 16
    centre = rng.integers(width * 2, steps - width * 2, n)
    windows = np.zeros((n, steps), bool)
    for i in range(n):
        c = centre[i]
        if labels[i] == 1:
            x[i, :, 0] += 2.0 * np.exp(-0.5 * ((t - c) / (width / 3)) ** 2)
        elif labels[i] == 2:
            env = np.exp(-0.5 * ((t - c) / (width / 2.5)) ** 2)
            x[i, :, 1] += 1.5 * env * np.sin(2 * np.pi * (t - c) / 6.0)
        if labels[i]:
            windows[i, c - width : c + width + 1] = True
    return x, labels.astype(np.int64), windows


def build_model(steps: int, channels: int) -> keras.Model:
    """Three Conv1D blocks, global average pooling, a softmax over the three classes."""
    inputs = keras.Input((steps, channels))
    x = inputs
    for filters in (16, 32):
        x = keras.layers.Conv1D(filters, 7, padding="same", activation="relu")(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.MaxPooling1D(2)(x)
    x = keras.layers.Conv1D(32, 5, padding="same", activation="relu", name="last_conv")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(len(CLASSES), activation="softmax")(x)
    return keras.Model(inputs, outputs, name="conv1d")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, for the test suite")
    p.add_argument("--out", default="outputs/timeseries_conv1d.png")
    args = p.parse_args(argv)
    n, steps, epochs = (96, 128, 1) if args.quick else (1500, 256, 10)

    keras.utils.set_random_seed(0)
    x, y, _ = make_signals(n, steps, seed=0)
    x_test, y_test, windows = make_signals(300, steps, seed=1)
    model = build_model(steps, x.shape[-1])
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0 if args.quick else 2)
    print(f"held-out accuracy {model.evaluate(x_test, y_test, verbose=0)[1]:.2f}")

    # the events (spike and burst samples): is the heatmap inside the event window?
    events = np.flatnonzero(y_test > 0)
    exp = kg.explain(model, x_test[events], method="gradcam++", layer="last_conv", targets=y_test[events])
    heat = exp.heatmaps  # (n_events, steps): one weight per time step
    total = heat.sum(axis=1)
    inside = np.where(total > 0, (heat * windows[events]).sum(axis=1) / np.where(total > 0, total, 1.0), 0.0)
    share = float(inside.mean())
    print(f"{share:.0%} of the Grad-CAM++ energy lies in the event window, "
          f"which covers {windows[events].mean():.0%} of the time steps")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    show = [int(np.flatnonzero(y_test[events] == k)[0]) for k in (1, 2)]  # one spike, one burst
    fig = kg.plot(exp[show], x_test[events][show], labels=y_test[events][show], class_names=CLASSES)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    fig.savefig(args.out, dpi=100)
    plt.close(fig)
    print(f"wrote {os.path.abspath(args.out)}")
    return {"energy_in_window": share, "figure": args.out}


if __name__ == "__main__":
    main()
