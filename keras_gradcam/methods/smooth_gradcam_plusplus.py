"""Smooth Grad-CAM++ (Omeiza et al., 2019)."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from ..core.backend import stateless_normal
from ..core.capture import Captured
from ..core.engine import BaseCAM
from ..core.layers import LayerSpec
from ..core.postprocess import Tensor, spatial_sum
from ..core.smoothing import OPTIONS
from ..core.targets import batch_of
from ..core.validate import integer, one_of, positive_float, positive_int
from .inputs import refuse_token_inputs
from .sampling import by_variant, join_variants, repeated_passes

NUMERATORS = ("d2", "d1")


class SmoothGradCAMPlusPlus(BaseCAM):
    r"""Smooth Grad-CAM++: Grad-CAM++ with its derivatives averaged over noisy copies of the input.

    SmoothGrad applied to the gradients Grad-CAM++ uses: ``n`` copies of each image with Gaussian
    noise are back-propagated and the first, second and third powers of the gradients are
    averaged, which gives sharper, less noisy maps. The paper also promises maps of a subset of
    feature maps or of neurons; this class implements that by restricting the final weighted sum
    (``channels=``, ``neurons=``; see docs/methods/smoothgradcampp.md).

    Parameters
    ----------
    model, layer, output, score, counterfactual, batch_size
        See :class:`~keras_gradcam.core.engine.BaseCAM`. ``batch_size`` bounds the number of noisy images
        in one pass.
    n_samples : int, default=25
        Number of noisy copies per image.
    noise_level : float, default=0.15
        Noise standard deviation as a fraction of each sample's value range:
        ``sigma = noise_level * (x.max() - x.min())``, per sample and per input.
    seed : int, default=0
        Seed of the noise. The noise draws depend only on the seed and the draw index, never on the
        global RNG, the batch composition or ``batch_size``: the same image gets the same map in
        any batch (draw ``i`` of input ``j`` is the backend's stateless normal of the
        pair ``(seed, j)``, row ``i``: ``tf.random.stateless_normal`` on TensorFlow; JAX and PyTorch
        have their own generators, so their noisy maps differ from TensorFlow's in the draws only).
    numerator : {"d2", "d1"}, default="d2"
        ``"d2"`` uses the averaged squared gradient in alpha's numerator, so that ``n_samples=1`` and
        ``noise_level=0`` give Grad-CAM++ exactly (torch-cam's correction); ``"d1"`` is the
        formula as printed in the paper.
    channels : sequence of int, optional
        Explain only these feature maps: the map sums ``w_k A^k`` over these channels only.
    neurons : array-like of bool, optional
        A mask broadcastable to the layer's ``(*spatial, channels)`` output selecting neurons;
        only they enter the weighted sum.

    Raises
    ------
    ValueError
        The model takes integer token ids (an integer input, or an ``Embedding`` reading an input):
        noise on token ids is meaningless. Grad-CAM++ and the other methods that only read the
        layer work on such models.

    Notes
    -----
    With :math:`g_t = \partial S^c/\partial A |_{x + \epsilon_t}` and activations ``A`` of the clean
    input:

    .. math:: D_p = \frac{1}{n}\sum_t g_t^p,\quad
              \alpha = \frac{D_2}{2 D_2 + \sum_{ab} A_{ab} D_3},\quad
              w_k = \sum_{ij} \alpha_{ij}\,\mathrm{ReLU}(D_1),\quad
              L = \mathrm{ReLU}\Big(\sum_k w_k A^k\Big)

    Samples are weighted equally (the ``exp(S_t)`` factors are dropped). Targets chosen by
    ``targets=None`` are the top-1 classes of the clean images. Cost: ``n_samples`` forward and
    backward passes plus one for the clean image, batched.

    References
    ----------
    D. Omeiza et al., "Smooth Grad-CAM++: An Enhanced Inference Level Visualization Technique for
    Deep Convolutional Neural Network Models", arXiv:1908.01224, 2019.
    """

    name = "smoothgradcam++"
    display_name = "Smooth Grad-CAM++"
    input_action = "adds Gaussian noise to the input"  # refuses token models (methods.inputs)
    supports = frozenset(OPTIONS)  # aug_smooth, eigen_smooth, relu

    def __init__(
        self,
        model,
        layer: LayerSpec = None,
        *,
        n_samples: int = 25,
        noise_level: float = 0.15,
        seed: int = 0,
        numerator: str = "d2",
        channels=None,
        neurons=None,
        **kwargs,
    ):
        self.n_samples = positive_int("n_samples", n_samples, expected="a positive int")
        self.noise_level = positive_float(
            "noise_level", noise_level, allow_zero=True, expected="a finite number >= 0 (a fraction of the input range)"
        )
        self.seed = integer("seed", seed)
        self.numerator = one_of(
            "numerator", numerator, NUMERATORS, expected="'d2' (reduces to Grad-CAM++) or 'd1' (as printed)"
        )
        self.channels = None if channels is None else np.asarray(channels, dtype=np.int64).reshape(-1)
        self.neurons = None if neurons is None else np.asarray(neurons, dtype=bool)
        super().__init__(model, layer, **kwargs)

    def get_config(self):
        return {
            **super().get_config(),
            "n_samples": self.n_samples,
            "noise_level": self.noise_level,
            "seed": self.seed,
            "numerator": self.numerator,
            "channels": None if self.channels is None else self.channels.tolist(),
            "neurons": None if self.neurons is None else self.neurons.tolist(),
        }

    def _setup(self, sample=None) -> None:
        super()._setup(sample)
        refuse_token_inputs(self.model, self.display_name, self.input_action)

    def _expansion(self) -> int:
        return self.n_samples

    def _noisy_inputs(self, x):
        """A function ``idx -> x + sigma * eps[idx]`` for every input of the structure."""
        flat = keras.tree.flatten(x)
        draws, sigmas = [], []
        for i, a in enumerate(flat):
            eps = stateless_normal((self.n_samples,) + tuple(a.shape[1:]), (self.seed, i), dtype=a.dtype)
            axes = tuple(range(1, len(a.shape)))
            span = ops.max(a, axis=axes, keepdims=True) - ops.min(a, axis=axes, keepdims=True)
            draws.append(eps)
            sigmas.append(self.noise_level * span)

        def variants(idx):
            out = []
            for a, eps, sigma in zip(flat, draws, sigmas):
                out.append(join_variants(a[None] + sigma[None] * ops.take(eps, idx, axis=0)[:, None]))
            return keras.tree.pack_sequence_as(x, out)

        return variants

    def _selection(self, acts: Tensor) -> Tensor | None:
        """1 for the channels / neurons to explain, 0 elsewhere, broadcastable to ``acts``."""
        mask = None
        if self.channels is not None:
            k = acts.shape[-1]
            if self.channels.size and (self.channels.min() < 0 or self.channels.max() >= k):
                raise ValueError(f"channels must be in 0 .. {k - 1} for this layer; got {self.channels.tolist()}.")
            mask = ops.sum(ops.one_hot(self.channels, k), axis=0) > 0
        if self.neurons is not None:
            try:
                np.broadcast_to(self.neurons, tuple(acts.shape[1:]))
            except ValueError:
                raise ValueError(
                    f"neurons has shape {self.neurons.shape}; it must broadcast to the layer's "
                    f"(*spatial, channels) shape {tuple(acts.shape[1:])}."
                ) from None
            neurons = ops.convert_to_tensor(self.neurons)
            mask = neurons if mask is None else ops.logical_and(mask, neurons)
        return None if mask is None else ops.cast(mask, acts.dtype)

    def layer_map(self, x, targets, chunk: int) -> tuple[Tensor, Captured]:
        clean = self._capture(x, targets)
        acts = clean.activations[0]
        targets = batch_of(targets).with_classes(clean.targets)  # the classes resolved on the clean inputs

        def fold(acc, idx, cap):
            g = by_variant(self.signed(cap.gradients[0]), ops.shape(idx)[0])
            return tuple(s + ops.sum(g**p, axis=0) for s, p in zip(acc, (1, 2, 3)))

        zeros = ops.zeros_like(acts)
        d1, d2, d3 = (
            s / self.n_samples
            for s in repeated_passes(self._capture, self.n_samples, chunk, self._noisy_inputs(x), targets, fold, (zeros,) * 3, self.gradients)
        )
        den = 2.0 * d2 + spatial_sum(acts, keepdims=True) * d3
        num = d2 if self.numerator == "d2" else d1
        ok = ops.logical_and(d1 > 0, den > 0)
        alpha = ops.where(ok, num / ops.where(ok, den, 1.0), 0.0)
        weights = spatial_sum(alpha * ops.relu(d1))
        selection = self._selection(acts)
        explained = acts if selection is None else acts * selection
        return self.combine(explained, weights), clean
