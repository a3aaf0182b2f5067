"""Targets of sequence and embedding outputs: one word of a caption, a whole answer, an image-text similarity.

A captioning or visual-question-answering model (KerasHub's ``PaliGemmaCausalLM``,
``Gemma3CausalLM``) outputs ``(batch, sequence, vocabulary)`` logits; with teacher forcing, the
logit of token ``w`` at position ``p`` is the evidence for ``w`` as the word after position
``p``. The Grad-CAM paper explains such a word, or the log-probability of a whole caption, with the
same map as a class ("structured outputs", Selvaraju et al. 2017, section 8).

- :class:`TokenTarget`: the logit (or log-probability) of one token at one position, per image or
  one for all;
- :class:`SequenceTarget`: the sum of the log-probabilities of a whole answer or caption (tokens,
  positions and a mask per image);
- :class:`SimilarityTarget`: the cosine similarity of an embedding output to a reference
  embedding (a face, a retrieval query, a text embedding: pytorch-grad-cam's "similarity to
  concept").

Each is a frozen dataclass: equal targets compare and hash equal, so an explainer traces one
compiled function for all of them. Each says its data as ``rows(n)`` (per-sample arrays, cut per
batch like the images) and ``shared()`` and scores a batch with ``score(outputs, rows, shared)``
(keras.ops graph code); called as ``target(outputs)`` it scores a batch that holds every sample.
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np

from . import backend
from .device import TARGET_ERROR, device_errors
from .targets import Target, pick_output

__all__ = ["TokenTarget", "SequenceTarget", "SimilarityTarget"]

_SCORES = ("logit", "log_prob")


def _ints(name: str, value) -> tuple | int:
    """``value`` as an int, or a tuple of ints (one per image), or a nested tuple (one row per image)."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu" or arr.size == 0:
        raise TypeError(f"{name} must be an int or a sequence of ints (one per image); got {value!r}.")
    if arr.ndim == 0:
        return int(arr)
    return tuple(map(tuple, arr.tolist())) if arr.ndim == 2 else tuple(int(v) for v in arr.tolist())


def _per_sample(name: str, value, n: int, dtype, ndim: int) -> np.ndarray:
    """``value`` (one for all, or one per sample) as an array of ``n`` rows."""
    arr = np.asarray(value, dtype)
    if arr.ndim == ndim - 1:
        return np.broadcast_to(arr, (n,) + arr.shape).copy()
    if arr.shape[0] != n:
        raise ValueError(
            f"{name} has {arr.shape[0]} rows but there are {n} images: give one for all images or one per image."
        )
    return arr


def _sequence_output(outputs, output, what: str):
    """The explained output as float32 ``(B, S, V)``, or an error that says what was expected."""
    out = pick_output(outputs, output)
    shape = tuple(out.shape)
    if len(shape) != 3:
        raise ValueError(
            f"{what} explains a (batch, sequence, vocabulary) output (a language model's logits), but the "
            f"explained output has shape {shape}. Pick the logits with output=<index or name>."
        )
    return keras.ops.cast(out, "float32"), shape


def _vocabulary(capture, output) -> int | None:
    """The vocabulary of the explained output as the model declares it (None where not static).

    Only the vocabulary: a model's declared sequence length can differ from its outputs' (KerasHub's
    Gemma3CausalLM declares the length of the sequence it was built with), so positions are checked
    with the output of each call.
    """
    try:
        shape = tuple(pick_output(capture.model.output, output).shape)  # the outputs nested as the model returns them
    except (AttributeError, TypeError, ValueError):
        return None  # no symbolic outputs (a subclassed model): nothing known before the call
    return shape[2] if len(shape) == 3 else None


