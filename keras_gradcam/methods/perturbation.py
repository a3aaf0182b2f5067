"""The driver shared by channel-perturbation methods (Score-CAM, Ablation-CAM).

Perturbation methods run one forward pass of the clean batch, then many forward passes where each
sample is repeated once per channel and perturbed (a masked input, an ablated channel). Those
passes are batched: the perturbed copies of a few samples go through the model together, at most
``batch_size`` images per pass, in compiled functions traced once per input signature. Python
only loops over the passes, which lets a ``keras.utils.Progbar`` report progress (``verbose=0``
turns it off).
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from keras import ops

from ..core import backend
from ..core.engine import OUTPUTS, BaseCAM, Call
from ..core.inputs import batch_slice, flat
from ..core.layers import LayerInfo, LayerSpec
from ..core.postprocess import normalize, resize, weighted_sum
from ..core.progress import Progbar
from ..core.targets import batch_of
from ..core.validate import one_of, positive_int

__all__ = ["plan_passes", "head_model", "ChannelPerturbation"]

PASSES_PER_CALL = 8  # perturbed passes per compiled call: fewer calls, a progress bar still alive


def plan_passes(n: int, channels: int, batch_size: int) -> tuple[int, int]:
    """How to lay out ``n * channels`` perturbed images in passes of at most ``batch_size`` images.

    Parameters
    ----------
    n : int
        Number of samples.
    channels : int
        Perturbed copies per sample (channels of the layer, or ``max_channels``).
    batch_size : int
        Largest number of images in one forward pass.

    Returns
    -------
    samples, chunk : int
        Each pass holds ``chunk`` perturbed copies of ``samples`` samples, so
        ``samples * chunk <= batch_size`` (at least one image per pass).

    Examples
    --------
    >>> plan_passes(8, 64, 32)   # one sample per pass, 32 of its 64 channels
    (1, 32)
    >>> plan_passes(8, 3, 32)    # 10 samples would fit; there are 8
    (8, 3)
    """
    samples = min(n, max(1, batch_size // channels))
    chunk = min(channels, max(1, batch_size // samples))
    return samples, chunk


def head_model(model: keras.Model, info: LayerInfo) -> keras.Model | None:
    """``keras.Model(layer.output, model.output)``: the sub-network after a top-level layer.

    None when the layer sits in a nested model or is a token layer, or when a path to the output bypasses the layer
    (a skip connection around it): the output then does not depend on the input through the
    layer only, and perturbing the layer needs the whole network.
    """
    if "/" in info.path or info.tokens:
        return None  # a token layer's prefix tokens are not in the grid the head would be fed
    try:
        try:
            outputs = model.output
        except (AttributeError, ValueError):
            outputs = model.outputs
            outputs = outputs[0] if len(outputs) == 1 else outputs
        return keras.Model(info.layer.output, outputs)
    except (AttributeError, ValueError, TypeError, KeyError):
        return None  # disconnected: a path to the output bypasses the layer


class ChannelPerturbation(BaseCAM):
    """Base of Score-CAM and Ablation-CAM: one perturbed forward pass per (sample, channel).

    Subclasses implement :meth:`_perturbed_scores` (graph code: the explained score of each
    perturbed copy) and :meth:`_weights` (channel weights from those scores).
    """

    gradients = False
    supports = frozenset({"relu"})  # K perturbed passes per image: no test-time copies, no eigen smoothing

    def __init__(self, model, layer: LayerSpec = None, *, max_channels: int | None = None, verbose: int = 1, **kwargs):
        self.max_channels = (
            None
            if max_channels is None
            else positive_int("max_channels", max_channels, expected="None (all channels) or a positive int")
        )
        self.verbose = int(
            one_of("verbose", verbose, (0, 1, 2), expected="0 (silent), 1 (progress bar) or 2 (one line)")
        )
        super().__init__(model, layer, **kwargs)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "max_channels": self.max_channels, "verbose": self.verbose}

    def _setup(self, sample=None) -> None:
        super()._setup(sample)
        if len(self.layers[0].shape) < 3:
            raise ValueError(f"layer {self.layer!r} has no spatial axes; pick a convolutional layer.")

    # -- what subclasses override --------------------------------------------------------------
    def _num_perturbed(self, channels: int) -> int:
        """How many channels of each sample are perturbed: all, or at most ``max_channels``."""
        return channels if self.max_channels is None else min(self.max_channels, channels)

    def _copies(self) -> int:
        """Perturbed copies of each channel (noise draws, path steps): 1 for Score-CAM and Ablation-CAM.

        With ``d`` copies the driver hands :meth:`_perturbed_scores` copy ids ``channel * d + copy``
        instead of channel indices, and :meth:`_weights` the ``(B, N * d)`` scores, copies of a
        channel side by side.
        """
        return 1

    def _select_channels(self, acts: np.ndarray, count: int) -> np.ndarray:
        """``(B, count)`` int32 channel indices to perturb for each sample (on the host).

        All channels in order; with ``max_channels``, the ``count`` channels with the largest
        spatial standard deviation of their activation map in each sample (largest first, the
        lower index first on a tie).
        """
        if self.max_channels is None:
            return np.tile(np.arange(count, dtype=np.int32), (len(acts), 1))
        std = acts.std(axis=tuple(range(1, acts.ndim - 1)))
        return np.argsort(-std, axis=1, kind="stable")[:, :count].astype(np.int32)

    def _perturbed_scores(self, xb, acts, channels, targets, size):
        """Graph code: ``(scores, valid)``, each ``(c, B)``, for the ``(B, c)`` channel indices (copy ids, see :meth:`_copies`)."""
        raise NotImplementedError

    def _weights(self, clean_scores: np.ndarray, scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """``(B, N)`` channel weights from the ``(B, N * copies)`` perturbed scores."""
        raise NotImplementedError

    def _begin(self) -> None:
        """Called once before the batches of a call (reset per-call state)."""

    def _finish(self) -> None:
        """Called once after all batches of a call (e.g. to issue collected warnings)."""

    # -- the driver ----------------------------------------------------------------------------
    def _clean_function(self, call: Call):
        """Compiled clean pass ``(inputs, rows, shared) -> (activations, targets, scores, predictions)``."""

        def body(xb, targets):
            cap = self.capture(xb, targets, gradients=False)
            return cap.activations[0], cap.targets, cap.scores, cap.predictions

        return self.compile(call, ("clean",), body)

    def _perturbed_function(self, call: Call):
        """Compiled perturbed passes: ``(scores, valid)``, each ``(channels, B)`` float32.

        The ``(B, channels)`` channel indices given (a multiple of ``chunk``, see :meth:`passes`)
        are processed ``chunk`` per pass, one pass after the other
        (:func:`~keras_gradcam.core.backend.map_sequential`, so that ``batch_size`` bounds the
        memory too), in one call: several passes per call spare the Python-to-graph overhead of each.
        """

        chunk, size = call.chunk, call.size

        def body(xb, acts, channels, tb, targets):
            tgt = targets.with_classes(tb)  # class targets: those resolved on the clean pass
            rows = ops.shape(channels)[0]

            def step(i):
                part = ops.slice(channels, (0, i * chunk), (rows, chunk))
                s, v = self._perturbed_scores(xb, acts, part, tgt, size)
                return ops.cast(s, "float32"), ops.cast(v, "float32")

            scores, valid = backend.map_sequential(step, ops.shape(channels)[1] // chunk, 2)
            return ops.reshape(scores, (-1, rows)), ops.reshape(valid, (-1, rows))

        acts_spec = keras.KerasTensor((None,) + tuple(self._acts_shape()[1:]), "float32")
        specs = [acts_spec, keras.KerasTensor((None, None), "int32"), keras.KerasTensor((None,), "int32")]
        return self.compile(call, ("perturbed", tuple(size), chunk), body, specs)

    def _acts_shape(self) -> tuple:
        """The layer's output shape as :class:`Capture` gives activations (channels last, tokens on their grid)."""
        return tuple(self.layers[0].standard_shape)

    def _tile(self, t, c):
        """``(B, ...)`` -> ``(c * B, ...)``, copy-major (row ``j * B + b`` is copy ``j`` of sample ``b``)."""
        return ops.tile(t, [c] + [1] * (len(t.shape) - 1))

    def _tile_targets(self, targets, c):
        """The target's rows for ``c`` copies of each sample, copy-major (see :meth:`_tile`)."""
        return batch_of(targets).tile(c)

    # -- the pipeline's stages -----------------------------------------------------------------
    def plan(self, call: Call) -> None:
        """Each pass holds ``chunk`` perturbed copies of ``samples`` samples (:func:`plan_passes`); a
        batch (one clean pass) as many samples as fit in ``batch_size`` images."""
        k = int(self._acts_shape()[-1])
        total = self._num_perturbed(k) * self._copies()  # perturbed images per sample
        samples, chunk = plan_passes(call.n, total, call.batch_size)
        call.per_batch, call.chunk = samples * max(1, call.batch_size // samples), chunk
        call.state.update(channels=k, total=total, samples=samples)

    def begin(self, call: Call) -> None:
        self._begin()
        passes = math.ceil(call.n / call.state["samples"]) * math.ceil(call.state["total"] / call.chunk)
        call.state["bar"] = Progbar(passes, verbose=self.verbose, unit_name="pass")
        call.state["clean"] = self._clean_function(call)
        call.state["perturbed"] = self._perturbed_function(call)

    def finish(self, call: Call) -> None:
        self._finish()

    def passes(self, call: Call, start: int, stop: int) -> dict[str, np.ndarray]:
        """The clean pass of samples ``start:stop``, then their perturbed passes, ``samples`` at a time.

        Returns the pipeline's outputs and ``"channel_weights"``, the ``(n_samples, channels)``
        weights of the map (0 for channels that were not perturbed or were skipped), which go to
        ``Explanation.extras``.
        """
        k, total, samples, chunk = call.state["channels"], call.state["total"], call.state["samples"], call.chunk
        count, copies = total // self._copies(), self._copies()
        group = chunk * PASSES_PER_CALL
        xblock = call.batch(start, stop)
        m = int(flat(xblock)[0].shape[0])
        acts_all, tgt, scores, preds = call.state["clean"](xblock, *call.data(start, stop))
        channels_all = self._select_channels(ops.convert_to_numpy(acts_all), count)
        ids_all = channels_all
        if copies > 1:  # copy ids: channel * copies + copy, the copies of a channel side by side
            ids_all = (channels_all[:, :, None] * copies + np.arange(copies, dtype=np.int32)).reshape(m, total)
        got, ok = [], []
        for j in range(0, m, samples):
            xb = batch_slice(xblock, j, j + samples)
            acts, tb = acts_all[j : j + samples], tgt[j : j + samples]
            rows, shared = call.data(start + j, start + j + samples)
            scs, vas = [], []
            for first in range(0, total, group):
                part = ids_all[j : j + samples, first : first + group]
                width = part.shape[1]
                part = np.pad(part, ((0, 0), (0, -width % chunk)), mode="edge")  # whole passes; the copies dropped below
                sc, va = call.state["perturbed"](xb, acts, part, tb, rows, shared)
                scs.append(ops.convert_to_numpy(sc)[:width])
                vas.append(ops.convert_to_numpy(va)[:width])
                call.state["bar"].add(math.ceil(width / chunk))
            got.append(np.concatenate(scs).T)  # (samples, total)
            ok.append(np.concatenate(vas).T > 0.5)
        raw, valid = np.concatenate(got), np.concatenate(ok)
        weights = np.zeros((m, k), np.float32)  # 0 for channels not perturbed
        np.put_along_axis(weights, channels_all, self._weights(ops.convert_to_numpy(scores), raw, valid), axis=1)
        layer_map = weighted_sum(acts_all, ops.convert_to_tensor(weights))
        layer_map = ops.relu(layer_map) if self.relu else layer_map
        heat = normalize(resize(layer_map, call.size))
        arrays = [ops.convert_to_numpy(a) for a in (heat, layer_map, tgt, scores, preds)]
        return {**dict(zip(OUTPUTS, arrays)), "channel_weights": weights}
