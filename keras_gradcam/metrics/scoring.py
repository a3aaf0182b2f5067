"""The model side of the model metrics: target-class scores of perturbed images, in compiled batches.

:class:`Scorer` runs a model on images and on perturbed copies of them (pixels deleted or
inserted in order, windows occluded), the perturbed images built inside the compiled function so
that nothing loops over pixels in Python. Its functions are compiled and cached by the engine's
one compile-and-cache step, :func:`keras_gradcam.core.cache.compile_cached`, under the capture's
interception (:meth:`keras_gradcam.core.capture.Capture.active`), which computes logits for
softmax and sigmoid heads on the fly without modifying the model. :func:`make_substrate` builds
what replaces the perturbed pixels.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from ..core.cache import FunctionCache, compile_cached
from ..core.capture import Capture
from ..core.inputs import signature, signature_key
from ..core.targets import check_range, resolve_targets
from ..core.validate import one_of
from .arrays import as_images
from .stats import gaussian_blur

__all__ = ["SCORES", "Scorer", "scorer_for", "rows_as_probabilities", "check_probability_output", "make_substrate"]

#: Score spaces the model metrics accept (``score=``).
SCORES: tuple[str, ...] = ("probability", "logit", "output")


class Scorer:
    """Compiled forward passes of a model returning target-class scores in one score space.

    Parameters
    ----------
    model : keras.Model
        Single-input image classifier; never modified.
    score : {"probability", "logit", "output"}, default="probability"
        The score space (see :mod:`keras_gradcam.metrics`).
    output : int or str, optional
        Output of a multi-output model.

    Notes
    -----
    Every function is traced once per image shape (``None`` batch dimension) and kept in a
    :class:`~keras_gradcam.core.cache.FunctionCache`; :func:`keras_gradcam.evaluate` shares one
    scorer between all metrics and methods.
    """

    def __init__(self, model: keras.Model, score: str = "probability", output=None):
        if not isinstance(model, keras.Model):
            raise TypeError(f"model must be a keras.Model; got {type(model).__module__}.{type(model).__name__}.")
        self.model = model
        self.score = one_of("score", score, SCORES)
        self.output = output
        self._capture: Capture | None = None
        self._fns = FunctionCache()

    # graph code ------------------------------------------------------------------------------
    def _scores(self, x, targets):
        cap = self._capture(x, targets, gradients=False)
        out = tf.cast(cap.output, tf.float32)
        if self.score == "probability":
            if self._capture.link is None and self._capture.logits:
                out = rows_as_probabilities(out)  # link unknown: maybe probabilities already
            else:
                out = self._capture.probabilities(out)
        return tf.gather(out, cap.targets, batch_dims=1), cap.targets

    def _compile(self, name: str, x: np.ndarray, body, sig: list):
        """``body`` compiled for images shaped like ``x``, once per (name, image signature)."""
        return compile_cached(self._fns, (name, signature_key(x)), body, sig, lambda: [self._capture.active()])

    def _setup(self, x: np.ndarray) -> None:
        if self._capture is None:
            if not (self.model.built and getattr(self.model, "inputs", None)):
                self.model(x[:1], training=False)
            capture = Capture(self.model, [], output=self.output, score="output" if self.score == "output" else "logit")
            if self.score == "probability":
                check_probability_output(self.model, capture, x)
            self._capture = capture

    # host code -------------------------------------------------------------------------------
    def predict(self, x: np.ndarray, targets, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores ``(N,)`` and classes ``(N,)`` of float32 images ``x``; ``targets`` None/-1 = top-1 class."""
        self._setup(x)
        if callable(targets):
            raise TypeError("metrics score class indices; pass None, an int or one int per image as targets.")
        fn = self._compile("predict", x, self._scores, [signature(x), tf.TensorSpec([None], tf.int32)])
        t = resolve_targets(targets, x.shape[0])
        check_range(t, self._capture.num_classes())
        scores, classes = [], []
        for i in range(0, x.shape[0], batch_size):
            s, c = fn(x[i : i + batch_size], t[i : i + batch_size])
            scores.append(s.numpy())
            classes.append(c.numpy())
        return np.concatenate(scores), np.concatenate(classes).astype(np.int64)

    def curves(self, start, end, rank, counts, classes, batch_size: int) -> np.ndarray:
        """Scores ``(N, len(counts))``: image ``where(rank < count, end, start)`` per count."""
        n, h, w, c = start.shape

        def body(s, e, r, k, t):
            b, m = tf.shape(s)[0], tf.shape(k)[0]
            changed = r[:, None, :, :] < k[None, :, None, None]  # (b, m, h, w)
            x = tf.where(changed[..., None], e[:, None], s[:, None])
            scores, _ = self._scores(tf.reshape(x, [b * m, h, w, c]), tf.repeat(t, m))
            return tf.reshape(scores, [b, m])

        img = signature(start)
        sig = [img, img, tf.TensorSpec((None, h, w), tf.int32), tf.TensorSpec([None], tf.int32),
               tf.TensorSpec([None], tf.int32)]
        fn = self._compile("curves", start, body, sig)
        return self._run(fn, (start, end, rank.astype(np.int32)), np.asarray(counts, np.int32), classes, batch_size)

    def occlusions(self, x, windows, fill, classes, batch_size: int) -> np.ndarray:
        """Scores ``(N, n_windows)`` with each window ``(y0, x0, y1, x1)`` set to ``fill``."""
        n, h, w, c = x.shape

        def body(xb, fb, win, t):
            b, m = tf.shape(xb)[0], tf.shape(win)[0]
            yy = tf.range(h)[None, :, None]
            xx = tf.range(w)[None, None, :]
            y0, x0, y1, x1 = (win[:, i, None, None] for i in range(4))
            inside = (yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)  # (m, h, w)
            xo = tf.where(inside[None, ..., None], fb[:, None], xb[:, None])
            scores, _ = self._scores(tf.reshape(xo, [b * m, h, w, c]), tf.repeat(t, m))
            return tf.reshape(scores, [b, m])

        img = signature(x)
        sig = [img, img, tf.TensorSpec((None, 4), tf.int32), tf.TensorSpec([None], tf.int32)]
        fn = self._compile("occlusion", x, body, sig)
        return self._run(fn, (x, fill), np.asarray(windows, np.int32), classes, batch_size)

    @staticmethod
    def _run(fn, samples: tuple, variants: np.ndarray, classes: np.ndarray, batch_size: int) -> np.ndarray:
        """``fn(*samples, variants, classes) -> (b, m)`` over every (sample, variant) pair.

        About ``batch_size`` perturbed images per call: several samples with all their variants
        when the variants fit, else one sample with a chunk of its variants.
        """
        classes = classes.astype(np.int32)
        n, m = classes.shape[0], variants.shape[0]
        out = np.empty((n, m), np.float32)
        if m <= batch_size:
            per = max(1, batch_size // m)
            for i in range(0, n, per):
                sl = slice(i, i + per)
                out[sl] = fn(*(a[sl] for a in samples), variants, classes[sl]).numpy()
            return out
        for i in range(n):
            sl = slice(i, i + 1)
            for j in range(0, m, batch_size):
                out[i, j : j + batch_size] = fn(*(a[sl] for a in samples), variants[j : j + batch_size], classes[sl]).numpy()[0]
        return out


def rows_as_probabilities(out: tf.Tensor) -> tf.Tensor:
    """``(B, classes)`` rows that are already probabilities kept as they are, the others softmaxed.

    A row is a probability when it is non-negative and sums to 1 within ``1e-4`` (a softmax the
    head detection could not see, e.g. one followed by an identity layer): a second softmax
    would flatten it.
    """
    is_prob = tf.reduce_all(out >= 0.0, axis=-1) & (tf.abs(tf.reduce_sum(out, axis=-1) - 1.0) <= 1e-4)
    return tf.where(is_prob[:, None], out, tf.nn.softmax(out, axis=-1))


def check_probability_output(model: keras.Model, capture: Capture, x: np.ndarray) -> None:
    """Refuse ``score="probability"`` where the explained output is no class probability.

    A softmax or sigmoid head gives probabilities; without one, only a ``(B, classes >= 2)``
    output can be turned into probabilities by a softmax (a softmax over one unit is always 1).
    """
    if capture.link is not None:
        return
    k = capture.num_classes()
    shape = None
    if k is None:  # not known from the symbolic outputs (subclassed model): one forward pass
        out = capture.select(model(x[:1], training=False))
        shape = tuple(out.shape)
        k = int(shape[-1]) if shape is not None and len(shape) == 2 else None
    else:
        shape = (None, k)
    if k is None or k < 2:
        what = "its shape could not be read" if shape is None else f"it has shape {('B',) + tuple(shape[1:])}"
        raise ValueError(
            f"score='probability': the output of model {getattr(model, 'name', type(model).__name__)!r} is not a "
            f"class probability: it ends in no softmax or sigmoid and {what}, not (batch, classes >= 2), so a "
            "softmax over it would be meaningless (over one unit it is "
            "always 1.0, and every metric would be constant). Pass score='output' to score the output as it is "
            "(e.g. a regression value or a probability the library cannot recognise), or score='logit'."
        )


def scorer_for(model, score: str, output) -> Scorer:
    """A fresh :class:`Scorer` of ``model``, or ``model`` itself when it is one.

    :func:`keras_gradcam.evaluate` passes one scorer to every metric, so that all of them share
    its compiled functions.
    """
    if isinstance(model, Scorer):
        if score != model.score:
            raise ValueError(f"internal: scorer in {model.score!r} space asked for {score!r}.")
        return model
    return Scorer(model, score, output)


def make_substrate(substrate, x: np.ndarray, blur_kernel: int, blur_sigma: float) -> np.ndarray:
    """What replaces perturbed pixels of the images ``x``, as an array shaped like them.

    ``substrate`` is a number, a ``(channels,)`` colour or an image-shaped array (broadcast),
    ``"blur"`` (:func:`~keras_gradcam.metrics.stats.gaussian_blur` with ``blur_kernel`` and
    ``blur_sigma``) or a callable ``images -> array``.
    """
    if isinstance(substrate, str):
        if substrate != "blur":
            raise ValueError(f"substrate must be a number, an array, 'blur' or a callable; got {substrate!r}.")
        return gaussian_blur(x, blur_kernel, blur_sigma)
    if callable(substrate):
        return as_images(substrate(x), x.shape[:3], name="substrate(images)")
    s = np.asarray(substrate, np.float32)
    try:
        return np.ascontiguousarray(np.broadcast_to(s, x.shape))
    except ValueError:
        raise ValueError(
            f"substrate of shape {s.shape} does not broadcast to images of shape {x.shape}; give a number, a "
            "(channels,) colour, an array shaped like the images, 'blur' or a callable images -> array."
        ) from None