def check_ids(what: str, tokens, positions, size, vocabulary) -> None:
    """Raise ``ValueError`` naming the valid range if a token id is not below ``vocabulary`` or a
    position is outside ``-size .. size - 1`` (a size that is None is not checked)."""
    tokens, positions = np.asarray(tokens), np.asarray(positions)
    if vocabulary is not None:
        vocabulary = int(vocabulary)
        bad = tokens[(tokens < 0) | (tokens >= vocabulary)]
        if bad.size:
            raise ValueError(
                f"{what}: a token id is not in the vocabulary: the explained output has {vocabulary} token ids, so ids "
                f"must be 0 .. {vocabulary - 1}; received token ids {sorted(set(bad.tolist()))}."
            )
    if size is not None:
        size = int(size)
        bad = positions[(positions < -size) | (positions >= size)]
        if bad.size:
            raise ValueError(
                f"{what}: a position is beyond the sequence: the explained output has {size} positions, so positions "
                f"must be {-size} .. {size - 1} (negative ones count from the end); received positions "
                f"{sorted(set(bad.tolist()))}."
            )


def _checked_on_host(what: str, tokens, positions, size, vocabulary) -> None:
    """:func:`check_ids` run while a compiled function runs: its message marked as a target's (see ``device_errors``)."""
    try:
        check_ids(what, tokens, positions, size, vocabulary)
    except ValueError as error:
        raise ValueError(f"{TARGET_ERROR}{error}") from None


def _values(what: str, out, tokens, positions, length):
    """``out[b, positions[b, k], tokens[b, k]]``: ``(B, K)`` for ``(B, K)`` tokens and positions.

    The ids are checked against the output's sizes with every call of the compiled function, on
    the host (``backend.on_host``): a compiled function is reused for targets of other tokens and
    positions, so a check while tracing would see only the first. Out-of-range ids are clipped,
    so that no backend's gather fails before the check's error is said.
    """
    positions = keras.ops.cast(positions, "int32")
    tokens = keras.ops.cast(tokens, "int32")
    shape = keras.ops.shape(out)
    size = shape[1] if length is None else length
    sizes = keras.ops.convert_to_tensor([size, shape[2]], "int32")
    tokens, positions, _ = backend.on_host(lambda t, p, s: _checked_on_host(what, t, p, s[0], s[1]), tokens, positions, sizes)
    positions = keras.ops.clip(keras.ops.where(positions < 0, positions + size, positions), 0, size - 1)
    tokens = keras.ops.clip(tokens, 0, shape[2] - 1)
    rows = keras.ops.take_along_axis(out, positions[:, :, None], axis=1)  # (B, K, V)
    return keras.ops.take_along_axis(rows, tokens[:, :, None], axis=2)[:, :, 0]


def _whole_batch(target, outputs, n: int):
    """``target``'s score of a batch that holds all ``n`` samples (the callable form)."""
    rows = {k: keras.ops.convert_to_tensor(v) for k, v in target.rows(n).items()}
    return target.score(outputs, rows, {})


def _broadcast(target, outputs, batch):
    """``target``'s score of a batch of ``batch`` samples, its data one for all."""
    rows = {k: keras.ops.broadcast_to(keras.ops.convert_to_tensor(v[:1]), (batch,) + v.shape[1:]) for k, v in target.rows(1).items()}
    return target.score(outputs, rows, {})


def _samples(target) -> int | None:
    """The number of samples the target's per-image data gives, or None when it is one for all."""
    for value in target._per_image():
        if isinstance(value, tuple):
            return len(value)
    return None


class _DataTarget(Target):
    """A :class:`~keras_gradcam.core.targets.Target` with equality, hashing, ``repr`` and immutability
    from the values in ``_fields``; ``target(outputs)`` scores a whole batch.

    (Not a dataclass: the targets' ``score=`` option would shadow the ``score`` method.)
    """

    _fields: tuple = ()

    def _values(self) -> tuple:
        return tuple(getattr(self, "_" + f) for f in self._fields)

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other._values() == self._values()

    def __hash__(self) -> int:
        return hash((type(self), self._values()))

    def __repr__(self) -> str:
        args = ", ".join(f"{f}={v!r}" for f, v in zip(self._fields, self._values()))
        return f"{type(self).__name__}({args})"

    def describe(self) -> str:
        return repr(self)

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is immutable; make a new one.")

    def _set(self, **values) -> None:
        for name, value in values.items():
            object.__setattr__(self, "_" + name, value)

    def __call__(self, outputs):
        """The ``(B,)`` scores of a batch holding every sample (per-image data) or any batch (one for all)."""
        n = _samples(self)
        with device_errors():  # a check of the ids on the host, said as the ValueError it is
            if n is None:
                flat = keras.tree.flatten(outputs)
                return _broadcast(self, outputs, keras.ops.shape(flat[0])[0])
            return _whole_batch(self, outputs, n)


