"""Sanity check: model-parameter randomisation (Adebayo et al., NeurIPS 2018).

Re-explains a copy of the model with its weights re-drawn layer by layer and measures how much the
maps change: a map that barely changes explains the image, not what the model learned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np

from ..core.explanation import Explanation
from ..core.layers import list_layers
from ..core.validate import one_of
from ..methods.registry import get_method
from .stats import spearman

__all__ = ["MODES", "RandomizationResult", "redraw", "randomization_check"]

#: Randomisation orders ``mode=`` accepts.
MODES: tuple[str, ...] = ("cascading", "independent")


@dataclass
class RandomizationResult:
    """Result of :func:`randomization_check`.

    Attributes
    ----------
    method : str
        The explained method.
    mode : str
        ``"cascading"`` or ``"independent"``.
    steps : tuple of str
        ``"none"`` for step 0 (trained weights, on the copy), then the path of the layer
        randomised at each step (cascading: that layer and all before it in this list).
    spearman : ndarray of shape (n_steps + 1, n_samples)
        Signed Spearman rho between each step's map and the trained model's map.
    abs_spearman : ndarray of shape (n_steps + 1, n_samples)
        The same on absolute values of the maps.
    """

    method: str
    mode: str
    steps: tuple
    spearman: np.ndarray
    abs_spearman: np.ndarray
    layer: str | tuple = ""

    def mean(self, kind: str = "abs_spearman") -> np.ndarray:
        """Mean similarity over images at each step, ``(n_steps + 1,)``."""
        one_of("kind", kind, ("spearman", "abs_spearman"))
        return getattr(self, kind).mean(1)

    def summary(self, kind: str = "abs_spearman") -> float:
        """Mean similarity over all randomisation steps (step 0 excluded): low = sensitive = passes."""
        m = self.mean(kind)
        return float(m[1:].mean()) if m.size > 1 else float("nan")


def _comparison_map(exp: Explanation) -> np.ndarray:
    """The map compared across steps: channel-summed attributions if any, else heatmaps."""
    if exp.attributions is not None:
        a = np.asarray(exp.attributions, np.float64)
        return a.sum(-1) if a.ndim == 4 else a
    return np.asarray(exp.heatmaps, np.float64)


def redraw(layer: keras.layers.Layer, seed: int) -> None:
    """Re-initialise every weight of ``layer`` with the layer's own initialiser, seeded."""
    for k, var in enumerate(layer.weights):
        name = var.name.split("/")[-1].split(":")[0]
        init = getattr(layer, f"{name}_initializer", None)
        if init is None:
            init = keras.initializers.GlorotUniform() if len(var.shape) >= 2 else keras.initializers.Zeros()
        init = keras.initializers.get(init)
        config = init.get_config()
        if "seed" in config:
            config = dict(config, seed=int(seed) * 1000 + k)
            init = type(init).from_config(config)
        var.assign(keras.ops.cast(init(tuple(var.shape), dtype=var.dtype), var.dtype))


def _weighted_layers(model: keras.Model) -> list:
    infos = list_layers(model, spatial_only=False)
    return [i for i in infos if not isinstance(i.layer, keras.Model) and getattr(i.layer, "weights", None)]


