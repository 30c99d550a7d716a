"""Argument checks shared by the data package.

Errors name the function, the argument and the offending value, e.g.
``BatchLoader: batch_size must be a positive int, got 0``.
"""

from __future__ import annotations

import numbers
from typing import Any


def check_int(value: Any, name: str, fn: str, *, minimum: int | None = None) -> int:
    """``value`` as an int (bools rejected), ``>= minimum`` when given."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{fn}: {name} must be an int, got {value!r} ({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        qualifier = "a positive" if minimum == 1 else ("a non-negative" if minimum == 0 else f"an >= {minimum}")
        raise ValueError(f"{fn}: {name} must be {qualifier} int, got {value}")
    return value


def check_optional_int(value: Any, name: str, fn: str, *, minimum: int | None = None) -> int | None:
    return None if value is None else check_int(value, name, fn, minimum=minimum)


def check_float(value: Any, name: str, fn: str, *, minimum: float | None = None) -> float:
    """``value`` as a float (bools rejected), ``>= minimum`` when given."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{fn}: {name} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if value != value:
        raise ValueError(f"{fn}: {name} must not be NaN")
    if minimum is not None and value < minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {value}")
    return value


def check_bool(value: Any, name: str, fn: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{fn}: {name} must be True or False, got {value!r}")
    return value


def check_choice(value: Any, name: str, fn: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{fn}: {name}={value!r} is not one of {choices}")
    return value


def check_str(value: Any, name: str, fn: str) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"{fn}: {name} must be a non-empty string, got {value!r}")
    return value
