"""
`AiohttpTransport`: httpx's transport interface over aiohttp's connection pool.

Why: on the same loopback server, httpx's own pool (httpcore) serves 1.8x to 6.6x fewer
requests per second than aiohttp's, and it leaks pool slots when requests are cancelled
mid-flight (cancellation churn ended in a permanent `PoolTimeout` in 2 of 3 runs, measured).
aiohttp's pool has neither problem. The client API, `httpx.Request` and `httpx.Response`,
stay exactly the same.

Why not httpx-aiohttp: it maps aiohttp's whole `ClientConnectionError` family, which includes
"server disconnected" after the request was sent, to `httpx.ConnectTimeout`. The retry rules
trust the exception type to tell "never sent" from "maybe processed", so that mapping would
re-send a POST. Here errors are mapped by their type and the phase they happened in, never
by their text.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Mapping
from types import MappingProxyType
from typing import Any, Final

import aiohttp
import httpx

from .._pipeline.attempts import call_options
from .._pipeline.httpx_parts import headers_from_raw, read_response
from .._tasks import task_of
from ..exceptions import ClientClosedError
from .aiohttp_errors import httpx_error, safe_cause
from .aiohttp_exchange import Exchange
from .aiohttp_session import SKIP_AUTO_HEADERS, Connector, Request, RequestParts, keepalive, seconds
from .aiohttp_upload import Upload, WriteTimedOut, upload

__all__ = ["AiohttpTransport"]

_CLOSED: Final = "The transport is closed; it cannot send requests any more."

#: A body of at most this many bytes, declared by `Content-Length` and not content-coded, is
#: read here, within the attempt, and handed to httpx already read: httpx's async byte-stream
#: layers cost more than the read itself (about a quarter of the CPU of a small call,
#: measured). Larger, undeclared or coded bodies stream, decoded and capped by the pipeline.
EAGER_BYTES: Final = 64 * 1024
#: A request's pool and write timeouts, and its connect and read ones as aiohttp takes them.
_Timing = tuple[float | None, float | None, aiohttp.ClientTimeout]
#: The timeouts of a request that has none: no limits.
_NO_TIMEOUTS: Final[Mapping[str, float | None]] = MappingProxyType({})
#: How many distinct `aiohttp.ClientTimeout`s a transport keeps (they are immutable; most
#: clients use one or two).
_TIMEOUTS_KEPT: Final = 32


class AiohttpTransport(httpx.AsyncBaseTransport):
    """
    Sends httpx requests through an `aiohttp.ClientSession`, with httpx's semantics.

    - Timeouts: `connect` bounds connecting, `read` each read, `write` each chunk of the
      request body handed to the socket (aiohttp has none: it is applied here), `pool` the
      wait for a free connection (raised as `httpx.PoolTimeout`, which is never retried).
      `None` or `math.inf` means no limit.
    - Errors are httpx's, by type and phase: `ConnectError`/`ConnectTimeout` only when nothing
      was sent; a connection lost afterwards is `WriteError` while the request was being
      written, then `ReadError` or `RemoteProtocolError`. A proxy refusing the tunnel is
      `ProxyError`. An exception raised by the caller's body stream is raised unchanged.
    - Bodies are not decompressed here: httpx decodes them, so `max_response_bytes`
      counts decoded bytes the same on every transport.
    - Limits: `max_connections` bounds connections in use (a request waits for a slot up to
      the pool timeout), `keepalive_expiry` closes idle ones, `max_keepalive_connections`
      caps the idle ones kept for reuse (0: no reuse).
    - HTTP/1.1 only; `Client(http2=True)` uses httpx's transport.
    - After `aclose()`, requests raise `ClientClosedError`; one in flight ends with it.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext,
        limits: httpx.Limits,
        proxy: str | httpx.URL | None = None,
    ) -> None:
        self._ssl_context = ssl_context
        self._limits = limits
        self._proxy = None if proxy is None else str(proxy)
        self._session: aiohttp.ClientSession | None = None
        self._exchange: Exchange | None = None
        self._slots: asyncio.Semaphore | None = None
        self._closed = False
        # What aclose() must end itself, or it would wait: attempts before their response
        # (closing the session does not stop one that is connecting), and responses whose
        # body may still be read (aiohttp drops the body's reader before the connection ends).
        self._attempts: set[asyncio.Task[Any]] = set()
        self._cut: set[asyncio.Task[Any]] = set()
        self._open_responses: set[aiohttp.ClientResponse] = set()
        self._timeouts: dict[tuple[float | None, float | None], aiohttp.ClientTimeout] = {}
        self._parts = RequestParts()
        self._timed: Mapping[str, float | None] | None = None
        self._timing_kept: _Timing = (None, None, aiohttp.ClientTimeout())

    def _open(self) -> tuple[Exchange, asyncio.Semaphore | None]:
        if self._closed:
            # A new session here would never be closed ("Unclosed connector").
            raise ClientClosedError(_CLOSED)
        # The session binds to the running loop, so it is made at the first request.
        if self._exchange is None:
            limit = self._limits.max_connections
            idle = self._limits.max_keepalive_connections
            connector = Connector(
                max_idle=idle,
                limit=limit or 0,
                limit_per_host=0,
                force_close=idle == 0,
                # aiohttp refuses a keep-alive timeout alongside force_close.
                keepalive_timeout=None if idle == 0 else keepalive(self._limits.keepalive_expiry),
                ssl=self._ssl_context,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),  # httpx keeps the cookies
                request_class=Request,
                trust_env=False,
            )
            # Sent through `Exchange`, not `session.request`: none of the session's features
            # is used, and its hidden re-send of an idempotent request on a reused connection
            # that turns out dead is left out (the retry policy decides on re-sending, and
            # counts every attempt).
            self._exchange = Exchange(self._session, self._proxy)
            self._slots = asyncio.Semaphore(limit) if limit else None
        return self._exchange, self._slots

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        exchange, slots = self._open()
        task = task_of(asyncio.get_running_loop())
        assert task is not None
        self._attempts.add(task)
        try:
            return await self._send(exchange, slots, request)
        except asyncio.CancelledError:
            # Cancelled by aclose() and by nobody else (a deadline, the caller): closed.
            if task in self._cut and task.uncancel() == 0:
                raise ClientClosedError(_CLOSED) from None
            raise
        finally:
            self._attempts.discard(task)
            self._cut.discard(task)

    # long: one attempt's way through aiohttp, the eager body read inlined (a coroutine less a call).
    async def _send(
        self, exchange: Exchange, slots: asyncio.Semaphore | None, request: httpx.Request
    ) -> httpx.Response:
        pool, write, timeout = self._timing(request.extensions.get("timeout", _NO_TIMEOUTS))
        if slots is not None:
            if slots.locked():
                await self._wait_for_slot(slots, pool, request)
            else:
                await slots.acquire()  # a free slot: taken at once, no timer needed
        try:
            payload = upload(request, write)
            try:
                parts = self._parts
                headers = parts.headers(request.headers)
                response = await exchange(
                    request.method,
                    parts.url(request.url),
                    headers,
                    SKIP_AUTO_HEADERS if parts.adds_headers(request.method, payload) else None,
                    payload,
                    timeout,
                )
            except (aiohttp.ClientError, WriteTimedOut) as error:
                raise self._error(error, request, payload, body=False) from safe_cause(error)
            except ValueError as error:
                # The header check before any I/O is the library's; this is aiohttp (or yarl)
                # refusing something else. By type only: its text may quote a header value.
                message = f"aiohttp refused the request: {type(error).__name__}"
                raise httpx.LocalProtocolError(message, request=request) from None
        except BaseException:
            if slots is not None:
                slots.release()
            raise
        extensions = {"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode("latin-1")}
        length = response.content_length
        if (
            length is not None
            and length <= EAGER_BYTES
            and "Content-Encoding" not in response.headers
            and not call_options(request).stream  # wanted at its headers: never read here
        ):
            # The body read here, within the attempt; its connection goes back at once.
            try:
                body = await response.read()
            except aiohttp.ClientError as error:
                raise self._error(error, request, None, body=True) from safe_cause(error)
            finally:
                # release() returns a fully read connection to the pool, and closes any other.
                response.release()
                if slots is not None:
                    slots.release()
            # Read, as `Response.read()` would leave it, without running an identity body
            # through httpx's decoder chain (a third of the transport's own cost, measured).
            return read_response(response.status, response.raw_headers, body, None, extensions)
        self._open_responses.add(response)
        stream = _ResponseStream(self, response, request, slots)
        # The headers as bytes, as they came: httpx decodes them once, when one is read.
        received = headers_from_raw(response.raw_headers)
        return httpx.Response(response.status, headers=received, stream=stream, extensions=extensions)

    def _timing(self, timeouts: Mapping[str, float | None]) -> _Timing:
        """The pool and write timeouts, and aiohttp's for connect and read, of `timeouts`."""
        if timeouts is self._timed:  # a client's lean path hands the same read-only mapping each call
            return self._timing_kept
        timing = (seconds(timeouts.get("pool")), seconds(timeouts.get("write")), self._timeout(timeouts))
        if isinstance(timeouts, MappingProxyType):  # read-only: worth keeping by identity
            self._timed, self._timing_kept = timeouts, timing
        return timing

    def _timeout(self, timeouts: Mapping[str, float | None]) -> aiohttp.ClientTimeout:
        """httpx's connect and read timeouts as aiohttp's, one immutable object per pair."""
        key = (seconds(timeouts.get("connect")), seconds(timeouts.get("read")))
        timeout = self._timeouts.get(key)
        if timeout is None:
            if len(self._timeouts) >= _TIMEOUTS_KEPT:
                self._timeouts.clear()
            timeout = self._timeouts[key] = aiohttp.ClientTimeout(total=None, sock_connect=key[0], sock_read=key[1])
        return timeout

    def _error(self, error: Exception, request: httpx.Request, payload: Upload | None, *, body: bool) -> BaseException:
        if self._closed:  # the connection ended because aclose() closed it
            return ClientClosedError(_CLOSED)
        if payload is not None and payload.failure is not None:
            return payload.failure  # the caller's own body stream failed: its error, as httpx raises it
        return httpx_error(error, request, writing=payload is not None and not payload.sent, body=body)

    @staticmethod
    async def _wait_for_slot(slots: asyncio.Semaphore, timeout: float | None, request: httpx.Request) -> None:
        try:
            async with asyncio.timeout(timeout):
                await slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout("No connection became free within the pool timeout.", request=request) from None

    async def aclose(self) -> None:
        self._closed = True
        for task in self._attempts - {asyncio.current_task()}:
            self._cut.add(task)
            task.cancel()
        for response in self._open_responses:
            response.close()  # a read in progress ends with a connection error
        self._open_responses.clear()
        if self._session is not None:
            await self._session.close()
            self._session = self._exchange = None


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(
        self,
        transport: AiohttpTransport,
        response: aiohttp.ClientResponse,
        request: httpx.Request,
        slots: asyncio.Semaphore | None,
    ) -> None:
        self._transport = transport
        self._response = response
        self._request = request
        self._slots = slots

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except aiohttp.ClientError as error:
            raise self._transport._error(error, self._request, None, body=True) from safe_cause(error)

    async def aclose(self) -> None:
        # release() returns a fully read connection to the pool, and closes any other.
        self._response.release()
        self._transport._open_responses.discard(self._response)
        if self._slots is not None:
            self._slots.release()
            self._slots = None