def randomization_check(
    model: keras.Model,
    images,
    method="gradcam",
    layer=None,
    targets=None,
    *,
    mode: str = "cascading",
    layers: Sequence[str] | None = None,
    seed: int = 0,
    batch_size: int = 32,
    **options,
) -> RandomizationResult:
    """Model-parameter randomisation test (Adebayo et al., NeurIPS 2018), on a copy of the model.

    A method whose maps depend on what the model learned should change when the weights are
    re-initialised; a method whose maps stay the same behaves like an edge detector.

    Parameters
    ----------
    model : keras.Model
        Functional or Sequential model (it must work with ``keras.models.clone_model``). It is
        never modified: the randomisation happens on a clone carrying a copy of its weights.
    images : array-like of shape (n_samples, ...)
        Preprocessed inputs.
    method : str or BaseCAM subclass, default="gradcam"
        A name from :data:`keras_gradcam.METHODS` (or any name :func:`keras_gradcam.get_method`
        knows, e.g. ``"guided-backprop"``).
    layer : str, optional
        Explained layer (None: the method's default).
    targets : None, int or sequence of int, default=None
        Classes explained; None explains the **trained** model's top-1 classes at every step.
    mode : {"cascading", "independent"}, default="cascading"
        Cascading re-initialises one more layer per step, from the top (output) layer down;
        independent re-initialises one layer at a time, restoring the others.
    layers : sequence of str, optional
        Paths of the layers to randomise, in order (default: every layer with weights, top
        down, nested models included).
    seed : int, default=0
        Seed of the re-drawn weights.
    batch_size : int, default=32
    **options
        Method options (``n_samples=``, ``steps=``, ...).

    Returns
    -------
    RandomizationResult
        Per-step, per-image signed and absolute Spearman similarity with the trained model's
        maps; ``result.mean()`` per step, ``result.summary()`` one number.

    Raises
    ------
    TypeError
        The model cannot be cloned (subclassed models).
    ValueError
        Unknown layer names in ``layers``, bad ``mode``.

    Notes
    -----
    Each re-initialised variable is re-drawn with its layer's own initialiser
    (``kernel_initializer``, ``bias_initializer``, ``gamma_initializer``, ...; a seeded copy
    of it), falling back to Glorot-uniform / zeros. Biases thus usually become zero.
    Every step is explained by a freshly built explainer of the same configuration (class,
    layer, options), so whatever a method builds at setup (the guided copy of Guided Grad-CAM,
    compiled functions) reads the re-drawn weights; this costs one retrace per step.
    The compared map is ``Explanation.attributions`` summed over channels when the method has
    attributions (Guided Backprop), else ``Explanation.heatmaps``. Similarity is Spearman rho
    with and without absolute values (Adebayo et al. also use SSIM and HOG similarity, not
    computed here). A map that becomes constant (e.g. all zero) counts as similarity 0. There
    is no pass/fail threshold in the paper; :meth:`RandomizationResult.summary` gives the mean
    similarity across steps (low is good).

    Examples
    --------
    >>> res = kg.metrics.randomization_check(model, images[:8], "gradcam")   # doctest: +SKIP
    >>> res.steps, res.mean().round(2)                                       # doctest: +SKIP
    """
    one_of("mode", mode, MODES)
    cls = get_method(method)
    reference = cls(model, layer, batch_size=batch_size, **options)(images, targets)
    t = reference.targets if reference.targets is not None else targets
    try:
        copy = keras.models.clone_model(model)
    except Exception as err:  # noqa: BLE001 - re-raised with the fix
        raise TypeError(
            f"randomization_check works on a copy made with keras.models.clone_model, which failed for "
            f"{type(model).__name__}: {err}. Use a Functional or Sequential model."
        ) from err
    copy.set_weights(model.get_weights())
    candidates = _weighted_layers(copy)
    by_path = {i.path: i for i in candidates}
    if layers is None:
        chosen = list(reversed(candidates))
    else:
        unknown = [p for p in layers if p not in by_path]
        if unknown:
            raise ValueError(f"layers {unknown} are not layers with weights of the model; choose from {list(by_path)}.")
        chosen = [by_path[p] for p in layers]
    copy_layer = reference.layer if isinstance(layer, keras.layers.Layer) else layer

    def current():
        # A fresh explainer of the same configuration at every step: whatever a method builds at
        # setup (a private copy of the model, cached weights, compiled functions) is built from the
        # copy's weights as they are now, so no method can explain a stale model.
        return cls(copy, copy_layer, batch_size=batch_size, **options)

    ref_map = _comparison_map(reference)

    def similarity(exp):
        m = _comparison_map(exp)
        signed = np.nan_to_num(spearman(ref_map, m), nan=0.0)
        absolute = np.nan_to_num(spearman(np.abs(ref_map), np.abs(m)), nan=0.0)
        return signed, absolute

    signed, absolute = [], []
    s0, a0 = similarity(current()(images, t))
    signed.append(s0)
    absolute.append(a0)
    for step, info in enumerate(chosen, start=1):
        saved = None if mode == "cascading" else [w.numpy() for w in info.layer.weights]
        redraw(info.layer, seed + step)
        s, a = similarity(current()(images, t))
        signed.append(s)
        absolute.append(a)
        if saved is not None:
            for var, value in zip(info.layer.weights, saved):
                var.assign(value)
    return RandomizationResult(
        method=cls.name,
        mode=mode,
        steps=("none",) + tuple(i.path for i in chosen),
        spearman=np.stack(signed),
        abs_spearman=np.stack(absolute),
        layer=reference.layer,
    )
