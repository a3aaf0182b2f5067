"""Any callable ``outputs -> (N,)`` as a target: keyed by its code, the numbers it captures passed as data.

So ``lambda out, k=k: out[:, k]`` in a loop over ``k`` traces one compiled function (the
captured ``k`` is a tensor argument), where a key by the callable itself traced one per call.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
import types
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .target_base import Target, digest

__all__ = ["CallableTarget", "replacement"]

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


def _user_function(value) -> bool:
    """Whether ``value`` is a plain function written by the user (not in an installed library)."""
    if not isinstance(value, types.FunctionType):
        return False
    path = os.path.abspath(value.__code__.co_filename)
    return not path.startswith(_LIBRARY_PATHS)


_LIBRARY_PATHS = tuple(
    {os.path.abspath(p) + os.sep for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    | {os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep}  # keras_gradcam itself
)


def _static(value, depth: int = 0):
    """A captured value as part of a key: itself when hashable, an array by its bytes, else by identity.

    A function the user wrote (a helper the target calls) is keyed by identity *and* by what it
    captures in turn (numbers by value), so a helper reading a global that changed retraces.
    """
    if isinstance(value, np.ndarray):
        return digest(value)
    if _user_function(value) and depth < 3:
        return (_Same(value), _captured_key(value, depth + 1))
    try:
        hash(value)
    except TypeError:
        return _Same(value)
    if isinstance(value, (types.ModuleType, types.FunctionType, type)):
        return _Same(value)
    return value if isinstance(value, (str, bytes, tuple, frozenset, type(None), *_SCALARS)) else _Same(value)


def _captured(fn: types.FunctionType) -> list:
    """``(slot, value)`` of what ``fn`` captures: defaults, keyword defaults, closure cells, globals it reads."""
    slots = [(f"d{i}", v) for i, v in enumerate(fn.__defaults__ or ())]
    slots += [(f"k:{k}", v) for k, v in sorted((fn.__kwdefaults__ or {}).items())]
    slots += [(f"c{i}", _cell(c)) for i, c in enumerate(fn.__closure__ or ())]
    glob = fn.__globals__
    slots += [(f"g:{name}", glob[name]) for name in sorted(_global_names(fn.__code__)) if name in glob]
    return slots


def _captured_key(fn: types.FunctionType, depth: int) -> tuple:
    return tuple((slot, _static(v, depth)) for slot, v in _captured(fn) if v is not fn)


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
        code, glob = fn.__code__, fn.__globals__
        for slot, value in _captured(fn):
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


def _cell(cell):
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell (a name bound later)
        return None


def _static_fn(fn: types.FunctionType) -> tuple:
    """A key for ``fn`` with every captured value as it is (numbers by value)."""
    return (fn.__code__, _Same(fn.__globals__), _captured_key(fn, 1))


# -- conversion --------------------------------------------------------------------------------


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
