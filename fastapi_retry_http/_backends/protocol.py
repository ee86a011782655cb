"""What the pipeline needs of a backend, stated once instead of looked up with `getattr`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, runtime_checkable

import httpx

__all__ = ["Backend", "Shielding", "shield_of"]

Attempt = Coroutine[Any, Any, httpx.Response]


class Backend(Protocol):
    """A connection pool behind httpx's transport API: every `httpx.AsyncBaseTransport` is one."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send one attempt; return at the response headers."""

    async def aclose(self) -> None:
        """Close the pool and every connection in it."""


@runtime_checkable
class Shielding(Protocol):
    """
    A backend whose pool a cancellation mid-attempt can corrupt (httpcore's can lose a slot).

    The pipeline then runs each whole attempt, body read included, through `shield`. Backends
    without it (aiohttp's pool, test transports) see cancellation directly.
    """

    def shield(self, attempt: Attempt) -> Awaitable[httpx.Response]:
        """Run `attempt` where the caller's cancellation cannot reach it."""


def shield_of(backend: httpx.AsyncBaseTransport) -> Callable[[Attempt], Awaitable[httpx.Response]] | None:
    """The shield the pipeline must run attempts on `backend` through, if it needs one."""
    return backend.shield if isinstance(backend, Shielding) else None
