"""Integrated Grad-CAM (Sattarzadeh et al., ICASSP 2021)."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from ..core.capture import Captured
from ..core.engine import BaseCAM
from ..core.layers import LayerSpec
from ..core.postprocess import Tensor
from ..core.targets import batch_of
from ..core.validate import boolean, one_of, positive_int
from .inputs import refuse_token_inputs
from .sampling import by_variant, join_variants, repeated_passes

RIEMANN = ("left", "right", "trapezoid")


def path_points(steps: int, riemann: str) -> tuple[np.ndarray, np.ndarray]:
    """Interpolation coefficients ``t_i`` and quadrature weights of the path integral over [0, 1]."""
    if riemann == "left":
        return np.arange(steps) / steps, np.full(steps, 1.0 / steps)
    if riemann == "right":
        return np.arange(1, steps + 1) / steps, np.full(steps, 1.0 / steps)
    weights = np.full(steps + 1, 1.0 / steps)
    weights[[0, -1]] *= 0.5
    return np.arange(steps + 1) / steps, weights


class IntegratedGradCAM(BaseCAM):
    r"""Integrated Grad-CAM: Grad-CAM integrated along a straight path from a baseline to the input.

    Gradients saturate: a feature that is already strongly present may have a small gradient, so
    Grad-CAM underestimates it. Integrating Grad-CAM over images that fade in from a baseline
    (black by default) counts the evidence gathered along the way.

    Parameters
    ----------
    model, layer, output, score, counterfactual, batch_size
        See :class:`~keras_gradcam.core.engine.BaseCAM`. ``batch_size`` bounds the number of path images
        in one pass.
    steps : int, default=50
        Number of path intervals ``m``.
    baseline : float or array-like, default=0.0
        The path's starting point, in the space the model consumes (0 is black only for inputs in
        [0, 1] or [0, 255]; after mean/std preprocessing 0 is the mean colour). A scalar, or an
        array broadcastable to one sample.
    riemann : {"left", "right", "trapezoid"}, default="left"
        ``"left"`` uses ``t_i = i/m, i = 0..m-1`` like the official code; ``"right"`` ``i = 1..m``
        (``steps=1`` then gives Grad-CAM of the input); ``"trapezoid"`` both ends, ``m + 1`` points.
    relu_per_step : bool, default=True
        Apply the ReLU to each path point's Grad-CAM map before summing (official code).
    subtract_baseline_activations : bool, default=False
        Weight ``A(x_i) - A(baseline)`` instead of ``A(x_i)`` (the paper's figure suggests it; the
        official code does not).

    Raises
    ------
    ValueError
        The model takes integer token ids (an integer input, or an ``Embedding`` reading an input):
        a path between token ids passes through other tokens, not through "less" of the input.
        Grad-CAM and the other methods that only read the layer work on such models.

    Notes
    -----
    With :math:`x_i = x' + t_i (x - x')` and quadrature weights :math:`w_i`:

    .. math:: L = \sum_i w_i\,\mathrm{ReLU}\Big(\sum_k \alpha_k(x_i)\, A^k(x_i)\Big),\qquad
              \alpha_k(x_i) = \frac{1}{Z}\sum_{ab}\frac{\partial y^c}{\partial A^k_{ab}}(x_i)

    The weights are ``1/m`` (a Riemann average); the official code sums, a constant factor that
    normalisation removes. Targets chosen by ``targets=None`` and ``exp.scores`` are those of the
    input itself. Cost: ``m`` forward and backward passes plus one, batched.

    References
    ----------
    S. Sattarzadeh et al., "Integrated Grad-CAM: Sensitivity-Aware Visual Explanation of Deep
    Convolutional Networks via Integrated Gradient-Based Scoring", ICASSP 2021, arXiv:2102.07805.
    """

    name = "integrated-gradcam"
    display_name = "Integrated Grad-CAM"
    input_action = "interpolates the input from a baseline"  # refuses token models (methods.inputs)

    def __init__(
        self,
        model,
        layer: LayerSpec = None,
        *,
        steps: int = 50,
        baseline=0.0,
        riemann: str = "left",
        relu_per_step: bool = True,
        subtract_baseline_activations: bool = False,
        **kwargs,
    ):
        self.steps = positive_int("steps", steps, expected="a positive int")
        self.riemann = one_of("riemann", riemann, RIEMANN)
        self.baseline = np.asarray(baseline, dtype=np.float32)
        self.relu_per_step = boolean("relu_per_step", relu_per_step)
        self.subtract_baseline_activations = boolean("subtract_baseline_activations", subtract_baseline_activations)
        self._coeffs, self._weights = path_points(self.steps, riemann)
        super().__init__(model, layer, **kwargs)

    def get_config(self):
        return {
            **super().get_config(),
            "steps": self.steps,
            "baseline": self.baseline.tolist(),  # a float, or nested lists for an array
            "riemann": self.riemann,
            "relu_per_step": self.relu_per_step,
            "subtract_baseline_activations": self.subtract_baseline_activations,
        }

    def _setup(self, sample=None) -> None:
        super()._setup(sample)
        refuse_token_inputs(self.model, self.display_name, self.input_action)

    def _expansion(self) -> int:
        return len(self._coeffs)

    def _baselines(self, x):
        def one(a):
            try:
                base = np.broadcast_to(self.baseline, tuple(a.shape[1:]))
            except ValueError:
                raise ValueError(
                    f"baseline of shape {self.baseline.shape} does not broadcast to one sample of shape "
                    f"{tuple(a.shape[1:])}; pass a scalar or an array of the sample's shape."
                ) from None
            return ops.cast(ops.convert_to_tensor(np.ascontiguousarray(base)), a.dtype)

        return keras.tree.map_structure(one, x)

    def layer_map(self, x, targets, chunk: int) -> tuple[Tensor, Captured]:
        clean = self._capture(x, targets)
        targets = batch_of(targets).with_classes(clean.targets)  # the classes resolved on the clean inputs
        base = self._baselines(x)
        coeffs = ops.convert_to_tensor(self._coeffs, "float32")
        weights = ops.convert_to_tensor(self._weights, "float32")
        acts0 = 0.0
        if self.subtract_baseline_activations:
            at_base = keras.tree.map_structure(lambda a, b: ops.zeros_like(a) + b[None], x, base)
            acts0 = self._capture(at_base, targets).activations[0]

        def variants(idx):
            def one(a, b):
                t = ops.reshape(ops.cast(ops.take(coeffs, idx, axis=0), a.dtype), (-1,) + (1,) * len(a.shape))
                return join_variants(b[None, None] + t * (a[None] - b[None, None]))

            return keras.tree.map_structure(one, x, base)

        acts0_like = clean.activations[0]

        def fold(acc, idx, cap):
            k = ops.shape(idx)[0]
            acts = by_variant(cap.activations[0], k) - acts0
            grads = by_variant(self.signed(cap.gradients[0]), k)
            alpha = ops.mean(grads, axis=tuple(range(2, len(acts0_like.shape))), keepdims=True)
            maps = ops.sum(acts * alpha, axis=-1)  # (k, B, *spatial)
            if self.relu_per_step:
                maps = ops.relu(maps)
            w = ops.reshape(ops.take(weights, idx, axis=0), (-1,) + (1,) * (len(maps.shape) - 1))
            return acc + ops.sum(w * maps, axis=0)

        init = ops.zeros(ops.shape(acts0_like)[:-1])
        return repeated_passes(self._capture, len(self._coeffs), chunk, variants, targets, fold, init, self.gradients), clean
