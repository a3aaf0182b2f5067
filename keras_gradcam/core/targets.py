"""What is explained, as data: one target type for class indices, target objects and callables.

Every ``targets=`` an explainer accepts (None, an int, one int per sample, a :class:`ClassTarget`,
an :class:`OutputTarget`, a dense-prediction target, any callable ``outputs -> (N,)``) becomes a
:class:`Target` (:func:`as_target`), which says

* ``key``: what the compiled function depends on (equal keys trace one function);
* ``rows(n)``: per-sample data, a dict of arrays with leading axis ``n`` (class indices, ``-1``
  for the sample's top-1 class; per-image masks, boxes), cut per batch like the images;
* ``shared()``: data given whole to every batch (one mask for all images; the numbers a
  ``lambda`` captures);
* ``score(outputs, rows, shared, capture)``: graph code, the ``(B,)`` scores of a batch.

So every kind of target goes through batching the same way (``batch_size`` is free for per-image
masks), and a new target whose key is not new (``ClassTarget(k)`` for another ``k``; the same
``lambda out, k=k: out[:, k]`` with another ``k``) reuses the compiled function.

In graph code a target travels with its data as a :class:`TargetBatch`.
"""

from __future__ import annotations

import hashlib
import inspect
import numbers
import re
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Union

import keras
import numpy as np

from .validate import ClassIndexError

Targets = Union[None, int, Sequence[int], np.ndarray, Callable]  # noqa: UP007 - a runtime alias

__all__ = [
    "Target",
    "TargetBatch",
    "ClassIndices",
    "CallableTarget",
    "ClassTarget",
    "OutputTarget",
    "as_target",
    "resolve_targets",
    "class_scores",
    "check_range",
    "pick_output",
    "data_key",
    "digest",
    "batch_of",
    "check_rows",
    "BoundTarget",
    "Negated",
    "replacement",
]


class Target:
    """Base of every target: a static ``key``, per-sample ``rows``, ``shared`` data and a ``score``.

    Subclasses override :meth:`score` (graph code, keras.ops) and, where they hold data,
    :meth:`rows`, :meth:`shared` and :attr:`key`. See the module docstring.
    """

    #: whether the explained quantity is a class per sample (``Explanation.targets`` reports it)
    names_classes: ClassVar[bool] = False

    @property
    def key(self) -> Any:
        """Hashable: targets with equal keys (and data of equal shapes) share a compiled function."""
        return (type(self),)

    def rows(self, n: int) -> dict[str, np.ndarray]:
        """Per-sample data for ``n`` samples, each array with leading axis ``n``."""
        return {}

    def shared(self) -> dict[str, np.ndarray]:
        """Data passed whole to every batch."""
        return {}

    def check(self, n: int, capture) -> None:
        """Host-side checks before anything is traced (``capture`` is the explainer's capture)."""

    def score(self, outputs, rows: Mapping, shared: Mapping, capture):
        """Graph code: the ``(B,)`` scores of a batch from the model's outputs."""
        raise NotImplementedError

    def classes(self, outputs, rows: Mapping, shared: Mapping, capture):
        """Graph code: the ``(B,)`` int32 class explained per sample, or None (not a class)."""
        return None

    def describe(self) -> str:
        return repr(self)


