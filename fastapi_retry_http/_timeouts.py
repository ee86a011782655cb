"""
Timeouts checked once, at construction or per call, so both backends read them the same way.

Left alone, `0` meant "no timeout" on aiohttp and an immediate `ConnectTimeout` on httpx,
`math.inf` raised a bare `OverflowError` on aiohttp, and negative values differed again.
Here every phase is `None` (no timeout) or a positive number of seconds; infinity means
`None`; zero, negatives and NaN are refused with a message naming the phase.
"""

from __future__ import annotations

import math
from typing import Any

import httpx

__all__ = ["checked_timeout"]

_PHASES = ("connect", "read", "write", "pool")


def checked_timeout(value: Any) -> httpx.Timeout:
    """
    `value` (seconds, `None`, or an `httpx.Timeout`) as an `httpx.Timeout` both backends agree on.

    Raises:
        ValueError: a phase is zero, negative, NaN or not a number; the message names it.
    """
    timeout = value if isinstance(value, httpx.Timeout) else httpx.Timeout(value)
    seconds = [_seconds(getattr(timeout, phase), phase) for phase in _PHASES]
    connect, read, write, pool = seconds
    return httpx.Timeout(connect=connect, read=read, write=write, pool=pool)


def _seconds(value: Any, phase: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"timeout.{phase} must be a positive number of seconds, or None for no timeout")
    return None if math.isinf(value) else float(value)
