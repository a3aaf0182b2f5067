"""LayerCAM (Jiang et al., IEEE TIP 2021), with multi-layer fusion."""

from __future__ import annotations

import math
from collections.abc import Sequence

from keras import ops

from ..core.capture import Captured
from ..core.engine import BaseCAM
from ..core.layers import LayerSpec
from ..core.postprocess import Tensor, resize
from ..core.smoothing import OPTIONS
from ..core.validate import one_of, positive_float

FUSIONS = ("max", "mean", "minmax-mean")


class LayerCAM(BaseCAM):
    r"""LayerCAM: each position's activation weighted by its own positive gradient.

    Works in shallow layers too, where it gives fine-grained maps; several layers can be fused.

    Parameters
    ----------
    model, output, score, counterfactual, batch_size
        See :class:`~keras_gradcam.core.engine.BaseCAM`.
    layer : str, Layer, None, or a list of them
        One layer, or several to fuse (all read in the same single backward pass).
    gamma : float, default=2.0
        Scale (> 0) of the tanh applied to the shallower layers' maps before fusion.
    fusion : {"max", "mean", "minmax-mean"}, default="max"
        How several layers' maps (each after its ReLU) become one; each is upsampled to the
        finest layer's resolution first.

        - ``"max"`` follows the paper (Eq. 9): the shallower layers' maps are scaled by
          ``tanh(gamma * M / max M)``, the deepest by ``M / max M``, and combined by the
          element-wise maximum.
        - ``"mean"`` averages the maps each divided by its maximum, ``M / max M``: a layer
          map ``[1, 2]`` counts as ``[0.5, 1]``.
        - ``"minmax-mean"`` averages the maps each min-max normalised,
          ``(M - min M) / (max M - min M)``: ``[1, 2]`` counts as ``[0, 1]``. This is
          pytorch-grad-cam's rule for several target layers (checked on 1.5.7), except that
          pytorch-grad-cam resizes each map to the input before averaging, and here to the
          finest layer (the engine then resizes the fused map to the input).

        An all-zero map stays zero under both means; under ``"minmax-mean"`` so does any
        constant map.

    Notes
    -----
    .. math:: L^c = \mathrm{ReLU}\Big(\sum_k \mathrm{ReLU}\big(\tfrac{\partial y^c}{\partial A^k}\big)
              \odot A^k\Big)

    The deepest layer is the one with the fewest spatial positions. With several layers
    ``exp.layer_heatmaps`` is the fused map at the finest resolution. One forward and one backward
    pass whatever the number of layers.

    References
    ----------
    P.-T. Jiang et al., "LayerCAM: Exploring Hierarchical Class Activation Maps for Localization",
    IEEE TIP 30, 2021.
    """

    name = "layercam"
    display_name = "LayerCAM"
    supports = frozenset(OPTIONS)  # aug_smooth, eigen_smooth, relu

    def __init__(
        self,
        model,
        layer: LayerSpec | Sequence[LayerSpec] = None,
        *,
        gamma: float = 2.0,
        fusion: str = "max",
        **kwargs,
    ):
        self.fusion = one_of(
            "fusion", fusion, FUSIONS,
            expected="'max' (the paper), 'mean' (each layer's map divided by its max) or 'minmax-mean' (each "
                     "layer's map min-max normalised, as pytorch-grad-cam)",
        )
        self.gamma = positive_float("gamma", gamma)
        self._layer_list = list(layer) if isinstance(layer, (list, tuple)) else [layer]
        if not self._layer_list:
            raise ValueError("layer=[] names no layer; pass a layer, a list of layers, or None.")
        super().__init__(model, layer, **kwargs)
        if not self.relu and len(self._layer_list) > 1:
            raise ValueError(
                f"relu=False keeps the signed map, but fusing {len(self._layer_list)} layers scales each layer's map by "
                "its maximum, which needs non-negative maps; pass one layer with relu=False, or keep relu=True to fuse."
            )

    def layer_specs(self) -> list:
        return self._layer_list

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma, "fusion": self.fusion}

    def compute(self, acts: Tensor, grads: Tensor) -> Tensor:
        return self.combine(acts, ops.relu(grads))

    def layer_map(self, x, targets, chunk: int) -> tuple[Tensor, Captured]:
        cap = self._capture(x, targets)
        maps = [self.compute(a, self.signed(g)) for a, g in zip(cap.activations, cap.gradients)]
        if len(maps) == 1:
            return maps[0], cap  # the engine applies the ReLU (or not, relu=False)
        maps = [ops.relu(m) for m in maps]
        finest = max(maps, key=lambda m: math.prod(m.shape[1:])).shape[1:]
        deepest = min(range(len(maps)), key=lambda i: (math.prod(maps[i].shape[1:]), -i))
        scaled = []
        for i, m in enumerate(maps):
            axes = tuple(range(1, len(m.shape)))
            if self.fusion == "minmax-mean":
                m = m - ops.min(m, axis=axes, keepdims=True)
            m = ops.divide_no_nan(m, ops.max(m, axis=axes, keepdims=True))
            if self.fusion == "max" and i != deepest:
                m = ops.tanh(self.gamma * m)
            scaled.append(resize(m, finest))
        stacked = ops.stack(scaled, axis=0)
        fused = ops.max(stacked, axis=0) if self.fusion == "max" else ops.mean(stacked, axis=0)
        return fused, cap
