"""Score-CAM (Wang et al., CVPR-W 2020), and the driver shared by channel-perturbation methods.

Perturbation methods (Score-CAM, Ablation-CAM) run one forward pass of the clean batch, then many
forward passes where each sample is repeated once per channel and perturbed (a masked input, an
ablated channel). Those passes are batched: the perturbed copies of a few samples go through the
model together, at most ``batch_size`` images per pass, in compiled functions traced once per
input signature. Python only loops over the passes, which lets a ``keras.utils.Progbar`` report
progress (``verbose=0`` turns it off).
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ..base import BaseCAM, _flat, _map
from ..explanation import Explanation
from ..postprocess import EPS, normalize, resize, weighted_sum
from ..targets import check_range
from .inputs import refuse_token_inputs

__all__ = ["ScoreCAM"]

SCORECAM_WEIGHTS = ("probability", "channel-softmax")
PASSES_PER_CALL = 8  # perturbed passes per compiled call: fewer calls, a progress bar still alive


def _spec_key(x) -> tuple:
    return tuple((tuple(a.shape[1:]), np.dtype(a.dtype).name) for a in _flat(x))


def _specs(x):
    return _map(lambda a: tf.TensorSpec((None,) + tuple(a.shape[1:]), tf.as_dtype(a.dtype)), x)


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


def _mask_images_body(images, maps, size, channels_first):
    """Score-CAM's masked inputs ``X * s(Up(A^k))``: upsample, then min-max normalise, then multiply.

    ``images`` ``(B, ...)``, ``maps`` ``(c * B, *spatial)`` copy-major. Returns the ``(c * B, ...)``
    masked images and whether each upsampled map was non-constant (``max - min > eps``).
    """
    up = resize(maps, size)
    axes = list(range(1, up.shape.rank))
    valid = tf.reduce_max(up, axis=axes) - tf.reduce_min(up, axis=axes) > EPS
    masks = tf.cast(normalize(up, EPS), images.dtype)
    b = tf.shape(images)[0]
    masks = tf.reshape(masks, tf.concat([[-1, b], tf.shape(masks)[1:]], axis=0))  # (c, B, *size)
    masks = masks[:, :, None] if channels_first else masks[..., None]
    masked = masks * images[None]
    return tf.reshape(masked, tf.concat([[-1], tf.shape(images)[1:]], axis=0)), valid


def _xla_masking(size: tuple, channels_first: bool):
    """A new ``jit_compile=True`` function ``(images, maps) -> (masked, valid)`` for one heatmap size.

    Fused by XLA, the masking costs a few percent of a forward pass; unfused, up to half of a
    small one. A new function is made each time, from inside the explainer's own compiled body, so
    that no compiled function (nor its trace cache) is shared between explainers, layers or sizes.
    """
    return tf.function(lambda images, maps: _mask_images_body(images, maps, size, channels_first), jit_compile=True)


@functools.lru_cache(maxsize=1)
def _xla_works() -> bool:
    """Whether this TensorFlow build can run ``jit_compile=True`` functions on the default device."""
    try:
        with tf.init_scope():  # run it now, eagerly, also when first asked while a function is traced
            _xla_masking((2, 2), False)(tf.ones([1, 2, 2, 1]), tf.ones([1, 1, 1]))[0].numpy()
        return True
    except (tf.errors.OpError, NotImplementedError, ValueError):  # pragma: no cover - builds without XLA
        return False


def _mask_images(images, maps, size, channels_first):
    """Graph code: the masked images, XLA-compiled where the build allows it (see :func:`_xla_masking`)."""
    if _xla_works():
        return _xla_masking(size, channels_first)(images, maps)
    return _mask_images_body(images, maps, size, channels_first)


class _Driven:
    """Plumbing for explainers whose batches run several compiled functions from Python.

    Mixed into :class:`~keras_gradcam.base.BaseCAM` subclasses; reuses its input checks, layer
    resolution, :class:`~keras_gradcam.capture.Capture` and function cache (``self._fns``).
    """

    def _contexts(self) -> list:
        """Context managers active while a function is traced (the capture's interception)."""
        return [self._capture.active()]

    def _compiled(self, key: tuple, body, signature: list):
        """``tf.function(body)`` traced once under :meth:`_contexts`, cached under ``key``; its concrete function."""
        fn = self._fns.get(key)
        if fn is None:
            with contextlib.ExitStack() as stack:
                for ctx in self._contexts():
                    stack.enter_context(ctx)
                # the concrete function: calling it skips tf.function's per-call signature lookup
                fn = tf.function(body, input_signature=signature, autograph=False).get_concrete_function()
            self._fns[key] = fn
        return fn

    def _clean_function(self, x, targets):
        """Compiled clean pass: ``(activations, targets, scores, predictions)`` of a batch."""

        def body(xb, tb):
            cap = self._capture(xb, targets if callable(targets) else tb, gradients=False)
            self._num_classes = cap.num_classes  # read at trace time
            return cap.activations[0], cap.targets, cap.scores, cap.predictions

        key = ("clean", _spec_key(x), targets if callable(targets) else None)
        return self._compiled(key, body, [_specs(x), tf.TensorSpec([None], tf.int32)])


class _ChannelPerturbation(_Driven, BaseCAM):
    """Base of Score-CAM and Ablation-CAM: one perturbed forward pass per (sample, channel).

    Subclasses implement :meth:`_perturbed_scores` (graph code: the explained score of each
    perturbed copy) and :meth:`_weights` (channel weights from those scores).
    """

    gradients = False

    def __init__(self, model, layer=None, *, max_channels: int | None = None, verbose: int = 1, **kwargs):
        if max_channels is not None and (not isinstance(max_channels, (int, np.integer)) or max_channels < 1):
            raise ValueError(f"max_channels must be None (all channels) or a positive int; got {max_channels!r}.")
        self.max_channels = None if max_channels is None else int(max_channels)
        if kwargs.get("counterfactual"):
            raise ValueError(
                f"counterfactual=True negates gradients, but {type(self).__name__} uses no gradients; "
                "use GradCAM(..., counterfactual=True) for counterfactual explanations."
            )
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0 (silent), 1 (progress bar) or 2 (one line); got {verbose!r}.")
        self.verbose = int(verbose)
        super().__init__(model, layer, **kwargs)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.pop("counterfactual", None)
        return {**config, "max_channels": self.max_channels, "verbose": self.verbose}

    def _setup(self, sample=None) -> None:
        super()._setup(sample)
        if len(self.layers[0].shape) < 3:
            raise ValueError(f"layer {self.layer!r} has no spatial axes; pick a convolutional layer.")

    # -- what subclasses override --------------------------------------------------------------
    def _num_perturbed(self, channels: int) -> int:
        """How many channels of each sample are perturbed: all, or at most ``max_channels``."""
        return channels if self.max_channels is None else min(self.max_channels, channels)

    def _select_channels(self, acts: tf.Tensor, count: int) -> tf.Tensor:
        """``(B, count)`` int32 channel indices to perturb for each sample.

        All channels in order; with ``max_channels``, the ``count`` channels with the largest
        spatial standard deviation of their activation map in each sample (largest first).
        """
        if self.max_channels is None:
            b = tf.shape(acts)[0]
            return tf.tile(tf.range(count, dtype=tf.int32)[None], [b, 1])
        spatial = list(range(1, acts.shape.rank - 1))
        std = tf.math.reduce_std(acts, axis=spatial)
        return tf.math.top_k(std, k=count).indices

    def _perturbed_scores(self, xb, acts, channels, targets, size):
        """Graph code: ``(scores, valid)``, each ``(c, B)``, for the ``(B, c)`` channel indices."""
        raise NotImplementedError

    def _weights(self, clean_scores: np.ndarray, scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """``(B, N)`` channel weights from the ``(B, N)`` perturbed scores."""
        raise NotImplementedError

    def _begin(self) -> None:
        """Called once before the batches of a call (reset per-call state)."""

    def _finish(self) -> None:
        """Called once after all batches of a call (e.g. to issue collected warnings)."""

    # -- the driver ----------------------------------------------------------------------------
    def _perturbed_function(self, x, targets, size, chunk: int):
        """Compiled perturbed passes: ``(scores, valid)``, each ``(channels, B)``.

        The ``(B, channels)`` channel indices given are processed ``chunk`` per pass, one pass after
        the other (``parallel_iterations=1``, so that ``batch_size`` bounds the memory too), in one
        call: several passes per call spare the Python-to-graph overhead of each.
        """

        def body(xb, acts, channels, tb):
            tgt = targets if callable(targets) else tb
            steps = (tf.shape(channels)[1] + chunk - 1) // chunk

            def step(i, scores, valid):
                part = channels[:, i * chunk : (i + 1) * chunk]
                s, v = self._perturbed_scores(xb, acts, part, tgt, size)
                return i + 1, scores.write(i, s), valid.write(i, v)

            arrays = [tf.TensorArray(dtype, size=steps, infer_shape=False) for dtype in (tf.float32, tf.bool)]
            _, scores, valid = tf.while_loop(
                lambda i, *_: i < steps, step, [tf.constant(0)] + arrays, parallel_iterations=1
            )
            return scores.concat(), valid.concat()

        acts_spec = tf.TensorSpec((None,) + tuple(self._acts_shape()[1:]), tf.float32)
        key = ("perturbed", _spec_key(x), targets if callable(targets) else None, tuple(size), chunk)
        signature = [_specs(x), acts_spec, tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None], tf.int32)]
        return self._compiled(key, body, signature)

    def _acts_shape(self) -> tuple:
        """The layer's output shape, channels last (as :class:`Capture` gives activations)."""
        info = self.layers[0]
        shape = tuple(info.shape)
        if info.channels_first:
            shape = (shape[0],) + shape[2:] + (shape[1],)
        return shape

    def _tile(self, t: tf.Tensor, c) -> tf.Tensor:
        """``(B, ...)`` -> ``(c * B, ...)``, copy-major (row ``j * B + b`` is copy ``j`` of sample ``b``)."""
        tiled = tf.tile(t[None], tf.concat([[c], tf.ones([tf.rank(t)], tf.int32)], axis=0))
        return tf.reshape(tiled, tf.concat([[-1], tf.shape(t)[1:]], axis=0))

    def _tile_targets(self, targets, c):
        return targets if callable(targets) else tf.tile(targets, [c])

    def __call__(self, images, targets=None, *, batch_size: int | None = None) -> Explanation:
        """Explain a batch; see :meth:`keras_gradcam.base.BaseCAM.__call__` for the arguments.

        Returns
        -------
        Explanation
            With ``extras["channel_weights"]``, the ``(n_samples, channels)`` weights of the map
            (0 for channels that were not perturbed or were skipped).
        """
        x, t, n, bs = self._prepare(images, targets, batch_size)
        self._begin()
        size = self._out_size(x)
        clean = self._clean_function(x, t)
        if not callable(t):
            check_range(t, self._num_classes)
        k = int(self._acts_shape()[-1])
        count = self._num_perturbed(k)
        samples, chunk = plan_passes(n, count, bs)
        block = samples * max(1, bs // samples)  # samples per clean pass (at most batch_size images)
        perturbed = self._perturbed_function(x, t, size, chunk)
        group = chunk * PASSES_PER_CALL
        passes = math.ceil(n / samples) * math.ceil(count / chunk)
        bar = keras.utils.Progbar(passes, verbose=self.verbose, unit_name="pass")
        parts = []
        for i in range(0, n, block):
            xblock = _map(lambda a: tf.convert_to_tensor(a[i : i + block]), x)
            m = int(_flat(xblock)[0].shape[0])
            tblock = np.full((m,), -1, np.int32) if callable(t) else t[i : i + block]
            acts_all, tgt, scores, preds = clean(xblock, tblock)
            channels_all = self._select_channels(acts_all, count)
            got, ok = [], []
            for j in range(0, m, samples):
                xb = _map(lambda a: a[j : j + samples], xblock)
                acts, channels, tb = acts_all[j : j + samples], channels_all[j : j + samples], tgt[j : j + samples]
                scs, vas = [], []
                sizes = [min(group, count - s) for s in range(0, count, group)]
                for part, width in zip(tf.split(channels, sizes, axis=1), sizes):
                    sc, va = perturbed(xb, acts, part, tb)
                    scs.append(sc)
                    vas.append(va)
                    bar.add(math.ceil(width / chunk))
                got.append(tf.transpose(tf.concat(scs, axis=0)))  # (samples, count)
                ok.append(tf.transpose(tf.concat(vas, axis=0)))
            raw, valid = tf.concat(got, axis=0).numpy(), tf.concat(ok, axis=0).numpy()
            weights = np.zeros((m, k), np.float32)  # 0 for channels not perturbed
            np.put_along_axis(weights, channels_all.numpy(), self._weights(scores.numpy(), raw, valid), axis=1)
            layer_map = weighted_sum(acts_all, tf.constant(weights))
            layer_map = tf.nn.relu(layer_map) if self.relu else layer_map
            heat = normalize(resize(layer_map, size))
            parts.append([a.numpy() for a in (heat, layer_map, tgt, scores, preds)] + [weights])
        self._finish()
        *outputs, weights = (np.concatenate(p) for p in zip(*parts))
        return self._explanation(t, *outputs, extras={"channel_weights": weights})


class ScoreCAM(_ChannelPerturbation):
    r"""Score-CAM: each channel weighted by the model's confidence on the input masked by it.

    Gradient-free: every channel of the layer, upsampled and min-max scaled to [0, 1], is used as
    a soft mask on the input; the more the masked image alone convinces the model of the target
    class, the larger the channel's weight.

    Parameters
    ----------
    model, layer, output, score, batch_size
        See :class:`~keras_gradcam.base.BaseCAM`. ``batch_size`` bounds the number of masked images
        in one forward pass. ``counterfactual`` is not supported (no gradients).
    weights : {"probability", "channel-softmax"}, default="probability"
        ``"probability"`` (official code, paper section 3.2): the post-softmax probability of the
        target class on the masked input. If the explained output already ends in a softmax or a
        sigmoid (``score="output"`` on such a model) it is used as it is; otherwise the head's own
        link is applied to the logits, never twice: its sigmoid for a sigmoid head (multi-label,
        or a one-unit binary classifier), else a softmax over the class axis.
        ``"channel-softmax"`` (paper Algorithm 1): a softmax over channels of the explained score
        (the logit by default) on the masked inputs; the baseline term of Algorithm 1 cancels in
        that softmax.
    max_channels : int, optional
        "Faster Score-CAM": perturb only the ``max_channels`` channels with the largest spatial
        standard deviation in each sample; the others get weight 0.
    verbose : {0, 1, 2}, default=1
        ``keras.utils.Progbar`` over the forward passes; 0 is silent.

    Returns
    -------
    Explanation
        ``extras["channel_weights"]`` holds the ``(n_samples, channels)`` weights.

    Raises
    ------
    ValueError
        Unknown ``weights``, ``max_channels < 1``, ``counterfactual=True``, a model without an
        image input of the heatmap's size to mask, or one that takes integer token ids (an integer
        input, or an ``Embedding`` reading an input): a masked token id is another token.
        Ablation-CAM perturbs the layer instead and works on such models.

    Notes
    -----
    With :math:`H^k = s(\mathrm{Up}(A^k))`, :math:`s` the per-map min-max to [0, 1] (upsample
    *then* normalise), and the masked input :math:`X \circ H^k` (the preprocessed input, so masked
    pixels become 0):

    .. math:: \alpha^c_k = \mathrm{softmax}\big(f(X \circ H^k)\big)_c,\qquad
              L^c = \mathrm{ReLU}\Big(\sum_k \alpha^c_k A^k\Big)

    Channels whose upsampled map is constant (``max - min <= 1e-8``) are skipped (weight 0), as
    in the official code. With a callable target the weight is the callable's score on the masked
    input (``"probability"``) or its softmax over channels (``"channel-softmax"``). The map is
    computed at layer resolution, then upsampled (the official code sums upsampled maps; the two
    differ only by the order of the ReLU and the interpolation). Cost: one forward pass plus
    ``K`` (or ``max_channels``) forward passes per sample, no backward pass.

    References
    ----------
    H. Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural
    Networks", CVPR Workshops 2020, arXiv:1910.01279, Eq. 7-9 and Algorithm 1.

    Examples
    --------
    >>> cam = ScoreCAM(model, layer="conv2d_1", max_channels=64, verbose=0)   # doctest: +SKIP
    >>> exp = cam(images)                                                     # doctest: +SKIP
    >>> exp.extras["channel_weights"].shape                                   # doctest: +SKIP
    (8, 128)
    """

    name = "scorecam"
    display_name = "Score-CAM"

    def __init__(self, model, layer=None, *, weights: str = "probability", max_channels: int | None = None, **kwargs):
        if weights not in SCORECAM_WEIGHTS:
            raise ValueError(f"weights must be one of {SCORECAM_WEIGHTS}; got {weights!r}.")
        self.weights = weights
        super().__init__(model, layer, max_channels=max_channels, **kwargs)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "weights": self.weights}

    def _setup(self, sample=None) -> None:
        super()._setup(sample)
        refuse_token_inputs(self.model, self.display_name, "multiplies the input by masks")

    def _perturbed_scores(self, xb, acts, channels, targets, size):
        c = tf.shape(channels)[1]
        maps = tf.gather(acts, channels, axis=-1, batch_dims=1)  # (B, *spatial, c)
        rank = maps.shape.rank
        maps = tf.transpose(maps, [rank - 1] + list(range(rank - 1)))  # (c, B, *spatial)
        maps = tf.reshape(maps, tf.concat([[-1], tf.shape(maps)[2:]], axis=0))  # (c * B, *spatial)
        first = self.layers[0].channels_first
        valid, found = None, []

        def one(a):
            nonlocal valid
            dims = tuple(a.shape[2:] if first else a.shape[1:-1])
            if a.shape.rank == len(size) + 2 and dims == tuple(size):
                masked, valid = _mask_images(a, maps, tuple(size), first)
                found.append(True)
                return masked
            return self._tile(a, c)

        masked = tf.nest.map_structure(one, xb)
        if not found:
            raise ValueError(
                f"Score-CAM masks image inputs of spatial size {tuple(size)} (the heatmap size), but the model "
                "has no such input; pass images shaped (n_samples, height, width, channels)."
            )
        cap = self._capture(masked, self._tile_targets(targets, c), gradients=False)
        if callable(targets) or self.weights == "channel-softmax":
            got = cap.scores
        else:
            out = tf.cast(cap.output, tf.float32)
            probs = self._capture.probabilities(out)
            got = tf.gather(probs, cap.targets, batch_dims=1)
        shape = tf.stack([c, -1])
        return tf.reshape(got, shape), tf.reshape(valid, shape)

    def _weights(self, clean_scores, scores, valid):
        if self.weights == "probability":
            return np.where(valid, scores, 0.0)
        logits = np.where(valid, scores, -np.inf)
        top = logits.max(axis=1, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        e = np.where(valid, np.exp(logits - top), 0.0)
        total = e.sum(axis=1, keepdims=True)
        return np.divide(e, total, out=np.zeros_like(e), where=total > 0)