class TargetBatch:
    """A target with the tensors of one batch (graph code): what :class:`Capture` explains."""

    def __init__(self, target: Target, rows: Mapping | None = None, shared: Mapping | None = None):
        self.target, self.rows, self.shared = target, dict(rows or {}), dict(shared or {})

    @property
    def names_classes(self) -> bool:
        return self.target.names_classes

    def score(self, outputs, capture):
        return self.target.score(outputs, self.rows, self.shared, capture)

    def classes(self, outputs, capture):
        return self.target.classes(outputs, self.rows, self.shared, capture)

    def tile(self, k) -> TargetBatch:
        """The rows of ``k`` variants of each sample, variant-major (row ``j * B + b`` is sample ``b``)."""
        rows = {name: keras.ops.tile(r, [k] + [1] * (len(r.shape) - 1)) for name, r in self.rows.items()}
        return TargetBatch(self.target, rows, self.shared)

    def negated(self) -> TargetBatch:
        """The same target scoring ``-score`` (counterfactual explanations), its classes unchanged."""
        return TargetBatch(Negated(self.target), self.rows, self.shared)

    def with_classes(self, classes) -> TargetBatch:
        """Class targets with ``-1`` (top-1) replaced by the classes resolved on the clean inputs."""
        if not isinstance(self.target, ClassIndices):
            return self
        return TargetBatch(self.target, {"classes": classes}, self.shared)


class Negated(Target):
    """``-score`` of another target, with its classes (graph code; see :meth:`TargetBatch.negated`)."""

    def __init__(self, target: Target):
        self.target = target
        self.names_classes = target.names_classes

    @property
    def key(self):
        return (Negated, self.target.key)

    def score(self, outputs, rows, shared, capture):
        return -keras.ops.cast(self.target.score(outputs, rows, shared, capture), "float32")

    def classes(self, outputs, rows, shared, capture):
        return self.target.classes(outputs, rows, shared, capture)


def batch_of(targets) -> TargetBatch:
    """``targets`` as a :class:`TargetBatch`: as is, an int tensor of classes, or a plain callable."""
    if isinstance(targets, TargetBatch):
        return targets
    if callable(targets):
        return TargetBatch(targets if isinstance(targets, Target) else CallableTarget(targets, as_data=False))
    return TargetBatch(ClassIndices(), {"classes": targets})


def data_key(rows: Mapping, shared: Mapping) -> tuple:
    """What the compiled function's signature depends on in a target's data: names, dtypes, shapes."""
    return (
        tuple((k, v.dtype.str, v.shape[1:]) for k, v in sorted(rows.items())),
        tuple((k, v.dtype.str, v.shape) for k, v in sorted(shared.items())),
    )


# -- class indices -------------------------------------------------------------------------------
class ClassIndices(Target):
    """One class per sample (``-1``: the sample's top-1 class) of the explained output.

    What ``targets=None``, an int or a sequence of ints become. The output is the one
    :meth:`Capture.select` picks (a one-unit sigmoid as two classes).
    """

    names_classes = True

    def __init__(self, classes: np.ndarray | None = None):
        self._classes = classes

    def rows(self, n: int) -> dict[str, np.ndarray]:
        return {"classes": np.full((n,), -1, np.int32) if self._classes is None else self._classes}

    def check(self, n: int, capture) -> None:
        if self._classes is not None:
            check_range(self._classes, capture.num_classes())

    def score(self, outputs, rows, shared, capture):
        return class_scores(capture.select(outputs), rows["classes"])[0]

    def classes(self, outputs, rows, shared, capture):
        return class_scores(capture.select(outputs), rows["classes"])[1]

    def __repr__(self) -> str:
        return "ClassIndices(top-1)" if self._classes is None else f"ClassIndices({self._classes.tolist()})"