class TokenTarget(_DataTarget):
    """The logit (or log-probability) of token ``token`` at sequence position ``position``.

    For a ``(batch, sequence, vocabulary)`` output: ``score_b = out[b, position_b, token_b]``, or
    with ``score="log_prob"`` the log-softmax over the vocabulary at that position. With a causal
    language model fed the caption (teacher forcing), position ``p`` scores the token after ``p``:
    to explain the word at index ``i`` of ``token_ids``, pass ``token=token_ids[i]`` and
    ``position=i - 1``.

    Equal targets compare and hash equal; all token targets of one output and score share one
    compiled function (the token and position are data).

    Parameters
    ----------
    token : int or sequence of int
        The token id, one for all images or one per image.
    position : int or sequence of int, default=-1
        The sequence position, one for all images or one per image; negative positions count from
        the end (``-1``: the last position).
    score : {"logit", "log_prob"}, default="logit"
        The raw logit, or its log-softmax over the vocabulary (which also lowers the other tokens).
    output : int or str, optional
        Which output of a multi-output model (None: the only one).

    Raises
    ------
    ValueError
        A token id beyond the vocabulary or a position beyond the sequence (named with the valid
        range), an output that is not ``(batch, sequence, vocabulary)``, or per-image values whose
        number is not the number of images.

    Examples
    --------
    >>> t = TokenTarget(7, -1, score="log_prob")
    >>> t == TokenTarget(7, -1, score="log_prob"), hash(t) == hash(TokenTarget(7, -1, score="log_prob"))
    (True, True)
    """

    _fields = ("token", "position", "score", "output")

    def __init__(self, token, position=-1, score: str = "logit", output: int | str | None = None):
        token, position = _ints("TokenTarget's token", token), _ints("TokenTarget's position", position)
        for name, value in (("token", token), ("position", position)):
            if isinstance(value, tuple) and isinstance(value[0], tuple):
                raise ValueError(f"TokenTarget's {name} is one int per image; for several tokens per image use SequenceTarget.")
        if isinstance(token, tuple) and isinstance(position, tuple) and len(token) != len(position):
            raise ValueError(f"TokenTarget has {len(token)} tokens but {len(position)} positions: give one of each per image.")
        if score not in _SCORES:
            raise ValueError(f"TokenTarget's score must be one of {_SCORES}; got {score!r}.")
        self._set(token=token, position=position, score=score, output=output)

    token = property(lambda self: self._token)
    position = property(lambda self: self._position)
    output = property(lambda self: self._output)

    @property
    def key(self) -> tuple:
        """What the compiled function depends on: the kind of score and the output, not the token or position."""
        return (TokenTarget, self._score, self._output)

    def _per_image(self) -> tuple:
        return (self._token, self._position)

    def rows(self, n: int) -> dict[str, np.ndarray]:
        return {
            "token": _per_sample("TokenTarget's token", self._token, n, np.int32, 1),
            "position": _per_sample("TokenTarget's position", self._position, n, np.int32, 1),
        }

    def shared(self) -> dict[str, np.ndarray]:
        return {}

    def check(self, n: int, capture) -> None:
        """The token ids against the output's vocabulary where the model declares it, before anything is traced."""
        check_ids("TokenTarget", self.rows(n)["token"], [], None, _vocabulary(capture, self._output))

    def score(self, outputs, rows: Mapping, shared: Mapping, capture=None):
        """Graph code: the ``(B,)`` scores of a batch, ``rows`` its per-sample ``token`` and ``position``."""
        out, shape = _sequence_output(outputs, self._output, "TokenTarget")
        if self._score == "log_prob":
            out = keras.ops.log_softmax(out, axis=-1)
        return _values("TokenTarget", out, rows["token"][:, None], rows["position"][:, None], shape[1])[:, 0]


