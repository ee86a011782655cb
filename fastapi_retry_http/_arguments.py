"""
A client's arguments, checked once at construction (and a call's timeout, per call), so that
what would fail later, leak a secret, or read differently on the two backends is refused now.

Timeouts, for one: left alone, `0` meant "no timeout" on aiohttp and an immediate `ConnectTimeout` on httpx,
`math.inf` raised a bare `OverflowError` on aiohttp, and negative values differed again.
Here every phase is `None` (no timeout) or a positive number of seconds; infinity means
`None`; zero, negatives and NaN are refused with a message naming the phase.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping
from typing import Any

import httpx

from ._safety.headers import header_problem
from ._safety.urls import base_url_problem, proxy_problem
from .exceptions import ConfigurationError

__all__ = ["checked_arguments", "checked_timeout"]

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


def checked_arguments(
    base: httpx.URL,
    headers: Mapping[str, str] | None,
    timeout: float | httpx.Timeout | None,
    http2: bool,
    proxy: str | httpx.URL | None,
) -> httpx.Timeout:
    """Refuse what would fail or leak later; the timeout as both backends will read it."""
    if proxy is not None and proxy_problem(proxy) is not None:
        # Now, on both backends (aiohttp would only refuse it at the first request); the URL
        # is not shown: it may carry the proxy's credentials.
        raise ConfigurationError(f"proxy: {proxy_problem(proxy)}.")
    problem = base_url_problem(base)
    if problem is not None:
        raise ConfigurationError(f"base_url: {problem}.")
    problem = header_problem((headers or {}).items())
    if problem is not None:
        raise ConfigurationError(f"headers: {problem}")  # named, never shown: values are credentials
    if http2 and importlib.util.find_spec("h2") is None:
        raise ConfigurationError("http2=True needs the 'h2' package: pip install 'fastapi-retry-http[http2]'.")
    try:
        return checked_timeout(timeout)
    except ValueError as error:
        raise ConfigurationError(f"{error}.") from None