@dataclass(frozen=True)
class ClassTarget(Target):
    """The score of class ``index`` of one output, as a reusable target object.

    All class targets of one output share one compiled function: the index is passed to it as
    data. For one class of a single-output classifier an int target (``targets=3``) does the
    same; a target object is for multi-output models, or to keep one object for a loop.

    Parameters
    ----------
    index : int
        The class.
    output : int or str, optional
        Which output of a multi-output model (position in flatten order, or name of a dict
        output); None for a single-output model.

    Examples
    --------
    >>> t = ClassTarget(2, output=1)
    >>> t == ClassTarget(2, output=1), hash(t) == hash(ClassTarget(2, output=1))
    (True, True)
    """

    index: int
    output: int | str | None = None

    @property
    def key(self):
        return (ClassTarget, self.output)

    def rows(self, n: int) -> dict[str, np.ndarray]:
        return {"index": np.full((n,), int(self.index), np.int32)}

    def check(self, n: int, capture) -> None:
        if isinstance(self.index, bool) or not isinstance(self.index, numbers.Integral):
            raise TypeError(f"ClassTarget's index must be an int class index; got {self.index!r}.")
        if self.index < 0:
            raise ClassIndexError(f"ClassTarget's index must be >= 0; got {self.index}.")
        try:
            out = pick_output(list(capture.model.outputs), self.output)
        except (AttributeError, TypeError, ValueError):
            return  # no symbolic outputs (a subclassed model): nothing to check against
        shape = tuple(out.shape)
        if len(shape) >= 2 and shape[1] is not None:
            check_range(np.asarray([self.index]), int(shape[1]))

    def score(self, outputs, rows, shared, capture):
        out = pick_output(outputs, self.output)
        return keras.ops.take_along_axis(out, keras.ops.reshape(rows["index"], [-1] + [1] * (len(out.shape) - 1)), axis=1)[:, 0]

    def __call__(self, outputs):
        return pick_output(outputs, self.output)[:, self.index]


@dataclass(frozen=True)
class OutputTarget(Target):
    """Reduce one output to a score per sample: its sum (``reduce="sum"``) or mean over all but the batch axis.

    For regression heads, segmentation logits summed over the image, or one output of a
    multi-output model. Equal targets share one compiled function, like :class:`ClassTarget`.

    Parameters
    ----------
    output : int or str, optional
        Which output (None for a single-output model).
    reduce : {"sum", "mean"}, default="sum"
    """

    output: int | str | None = None
    reduce: str = "sum"

    def __post_init__(self):
        if self.reduce not in ("sum", "mean"):
            raise ValueError(f"reduce must be 'sum' or 'mean'; got {self.reduce!r}.")

    @property
    def key(self):
        return (OutputTarget, self.output, self.reduce)

    def score(self, outputs, rows, shared, capture):
        return self(outputs)

    def __call__(self, outputs):
        out = keras.ops.cast(pick_output(outputs, self.output), "float32")
        axes = list(range(1, len(out.shape)))
        if not axes:
            return out
        return keras.ops.sum(out, axis=axes) if self.reduce == "sum" else keras.ops.mean(out, axis=axes)


# -- any callable ----------------------------------------------------------------------------------
_SCALARS = (bool, int, float, np.bool_, np.integer, np.floating)


def _as_data(value) -> np.ndarray | None:
    """A captured number (or numeric array) as an array to pass as data, None if it is not one.

    Floats become float32 and ints int32 (int64 beyond its range), as TensorFlow converts a
    Python number or a NumPy array meeting a float32 tensor.
    """
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        if value.dtype.kind == "f":
            return value.astype(np.float32)
        if value.dtype.kind in "iu" and value.size and (value.min() < -(2**31) or value.max() >= 2**31):
            return value.astype(np.int64)
        return value.astype(np.int32) if value.dtype.kind in "iu" else value
    if isinstance(value, _SCALARS):
        if isinstance(value, (bool, np.bool_)):
            return np.asarray(bool(value))
        if isinstance(value, (int, np.integer)):
            v = int(value)
            return np.asarray(v, np.int32 if -(2**31) <= v < 2**31 else np.int64)
        return np.asarray(value, np.float32)
    return None


class _Same:
    """Hashes and compares by identity, and keeps the object alive while a key holds it."""

    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __eq__(self, other):
        return isinstance(other, _Same) and other.obj is self.obj

    def __hash__(self):
        return id(self.obj)


def _static(value):
    """A captured value as part of a key: itself when hashable, an array by its bytes, else by identity."""
    if isinstance(value, np.ndarray):
        return digest(value)
    try:
        hash(value)
    except TypeError:
        return _Same(value)
    if isinstance(value, (types.ModuleType, types.FunctionType, type)):
        return _Same(value)
    return value if isinstance(value, (str, bytes, tuple, frozenset, type(None), *_SCALARS)) else _Same(value)


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


