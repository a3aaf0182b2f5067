"""Argument checks of the dataset generators, on :mod:`keras_gradcam.core.validate`.

Which values are accepted is decided by :mod:`keras_gradcam.core.validate`. The datasets keep
their own messages (each names the argument, what it received and an example of a good value)
and raise ``ValueError`` for every bad argument, a wrong kind included, as they always have.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from ..core import validate
from .shapes import SUPPORTED_SHAPES

__all__ = [
    "reworded",
    "right_kind",
    "check_int",
    "check_image_size",
    "check_seed",
    "check_float",
    "check_bool",
    "check_classes",
    "check_n_objects",
    "check_size_range",
]


@contextlib.contextmanager
def reworded(message: str) -> Iterator[None]:
    """Re-raise a :mod:`~keras_gradcam.core.validate` error in the block as ValueError(message)."""
    try:
        yield
    except (TypeError, ValueError):
        raise ValueError(message) from None


def right_kind(check: Callable[..., Any], *values: Any) -> bool:
    """Whether every value is of the kind ``check`` accepts, whatever its range.

    ``check`` is a :mod:`~keras_gradcam.core.validate` check, which raises ``TypeError`` for a
    value of the wrong kind and ``ValueError`` for a value of the right kind out of range.
    """
    for value in values:
        try:
            check("value", value)
        except TypeError:
            return False
        except ValueError:
            pass
    return True


def check_int(name: str, value: Any, minimum: int, *, hint: str) -> int:
    """``value`` as an int ``>= minimum``; ``hint`` completes "Pass ..." in the message."""
    with reworded(f"`{name}` must be an integer >= {minimum}, got {value!r}. Pass {hint}."):
        return validate.positive_int(name, value, minimum)


def check_image_size(image_size: Any) -> int:
    """``image_size`` as an int ``>= 16``."""
    return check_int("image_size", image_size, 16, hint="e.g. image_size=64")


def check_seed(seed: Any) -> int:
    """``seed`` as a non-negative int."""
    with reworded(
        f"`seed` must be a non-negative integer, got {seed!r}. Pass e.g. seed=0; "
        "the same seed always gives the same data."
    ):
        return validate.non_negative_int("seed", seed)


def check_float(name: str, value: Any, high: float | None = None, *, hint: str) -> float:
    """``value`` as a finite float in ``[0, high]`` (``>= 0`` when ``high`` is None)."""
    expected = ">= 0.0" if high is None else f"in [0.0, {float(high)}]"
    message = f"`{name}` must be a finite number {expected}, got {value!r}. {hint}"
    with reworded(message):
        value_f = validate.positive_float(name, value, allow_zero=True)
    if high is not None and value_f > high:
        raise ValueError(message)
    return value_f


def check_bool(name: str, value: Any, *, allow_none: bool = False) -> bool | None:
    """``value`` as a bool (NumPy bools included), or None where ``allow_none``."""
    if value is None and allow_none:
        return None
    if not isinstance(value, (bool, np.bool_)):
        choices = "None, True or False" if allow_none else "True or False"
        raise ValueError(f"`{name}` must be {choices}, got {value!r}.")
    return bool(value)


def check_classes(classes: Any) -> tuple[str, ...]:
    """``classes`` as a tuple of at least 2 distinct lower-case shape names."""
    supported = ", ".join(SUPPORTED_SHAPES)
    if isinstance(classes, str) or not isinstance(classes, Sequence):
        raise ValueError(
            f"`classes` must be a sequence of shape names, got {classes!r}. "
            f"Pass e.g. classes=('circle', 'square'); supported: {supported}."
        )
    names: list[str] = []
    for c in classes:
        if not isinstance(c, str) or c.strip().lower() not in SUPPORTED_SHAPES:
            raise ValueError(
                f"Unknown shape {c!r} in `classes`={tuple(classes)!r}. Supported shape "
                f"names are: {supported}."
            )
        names.append(c.strip().lower())
    if len(names) < 2:
        raise ValueError(
            f"`classes` must contain at least 2 shape names, got {tuple(classes)!r}. "
            f"Add another of: {supported}."
        )
    if len(set(names)) != len(names):
        raise ValueError(
            f"`classes` must not contain duplicates, got {tuple(classes)!r}. "
            "List each shape once."
        )
    return tuple(names)


def check_n_objects(n_objects: Any) -> tuple[int, int]:
    """``n_objects`` (an int or an inclusive ``(min, max)`` pair) as ``(min, max)``."""
    pair = isinstance(n_objects, (tuple, list)) and len(n_objects) == 2
    values = tuple(n_objects) if pair else (n_objects,)
    if not right_kind(validate.positive_int, *values):
        raise ValueError(
            f"`n_objects` must be an int or a (min, max) tuple of ints, got {n_objects!r}. "
            "Pass e.g. n_objects=1 or n_objects=(1, 3)."
        )
    lo, hi = int(values[0]), int(values[-1])
    if lo < 1 or hi < lo:
        raise ValueError(
            f"`n_objects` must satisfy 1 <= min <= max, got {n_objects!r}. "
            "Pass e.g. n_objects=2 or n_objects=(1, 3)."
        )
    return lo, hi


def check_size_range(size_range: Any, image_size: int) -> tuple[float, float]:
    """``size_range`` as ``(min, max)`` fractions; objects at least 3 px across."""
    ok = (
        isinstance(size_range, (tuple, list))
        and len(size_range) == 2
        and right_kind(validate.positive_float, *size_range)
    )
    if ok:
        lo, hi = float(size_range[0]), float(size_range[1])
        ok = 0.0 < lo <= hi <= 1.0  # False for NaN and infinities too
    if not ok:
        raise ValueError(
            f"`size_range` must be a (min, max) pair of fractions of image_size with "
            f"0 < min <= max <= 1, got {size_range!r}. Pass e.g. size_range=(0.25, 0.45)."
        )
    if lo * image_size < 3.0:
        raise ValueError(
            f"`size_range`={tuple(size_range)!r} with image_size={image_size} gives objects "
            f"only {lo * image_size:.1f} px across; the minimum is 3 px. Increase "
            f"size_range[0] to at least {3.0 / image_size:.3f} or use a larger image_size."
        )
    return lo, hi