class SequenceTarget(_DataTarget):
    """The summed log-probability of a whole answer or caption: ``sum_k mask_k log p(token_k | position_k)``.

    Parameters
    ----------
    tokens : sequence of int, or array of shape (n_images, length)
        The answer's token ids, one sequence for all images or one per image.
    positions : sequence of int, or array of shape (n_images, length)
        The position whose output scores each token (negative: from the end); with teacher
        forcing, the position before the token's own.
    mask : sequence of 0/1, or array of shape (n_images, length), optional
        Which of the ``length`` tokens count (answers of different lengths padded to one length);
        all of them by default.
    score : {"log_prob", "logit"}, default="log_prob"
    output : int or str, optional

    See Also
    --------
    SequenceTarget.from_response : the target of a causal LM's response, from ``token_ids`` and
        ``response_mask`` as KerasHub's preprocessors give them.
    """

    _fields = ("tokens", "positions", "mask", "score", "output")

    def __init__(self, tokens, positions, mask=None, score: str = "log_prob", output: int | str | None = None):
        tokens = _ints("SequenceTarget's tokens", tokens)
        positions = _ints("SequenceTarget's positions", positions)
        if isinstance(tokens, int) or isinstance(positions, int):
            raise TypeError("SequenceTarget's tokens and positions are sequences (one id/position per word); for one word use TokenTarget.")
        if np.shape(tokens) != np.shape(positions):
            raise ValueError(
                f"SequenceTarget's tokens have shape {np.shape(tokens)} but its positions {np.shape(positions)}: "
                "give one position per token."
            )
        if mask is not None:
            arr = np.asarray(mask)
            if arr.shape != np.shape(tokens) or not np.isin(arr, (0, 1)).all():
                raise ValueError(f"SequenceTarget's mask must be 0/1 of the tokens' shape {np.shape(tokens)}; got shape {arr.shape}.")
            mask = tuple(map(tuple, arr.astype(int).tolist())) if arr.ndim == 2 else tuple(int(v) for v in arr.tolist())
        if score not in _SCORES:
            raise ValueError(f"SequenceTarget's score must be one of {_SCORES}; got {score!r}.")
        self._set(tokens=tokens, positions=positions, mask=mask, score=score, output=output)

    @classmethod
    def from_response(cls, token_ids, response_mask, score: str = "log_prob", output=None) -> SequenceTarget:
        """The teacher-forced target of a causal LM's response: token ``i`` scored at position ``i - 1``.

        ``token_ids`` and ``response_mask`` are ``(n_images, sequence)`` (KerasHub's
        ``*CausalLMPreprocessor`` gives them, the mask 1 on the answer's tokens).
        """
        ids, mask = np.asarray(token_ids), np.asarray(response_mask).astype(int)
        if ids.ndim != 2 or ids.shape != mask.shape:
            raise ValueError(f"token_ids and response_mask must both be (n_images, sequence); got {ids.shape} and {mask.shape}.")
        positions = np.broadcast_to(np.arange(ids.shape[1] - 1), (ids.shape[0], ids.shape[1] - 1))
        return cls(ids[:, 1:], positions, mask[:, 1:], score=score, output=output)

    tokens = property(lambda self: self._tokens)
    positions = property(lambda self: self._positions)
    mask = property(lambda self: self._mask)
    output = property(lambda self: self._output)

    @property
    def key(self) -> tuple:
        return (SequenceTarget, self._score, self._output)

    def _per_image(self) -> tuple:
        return tuple(v for v in (self._tokens, self._positions, self._mask) if v is not None and isinstance(v[0], tuple))

    def rows(self, n: int) -> dict[str, np.ndarray]:
        mask = np.ones(np.shape(self._tokens), np.float32) if self._mask is None else self._mask
        return {
            "tokens": _per_sample("SequenceTarget's tokens", self._tokens, n, np.int32, 2),
            "positions": _per_sample("SequenceTarget's positions", self._positions, n, np.int32, 2),
            "mask": _per_sample("SequenceTarget's mask", mask, n, np.float32, 2),
        }

    def shared(self) -> dict[str, np.ndarray]:
        return {}

    def check(self, n: int, capture) -> None:
        """The token ids against the output's vocabulary where the model declares it, before anything is traced."""
        check_ids("SequenceTarget", self.rows(n)["tokens"], [], None, _vocabulary(capture, self._output))

    def score(self, outputs, rows: Mapping, shared: Mapping, capture=None):
        """Graph code: the ``(B,)`` summed scores of a batch."""
        out, shape = _sequence_output(outputs, self._output, "SequenceTarget")
        if self._score == "log_prob":
            out = keras.ops.log_softmax(out, axis=-1)
        values = _values("SequenceTarget", out, rows["tokens"], rows["positions"], shape[1])
        return keras.ops.sum(values * keras.ops.cast(rows["mask"], "float32"), axis=1)


