"""
The httpx backend: httpx's own pool (httpcore), where cancellation is delivered only where
httpcore is safe under it, and an attempt abandoned before its request was written is never
sent afterwards. See "Cancellation on the httpx backend" in docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final

import httpx

__all__ = ["STOP_POINTS", "AttemptState", "CancelSafeTransport"]

#: httpcore's trace events (the documented `trace` request extension) at which an attempt
#: whose caller has gone stops, before anything of its request is written. At each, an error
#: is already handled cleanly: a connection not yet opened is marked failed, one opened is
#: closed. Not `start_tls` (httpcore would leave the socket it was given open), so a TLS
#: connection half made is finished and closed at the request's own `send_request_headers`.
STOP_POINTS: Final = frozenset(
    {
        "connection.connect_tcp.started",
        "connection.connect_unix_socket.started",
        "http2.send_connection_init.started",
        "http11.send_request_headers.started",
        "http2.send_request_headers.started",
    }
)


class AttemptState:
    """Where one attempt on httpx's pool is, as its trace events tell, and whether its caller left."""

    __slots__ = ("abandoned", "closing", "written")

    def __init__(self) -> None:
        #: The caller stopped waiting: stop at the next stop point.
        self.abandoned = False
        #: The request's head is going out: from here on httpcore is cancel-safe.
        self.written = False
        #: httpcore is releasing the response (its cleanup is shielded only from anyio's
        #: cancellation, not from a task's `cancel()`): let it finish.
        self.closing = False

    def follow(self, event: str, info: dict[str, Any]) -> None:
        """Take in one trace event; stop the attempt here if its caller has gone and nothing is written."""
        if self.written:
            self.closing = self.closing or event.endswith(".response_closed.started")
            return
        if self.abandoned and event in STOP_POINTS:
            raise _Abandoned("the caller went away before the request was written")
        # A tunnel's CONNECT is not the request: that comes after it, on the tunnel.
        if event.endswith(".send_request_headers.started"):
            self.written = getattr(info.get("request"), "method", None) != b"CONNECT"

    @property
    def cancellable(self) -> bool:
        """Whether cancelling the attempt now leaves httpcore's pool sound."""
        return self.written and not self.closing


class _Abandoned(Exception):
    """Raised inside httpcore at a stop point: the attempt's caller has gone; nothing was sent."""


#: The state of the attempt the current task runs (set in the task `shield` starts).
_attempt: contextvars.ContextVar[AttemptState | None] = contextvars.ContextVar("attempt", default=None)


class _Tracer:
    """The `trace` extension: follows the attempt's progress, then calls the caller's own tracer."""

    __slots__ = ("previous",)

    def __init__(self, previous: Any) -> None:
        self.previous = previous

    async def __call__(self, event: str, info: dict[str, Any]) -> None:
        state = _attempt.get()
        if state is not None:
            state.follow(event, info)
        if self.previous is not None:
            await self.previous(event, info)


class CancelSafeTransport(httpx.AsyncBaseTransport):
    """
    httpx's transport, with cancellation delivered only where httpcore is safe under it.

    httpcore 1.0 loses a pool slot for good when a request is cancelled between being given
    a connection and writing to it (with `max_connections=2`, 20 rounds of 10 cancelled
    requests ended in a permanent `PoolTimeout` in 1 run of 8, measured). `RetryTransport`
    runs each attempt on this transport, body read included, through `shield()`: the caller
    stops waiting at once, and the attempt
    - if its request was not yet written, stops at the next stop point (`STOP_POINTS`),
      before anything is sent, never from a cancellation;
    - if it was, is cancelled: httpcore then closes the connection, which frees the slot.
    """

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
        state = _attempt.get()
        if state is None:
            return await self._send(request)
        if state.abandoned:  # gone before the pool was even asked
            raise _Abandoned("the caller went away before the request was written")
        extensions = request.extensions
        if isinstance(extensions.get("trace"), _Tracer):  # a hedge of the same request
            return await self._send(request)
        # httpcore reads the extensions of the request it is given, built from these: the
        # tracer goes on a copy (a hedge in flight keeps it, whatever happens here after),
        # and the caller's request gets its own back, with anything written meanwhile.
        traced = request.extensions = {**extensions, "trace": _Tracer(extensions.get("trace"))}
        try:
            return await self._send(request)
        finally:
            if request.extensions is traced:
                extensions.update((key, value) for key, value in traced.items() if key != "trace")
                request.extensions = extensions

    def _send(self, request: httpx.Request) -> Awaitable[httpx.Response]:
        # With `http2=True`, a request the server refused unprocessed raises `StreamRefused`
        # (see `h2_refusals`), which the retry policy resends whatever the method.
        if self._refusals is not None:
            return self._refusals(self.inner, request)
        return self.inner.handle_async_request(request)

    async def shield(self, attempt: Coroutine[Any, Any, httpx.Response]) -> httpx.Response:
        """Run `attempt` (a whole attempt, body read included) so that its caller can leave at any time."""
        state = AttemptState()
        context = contextvars.copy_context()
        context.run(_attempt.set, state)
        task = asyncio.get_running_loop().create_task(attempt, context=context)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            state.abandoned = True
            if state.cancellable:
                task.cancel()
            self._background.add(task)
            task.add_done_callback(self._finished)
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
