"""Per-sample explanations (METHODS.md sections 1.6 and 6.11): a sample's map never depends on the
other samples of its batch, nor on ``batch_size``; heatmaps lie in [0, 1] with max exactly 1."""

import keras
import numpy as np
import pytest
from oracles import same_explanation as assert_same

import keras_gradcam as kg

# the seven gradient methods of the core; methods registered later have their own test files
CORE = ("gradcam", "gradcam++", "smoothgradcam++", "xgradcam", "hirescam", "layercam", "integrated-gradcam")

OPTIONS = {
    "smoothgradcam++": {"n_samples": 3, "noise_level": 0.2, "seed": 3},
    "integrated-gradcam": {"steps": 3},
}
N = 5


@pytest.fixture(scope="module")
def model():
    """Conv (6x6) -> strided conv (3x3) -> Dense(8, relu) -> Dense(3, softmax); fixed weights.

    The hidden ReLU makes the gradient at the explained layer depend on the input, so noise draws
    and path points really change the gradients.
    """
    rng = np.random.default_rng(11)
    inp = keras.Input((6, 6, 2))
    a = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="c1")(inp)
    a = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="c2")(a)
    h = keras.layers.Dense(8, activation="relu", name="hidden")(keras.layers.Flatten()(a))
    out = keras.layers.Dense(3, activation="softmax", name="head")(h)
    m = keras.Model(inp, out)
    for layer in m.layers:
        if layer.weights:
            layer.set_weights([rng.normal(scale=0.6, size=w.shape) + (0.1 if w.ndim == 1 else 0.0) for w in layer.get_weights()])
    return m


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(12).normal(size=(N, 6, 6, 2)).astype(np.float32)


@pytest.mark.parametrize("method", CORE)
def test_batch_equals_one_by_one_and_ignores_batch_size(method, model, images):
    cam = kg.METHODS[method](model, layer="c2", **OPTIONS.get(method, {}))
    full = cam(images)
    assert len(full) == N and full.heatmaps.shape == (N, 6, 6) and full.layer_heatmaps.shape == (N, 3, 3)
    np.testing.assert_array_equal(full.targets, model.predict(images, verbose=0).argmax(-1))

    for b in range(N):
        assert_same(cam(images[b : b + 1]), full[b])
    # plain methods: batches of 1 and 4 (+1); expanded ones: 2 noise draws / path points per pass
    for bs in (1, 4) if method not in OPTIONS else (2,):
        assert_same(cam(images, batch_size=bs), full)
    mixed = np.array([2, 0, 1, 1, 2])
    by_call = cam(images, targets=mixed)
    for b in (0, 3):
        assert_same(cam(images[b : b + 1], targets=int(mixed[b])), by_call[b])

    # [0, 1], min 0 and max exactly 1 wherever the map is not constant
    varying = np.ptp(full.layer_heatmaps.reshape(N, -1), axis=1) > 1e-6
    assert varying.sum() >= 3, "the fixture should give non-trivial maps"
    assert full.heatmaps.min() >= 0.0 and full.heatmaps.max() <= 1.0
    np.testing.assert_array_equal(full.heatmaps[varying].max(axis=(1, 2)), 1.0)
    np.testing.assert_array_equal(full.heatmaps[varying].min(axis=(1, 2)), 0.0)
    assert np.isfinite(full.heatmaps).all() and full.heatmaps.dtype == np.float32


def test_explain_batch_size_argument(model, images):
    a = kg.explain(model, images, method="gradcam", layer="c2", batch_size=2)
    b = kg.explain(model, images, method="gradcam", layer="c2")
    assert_same(a, b)


def test_smooth_gradcampp_seed(model, images):
    def run(seed):
        cam = kg.SmoothGradCAMPlusPlus(model, layer="c2", n_samples=3, noise_level=0.3, seed=seed)
        return cam(images, targets=0)

    first, again, other = run(5), run(5), run(6)
    np.testing.assert_array_equal(first.heatmaps, again.heatmaps)
    np.testing.assert_array_equal(first.layer_heatmaps, again.layer_heatmaps)
    assert np.abs(first.layer_heatmaps - other.layer_heatmaps).max() > 1e-3
