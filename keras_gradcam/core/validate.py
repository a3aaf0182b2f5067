"""Argument checks, written once: one message style ("`name` must be ...; got ...") and one
exception policy.

Policy
------
- A value of the wrong kind (a string where a number is expected) raises ``TypeError``.
- A value of the right kind outside what is allowed raises ``ValueError``.
- A class index outside the explained output's classes raises :class:`ClassIndexError`, which is
  both an ``IndexError`` and a ``ValueError``, so ``except ValueError`` (argument checking) and
  ``except IndexError`` (indexing) both catch it, wherever it is raised (explainers, callback,
  metrics, command line).
"""

from __future__ import annotations

import numbers
from typing import Any, Iterable

__all__ = ["ClassIndexError", "positive_int", "non_negative_int", "positive_float", "one_of", "boolean", "check_classes"]


class ClassIndexError(IndexError, ValueError):
    """A class index outside ``0 .. num_classes - 1``."""


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int ``>= minimum``; ``TypeError`` for a non-int, ``ValueError`` below it."""
    if not _is_int(value):
        raise TypeError(f"{name} must be an int >= {minimum}; got {value!r} ({type(value).__name__}).")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}.")
    return int(value)


def non_negative_int(name: str, value: Any) -> int:
    """``value`` as an int ``>= 0``."""
    return positive_int(name, value, minimum=0)


def positive_float(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """``value`` as a finite float ``> 0`` (``>= 0`` with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number; got {value!r} ({type(value).__name__}).")
    value = float(value)
    if not (value >= 0 if allow_zero else value > 0) or value != value or value == float("inf"):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}; got {value!r}.")
    return value


def one_of(name: str, value: Any, choices: Iterable) -> Any:
    """``value`` if it is one of ``choices``, else ``ValueError`` listing them."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}.")
    return value


def boolean(name: str, value: Any) -> bool:
    """``value`` if it is a bool (numpy bools included)."""
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
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