class CallableTarget(Target):
    """Any callable ``outputs -> (N,)`` scores, keyed by its code, its captured numbers passed as data.

    A plain function or ``lambda`` is keyed by its code object: the numbers it captures (int,
    float and bool default arguments, closure cells and module globals) are passed to the compiled
    function as data, so ``lambda out, k=k: out[:, k]`` in a loop over ``k`` traces once. Its other
    captured values (modules, arrays, objects) are part of the key by identity. Where the function
    needs a captured number as a Python value (``range(k)``, ``if flag:``), tracing with data
    fails and the target is traced again with the numbers as constants (:meth:`constants`), keyed
    by their values. Any other callable (an object with ``__call__``) is keyed by itself.
    """

    def __init__(self, fn: Callable, as_data: bool = True):
        self.fn = fn
        self._numbers: dict[str, Any] = {}  # "d0", "k:name", "c0", "g:name" -> captured number
        self._statics: list = []
        plain = isinstance(fn, types.FunctionType)
        self.as_data = bool(as_data and plain)
        if not plain:
            self._key = (CallableTarget, _static(fn))
            return
        code = fn.__code__
        slots = [(f"d{i}", v) for i, v in enumerate(fn.__defaults__ or ())]
        slots += [(f"k:{k}", v) for k, v in sorted((fn.__kwdefaults__ or {}).items())]
        slots += [(f"c{i}", _cell(c)) for i, c in enumerate(fn.__closure__ or ())]
        glob = fn.__globals__
        slots += [(f"g:{name}", glob[name]) for name in sorted(_global_names(code)) if name in glob]
        for slot, value in slots:
            data = _as_data(value) if self.as_data else None
            if data is not None:
                self._numbers[slot] = data
                self._statics.append((slot, data.dtype.str, data.shape))
            else:
                self._statics.append((slot, _static(value)))
        self._key = (CallableTarget, code, _Same(glob), self.as_data, tuple(self._statics))

    @property
    def key(self):
        return self._key

    def constants(self) -> CallableTarget:
        """The same callable with its captured numbers as Python values (keyed by them)."""
        target = CallableTarget(self.fn, as_data=False)
        target._key = (CallableTarget, "constants", _static_fn(self.fn))
        return target

    def shared(self) -> dict[str, np.ndarray]:
        return dict(self._numbers)

    def _function(self, shared: Mapping) -> Callable:
        """``fn`` rebuilt around the tensors in ``shared`` (graph code)."""
        fn = self.fn
        if not self._numbers:
            return fn
        defaults = list(fn.__defaults__ or ())
        kwdefaults = dict(fn.__kwdefaults__ or {})
        cells = list(fn.__closure__ or ())
        glob = None
        for slot, tensor in shared.items():
            kind, _, rest = slot.partition(":") if ":" in slot else (slot[0], "", slot[1:])
            if kind == "d":
                defaults[int(rest)] = tensor
            elif kind == "k":
                kwdefaults[rest] = tensor
            elif kind == "c":
                cells[int(rest)] = types.CellType(tensor)
            else:
                glob = dict(fn.__globals__) if glob is None else glob
                glob[rest] = tensor
        new = types.FunctionType(fn.__code__, glob if glob is not None else fn.__globals__, fn.__name__,
                                 tuple(defaults) or None, tuple(cells) or None)
        new.__kwdefaults__ = kwdefaults or None
        return new

    def score(self, outputs, rows, shared, capture):
        fn = self._function(shared) if self.as_data else self.fn
        return fn(outputs)

    def describe(self) -> str:
        return getattr(self.fn, "__qualname__", repr(self.fn))

    def __repr__(self) -> str:
        return f"CallableTarget({self.describe()})"


