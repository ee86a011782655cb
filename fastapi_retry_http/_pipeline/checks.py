"""The value checks the resilience dataclasses share: counts, ratios and durations."""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["first_problem", "is_count", "is_ratio", "is_seconds"]


def is_count(value: object, minimum: int) -> bool:
    """An integer (not a bool) of at least `minimum`."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def is_ratio(value: float) -> bool:
    """A number in [0, 1]."""
    return 0 <= value <= 1


def is_seconds(value: float | None, *, zero: bool = False, none: bool = False) -> bool:
    """A finite, positive number of seconds (or zero, or `None`, where allowed)."""
    if value is None:
        return none
    return math.isfinite(value) and (value >= 0 if zero else value > 0)


def first_problem(checks: Iterable[tuple[str, bool, str]]) -> str | None:
    """`"field message"` for the first `(field, ok, message)` that is not ok, or `None`."""
    return next((f"{field} {message}" for field, ok, message in checks if not ok), None)