class SimilarityTarget(_DataTarget):
    """The cosine similarity of an embedding output to a reference embedding: ``<e_b, r> / (|e_b| |r|)``.

    For embedding models (faces, retrieval, an image tower's projection): the map shows where the
    image looks like the reference (pytorch-grad-cam's "similarity to concept").

    Parameters
    ----------
    reference : sequence of float, or array of shape (dim,) or (n_images, dim)
        One reference for all images or one per image.
    output : int or str, optional
        Which output holds the ``(batch, dim)`` embeddings.
    """

    _fields = ("reference", "output")

    def __init__(self, reference, output: int | str | None = None):
        arr = np.asarray(reference, np.float64)
        if arr.ndim not in (1, 2) or arr.size == 0 or not np.isfinite(arr).all():
            raise ValueError(f"SimilarityTarget's reference must be finite, of shape (dim,) or (n_images, dim); got shape {arr.shape}.")
        if (np.linalg.norm(arr, axis=-1) == 0).any():
            raise ValueError("SimilarityTarget's reference has a zero vector, whose cosine similarity is undefined.")
        ref = tuple(map(tuple, arr.tolist())) if arr.ndim == 2 else tuple(arr.tolist())
        self._set(reference=ref, output=output)

    reference = property(lambda self: self._reference)
    output = property(lambda self: self._output)

    @property
    def key(self) -> tuple:
        return (SimilarityTarget, self._output)

    def _per_image(self) -> tuple:
        return (self._reference,) if isinstance(self._reference[0], tuple) else ()

    def rows(self, n: int) -> dict[str, np.ndarray]:
        return {"reference": _per_sample("SimilarityTarget's reference", self._reference, n, np.float32, 2)}

    def shared(self) -> dict[str, np.ndarray]:
        return {}

    def score(self, outputs, rows: Mapping, shared: Mapping, capture=None):
        """Graph code: the ``(B,)`` cosine similarities."""
        out = pick_output(outputs, self._output)
        dim = np.shape(self._reference)[-1]
        if len(out.shape) != 2 or out.shape[-1] not in (None, dim):
            raise ValueError(
                f"SimilarityTarget compares a (batch, {dim}) embedding with its reference of {dim} values, but "
                f"the explained output has shape {tuple(out.shape)}. Pick the embedding with output=<index or name>."
            )
        out = keras.ops.cast(out, "float32")
        ref = keras.ops.cast(rows["reference"], "float32")
        norms = keras.ops.sqrt(keras.ops.sum(out * out, axis=-1) + 1e-12) * keras.ops.sqrt(keras.ops.sum(ref * ref, axis=-1))
        return keras.ops.sum(out * ref, axis=-1) / norms