def digest(array: np.ndarray | None) -> tuple | None:
    """A hashable stand-in for an array: its dtype, shape and a hash of its bytes."""
    if array is None:
        return None
    array = np.ascontiguousarray(array)
    return (array.dtype.str, array.shape, hashlib.sha1(array.tobytes()).hexdigest())


def _cell(cell):
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell (a name bound later)
        return None


def _static_fn(fn: types.FunctionType) -> tuple:
    """A key for ``fn`` with every captured value as it is (numbers by value)."""
    values = list(fn.__defaults__ or ()) + [_cell(c) for c in fn.__closure__ or ()]
    values += [v for _, v in sorted((fn.__kwdefaults__ or {}).items())]
    glob = fn.__globals__
    values += [glob[n] for n in sorted(_global_names(fn.__code__)) if n in glob]
    return (fn.__code__, _Same(glob), tuple(_static(v) for v in values))


# -- conversion --------------------------------------------------------------------------------
def as_target(targets: Targets, n: int) -> Target:
    """``targets=`` of an explainer call as a :class:`Target` for ``n`` samples.

    Raises
    ------
    TypeError
        ``targets`` is not None, an int, a sequence of ints or a callable.
    ValueError
        A sequence whose length is not the number of samples, or a target holding per-sample
        rows (per-image masks, boxes) for another number of samples.
    ClassIndexError
        A negative class index (an ``IndexError`` and a ``ValueError``).
    """
    if isinstance(targets, Target):
        return targets
    if callable(targets):
        return CallableTarget(targets)
    return ClassIndices(None if targets is None else resolve_targets(targets, n))


def check_rows(target: Target, rows: Mapping, n: int) -> None:
    """Raise ``ValueError`` if a target's per-sample data does not have one row per sample."""
    for name, r in rows.items():
        if r.shape[0] != n:
            raise ValueError(
                f"{target.describe()} holds {r.shape[0]} per-image entries ({name}) but {n} images are explained: "
                "give one per image, or a single one for all."
            )


def resolve_targets(targets: Targets, n: int) -> np.ndarray | Callable:
    """Turn ``targets=`` into int32 ``(n,)`` (``-1`` = top-1 of that sample) or keep a callable.

    Raises
    ------
    TypeError
        ``targets`` is not None, an int, a sequence of ints or a callable.
    ValueError
        A sequence whose length is not the number of samples.
    ClassIndexError
        A negative class index (an ``IndexError`` and a ``ValueError``).
    """
    if callable(targets):
        return targets
    if targets is None:
        return np.full((n,), -1, np.int32)
    arr = np.asarray(targets)
    if arr.dtype.kind not in "iu" or arr.ndim > 1:
        raise TypeError(
            "targets must be None (top-1 class), an int class index, one int per sample, or a callable "
            f"outputs -> (N,) scores; got {type(targets).__name__} {arr.dtype} of shape {arr.shape}."
        )
    if arr.ndim == 0:
        arr = np.full((n,), int(arr))
    if arr.shape[0] != n:
        raise ValueError(f"targets has {arr.shape[0]} entries but there are {n} samples; give one class per sample or a single int.")
    if (arr < 0).any():
        raise ClassIndexError(f"class indices must be >= 0; got {arr[arr < 0][:5].tolist()}.")
    return arr.astype(np.int32)


def check_range(targets: np.ndarray, num_classes: int | None) -> None:
    """Raise :class:`~keras_gradcam.core.validate.ClassIndexError` (an ``IndexError`` and a
    ``ValueError``) naming the valid range if a class index is too large."""
    if num_classes is None:
        return
    bad = targets[targets >= num_classes]
    if bad.size:
        raise ClassIndexError(
            f"class index {int(bad[0])} is out of range: the explained output has {num_classes} classes, "
            f"so valid targets are 0 .. {num_classes - 1}."
        )


