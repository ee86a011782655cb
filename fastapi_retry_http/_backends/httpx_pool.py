"""The httpx backend: httpx's own pool (httpcore), shielded from cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import httpx

__all__ = ["CancelSafeTransport"]


class CancelSafeTransport(httpx.AsyncBaseTransport):
    """
    httpx's transport, kept out of the way of cancellation.

    httpcore 1.0 can lose a pool slot for good when a request is cancelled mid-flight (with
    `max_connections=2`, 20 rounds of 10 cancelled requests ended in a permanent
    `PoolTimeout` in 1 run of 8, measured). `RetryTransport` runs each attempt on this
    transport, body read included, through `shield()`: the caller's cancellation is never
    delivered inside httpcore. The caller stops waiting at once; the attempt finishes in the
    background (cut after `BACKGROUND_LIMIT`) and its response is closed, which frees the slot.

    With `http2=True`, a request the server refused unprocessed raises `StreamRefused`
    (see `h2_refusals`), which the retry policy resends whatever the method.
    """

    #: Seconds a cancelled attempt may go on in the background before it is cut.
    BACKGROUND_LIMIT = 30.0

    def __init__(self, inner: httpx.AsyncHTTPTransport, *, http2: bool = False) -> None:
        self.inner = inner
        self._background: set[asyncio.Task[httpx.Response]] = set()
        self._refusals: Callable[[httpx.AsyncBaseTransport, httpx.Request], Awaitable[httpx.Response]] | None = None
        if http2:
            from .h2_refusals import send_noting_refusals  # h2 is there: http2=True needs it

            self._refusals = send_noting_refusals

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` on httpx's pool."""
        # Headers were checked before any I/O (`RetryTransport`), so h11 never gets to quote
        # a header value in an error of its own.
        if self._refusals is not None:
            return await self._refusals(self.inner, request)
        return await self.inner.handle_async_request(request)

    async def shield(self, attempt: Coroutine[Any, Any, httpx.Response]) -> httpx.Response:
        """Run `attempt` (a whole attempt, body read included) where the caller's cancellation cannot reach it."""
        task = asyncio.ensure_future(attempt)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            self._background.add(task)
            task.add_done_callback(self._finished)
            asyncio.get_running_loop().call_later(self.BACKGROUND_LIMIT, task.cancel)
            raise

    def _finished(self, task: asyncio.Task[httpx.Response]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is None:
            closing = asyncio.ensure_future(task.result().aclose())
            closing.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def aclose(self) -> None:
        """Cut the attempts still running in the background, then close the pool."""
        for task in list(self._background):
            task.cancel()
        await self.inner.aclose()
