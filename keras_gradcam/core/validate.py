"""Argument checks, written once: one message style ("`name` must be ...; got ...") and one
exception policy.

Policy
------
- A value of the wrong kind (a string where a number is expected) raises ``TypeError``.
- A value of the right kind outside what is allowed raises ``ValueError``; a number that is not
  a whole number where an int is expected (``2.5``) is a bad value, so ``ValueError`` too.
- A class index outside the explained output's classes raises :class:`ClassIndexError`, which is
  both an ``IndexError`` and a ``ValueError``, so ``except ValueError`` (argument checking) and
  ``except IndexError`` (indexing) both catch it, wherever it is raised (explainers, callback,
  metrics, command line).
"""

from __future__ import annotations

import numbers
import os
import sys
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = [
    "ClassIndexError",
    "integer",
    "positive_int",
    "non_negative_int",
    "positive_float",
    "one_of",
    "boolean",
    "check_classes",
    "warn_user",
]


class ClassIndexError(IndexError, ValueError):
    """A class index outside ``0 .. num_classes - 1``."""


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def integer(name: str, value: Any, *, expected: str = "an int") -> int:
    """``value`` as an int (any sign); ``TypeError`` for a non-number, ``ValueError`` for ``2.5``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {expected}; got {value!r} ({type(value).__name__}).")
    if not _is_int(value):
        raise ValueError(f"{name} must be {expected}; got {value!r}.")
    return int(value)


def positive_int(name: str, value: Any, minimum: int = 1, *, expected: str | None = None) -> int:
    """``value`` as an int ``>= minimum``; ``TypeError`` for a non-number, ``ValueError`` otherwise.

    ``expected`` replaces the default description (``"an int >= 1"``) after "must be".
    """
    expected = expected or f"an int >= {minimum}"
    value = integer(name, value, expected=expected)
    if value < minimum:
        raise ValueError(f"{name} must be {expected}; got {value!r}.")
    return value


def non_negative_int(name: str, value: Any) -> int:
    """``value`` as an int ``>= 0``."""
    return positive_int(name, value, minimum=0)


def positive_float(name: str, value: Any, *, allow_zero: bool = False, expected: str | None = None) -> float:
    """``value`` as a finite float ``> 0`` (``>= 0`` with ``allow_zero``).

    ``expected`` replaces the default description (``"a finite number > 0"``) after "must be".
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {expected or 'a number'}; got {value!r} ({type(value).__name__}).")
    value = float(value)
    if not (value >= 0 if allow_zero else value > 0) or value != value or value == float("inf"):
        expected = expected or f"a finite number {'>= 0' if allow_zero else '> 0'}"
        raise ValueError(f"{name} must be {expected}; got {value!r}.")
    return value


def one_of(name: str, value: Any, choices: Iterable, *, expected: str | None = None) -> Any:
    """``value`` if it is one of ``choices``, else ``ValueError`` listing them.

    ``expected`` replaces the default description (``"one of 'a', 'b'"``) after "must be", to
    say what each choice means.
    """
    choices = tuple(choices)
    if value not in choices:
        expected = expected or f"one of {', '.join(repr(c) for c in choices)}"
        raise ValueError(f"{name} must be {expected}; got {value!r}.")
    return value


def boolean(name: str, value: Any) -> bool:
    """``value`` if it is a bool (numpy bools included)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {value!r} ({type(value).__name__}).")
    return bool(value)


def check_classes(name: str, indices, num_classes: int | None, fix: str = "") -> None:
    """Raise :class:`ClassIndexError` if any of the int ``indices`` is outside ``0 .. num_classes - 1``."""
    if num_classes is None:
        return
    bad = [int(i) for i in indices if int(i) < 0 or int(i) >= num_classes]
    if bad:
        raise ClassIndexError(
            f"{name} must be class indices 0 .. {num_classes - 1} (the explained output has {num_classes} classes); "
            f"got {bad[0]}." + (f" {fix}" if fix else "")
        )


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _libraries() -> tuple:
    """The folders of TensorFlow and Keras, when imported."""
    modules = (sys.modules.get(name) for name in ("tensorflow", "keras"))
    return tuple(os.path.dirname(os.path.abspath(m.__file__)) + os.sep for m in modules if getattr(m, "__file__", None))


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` pointing at the user's line: the first caller outside the package.

    Frames of TensorFlow and Keras are skipped too, so a warning issued while a compiled function
    runs (e.g. from a ``tf.py_function``) points at the line that called the explainer.
    """
    skip = (_PACKAGE + os.sep,) + _libraries()
    frame, level = sys._getframe(1), 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(skip):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