def pick_output(outputs, output):
    if isinstance(outputs, dict) and isinstance(output, str):
        if output not in outputs:
            raise ValueError(f"output={output!r} is not an output of the model; its outputs are {list(outputs)}.")
        return outputs[output]
    flat = keras.tree.flatten(outputs)
    if output is None:
        if len(flat) != 1:
            raise ValueError(f"the model has {len(flat)} outputs; say which one with output=<index or name>.")
        return flat[0]
    if not isinstance(output, int) or not 0 <= output < len(flat):
        raise ValueError(f"output={output!r} is out of range: the model has {len(flat)} output(s).")
    return flat[output]


def class_scores(output, targets):
    """Scores of the target classes, in graph code.

    Parameters
    ----------
    output : tensor of shape (B, num_classes)
    targets : tensor of shape (B,) int32, or None
        ``-1`` (or None) selects the top-1 class of each sample.

    Returns
    -------
    scores : (B,) float32, resolved targets : (B,) int32, predictions : (B,) int32
    """
    if len(output.shape) != 2:
        raise ValueError(
            f"class targets need an output of shape (N, num_classes), but the explained output has shape "
            f"{tuple(output.shape)}. Pass a callable target that reduces it to one score per sample, e.g. "
            "targets=lambda out: tf.reduce_mean(out[..., 1], axis=[1, 2])."
        )
    output = keras.ops.cast(output, "float32")
    predictions = keras.ops.cast(keras.ops.argmax(output, axis=-1), "int32")
    if targets is None:
        targets = predictions
    else:
        targets = keras.ops.cast(targets, "int32")
        targets = keras.ops.where(targets < 0, predictions, targets)
    scores = keras.ops.take_along_axis(output, targets[:, None], axis=1)[:, 0]
    return scores, targets, predictions


class BoundTarget:
    """A target with its data for the ``n`` samples of one call (host side): what the engine batches."""

    def __init__(self, target: Target, rows: Mapping, shared: Mapping):
        self.target, self.rows, self.shared = target, dict(rows), dict(shared)

    @classmethod
    def of(cls, targets: Targets, n: int) -> BoundTarget:
        """``targets=`` for ``n`` samples (see :func:`as_target`), its rows checked."""
        target = as_target(targets, n)
        rows = {k: np.asarray(v) for k, v in target.rows(n).items()}
        check_rows(target, rows, n)
        return cls(target, rows, {k: np.asarray(v) for k, v in target.shared().items()})

    @property
    def key(self) -> tuple:
        """The target's key and the names, dtypes and shapes of its data."""
        return (self.target.key, data_key(self.rows, self.shared))

    @property
    def names_classes(self) -> bool:
        return self.target.names_classes

    def take(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """The rows of samples ``start:stop``."""
        return {k: v[start:stop] for k, v in self.rows.items()}

    def specs(self) -> list:
        """The input signature of the data (``keras.KerasTensor``): rows with a free leading axis,
        shared data as it is."""
        return [
            {k: keras.KerasTensor((None,) + v.shape[1:], v.dtype.name) for k, v in self.rows.items()},
            {k: keras.KerasTensor(v.shape, v.dtype.name) for k, v in self.shared.items()},
        ]

    def constants(self) -> BoundTarget:
        """A callable target with its captured numbers as Python values (see :meth:`CallableTarget.constants`)."""
        return BoundTarget(self.target.constants(), self.rows, {})


def replacement(target: Target) -> str:
    """What to pass instead of a callable that traces anew, as exactly as its source says."""
    fn = getattr(target, "fn", None)
    try:
        source = inspect.getsource(fn).strip() if fn is not None else ""
    except (OSError, TypeError):
        source = ""
    index = re.search(r"\[\s*:\s*,\s*([^\]\[]+?)\s*\]", source)
    if index:
        return f"targets=kg.ClassTarget({index.group(1)})"
    return "a reusable target object (kg.ClassTarget(k), kg.OutputTarget(...), kg.SegmentationTarget(...))"
