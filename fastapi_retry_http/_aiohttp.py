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
re-send a POST. Here errors are mapped by the phase they happened in.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any, Final

import aiohttp
import httpx
from yarl import URL

__all__ = ["AiohttpTransport"]

# aiohttp adds these unless told not to; httpx already set the ones it wants.
_SKIP_AUTO_HEADERS: Final = frozenset({"Accept", "Accept-Encoding", "User-Agent", "Content-Type"})


class AiohttpTransport(httpx.AsyncBaseTransport):
    """
    Sends httpx requests through an `aiohttp.ClientSession`, with httpx's semantics.

    - Timeouts: `connect` bounds connecting, `read` each read, `pool` the wait for a free
      connection (raised as `httpx.PoolTimeout`, which is never retried). aiohttp has no
      write timeout: a write that stalls is bounded by the retry policy's deadline.
    - Errors are httpx's, by phase: `ConnectError`/`ConnectTimeout` only when nothing was
      sent; a connection lost afterwards is `RemoteProtocolError` or `ReadError`.
    - Bodies are not decompressed here: httpx decodes them, so `max_response_bytes`
      counts decoded bytes the same on every transport.
    - Limits: `max_connections` bounds connections in use (a request waits for a slot up to
      the pool timeout), `keepalive_expiry` closes idle ones. `max_keepalive_connections` is
      not enforced separately: idle connections are bounded by `max_connections`.
    - HTTP/1.1 only; `Client(http2=True)` uses httpx's transport.
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
        self._slots: asyncio.Semaphore | None = None

    def _open(self) -> tuple[aiohttp.ClientSession, asyncio.Semaphore | None]:
        # The session binds to the running loop, so it is made at the first request.
        if self._session is None:
            limit = self._limits.max_connections
            connector = aiohttp.TCPConnector(
                limit=limit or 0,
                limit_per_host=0,
                keepalive_timeout=self._limits.keepalive_expiry,
                ssl=self._ssl_context,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                skip_auto_headers=_SKIP_AUTO_HEADERS,
                cookie_jar=aiohttp.DummyCookieJar(),  # httpx keeps the cookies
                request_class=_Request,
                trust_env=False,
            )
            # aiohttp quietly re-sends an idempotent request once when a reused connection
            # turns out dead. The retry policy is the one place that decides on re-sending,
            # and counts every attempt: turn the hidden one off.
            self._session._retry_connection = False
            self._slots = asyncio.Semaphore(limit) if limit else None
        return self._session, self._slots

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session, slots = self._open()
        timeouts = request.extensions.get("timeout", {})
        await self._acquire(slots, timeouts.get("pool"), request)
        try:
            with _mapped_errors(request, sending=True):
                response = await session.request(
                    request.method,
                    URL(str(request.url), encoded=True),
                    # Not the caller's Transfer-Encoding: aiohttp chunks a body of unknown
                    # length itself and refuses the header alongside its own.
                    headers=[
                        (k.decode("latin-1"), v.decode("latin-1"))
                        for k, v in request.headers.raw
                        if k.lower() != b"transfer-encoding"
                    ],
                    data=_body(request),
                    allow_redirects=False,
                    proxy=self._proxy,
                    timeout=aiohttp.ClientTimeout(
                        total=None, sock_connect=timeouts.get("connect"), sock_read=timeouts.get("read")
                    ),
                )
        except ValueError as error:
            if slots is not None:
                slots.release()
            # The header check before any I/O is the library's; this is aiohttp (or yarl)
            # refusing something else. By type only: its text may quote a header value.
            message = f"aiohttp refused the request: {type(error).__name__}"
            raise httpx.LocalProtocolError(message, request=request) from None
        except BaseException:
            if slots is not None:
                slots.release()
            raise
        return httpx.Response(
            response.status,
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.raw_headers],
            stream=_ResponseStream(response, request, slots),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode("latin-1")},
        )

    @staticmethod
    async def _acquire(slots: asyncio.Semaphore | None, timeout: float | None, request: httpx.Request) -> None:
        if slots is None:
            return
        if not slots.locked():
            await slots.acquire()  # a free slot: taken at once, no timer needed
            return
        try:
            async with asyncio.timeout(timeout):
                await slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout("No connection became free within the pool timeout.", request=request) from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _body(request: httpx.Request) -> bytes | AsyncIterator[bytes] | None:
    stream = request.stream
    if isinstance(stream, httpx.ByteStream):
        body = b"".join(stream)
        return body or None

    async def chunks() -> AsyncIterator[bytes]:
        assert isinstance(stream, httpx.AsyncByteStream)
        async for chunk in stream:
            yield chunk

    return chunks()


class _Request(aiohttp.ClientRequest):
    """aiohttp's request, minus the framing headers httpx did not ask for."""

    def update_body_from_data(self, body: Any, _stacklevel: int = 3) -> None:
        # With no body aiohttp adds `Content-Length: 0` for DELETE and other methods that are
        # not GET-like; httpx sets it itself where it wants it (POST, PUT, PATCH), and only there.
        if body is not None:
            super().update_body_from_data(body, _stacklevel)


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(
        self, response: aiohttp.ClientResponse, request: httpx.Request, slots: asyncio.Semaphore | None
    ) -> None:
        self._response = response
        self._request = request
        self._slots = slots

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped_errors(self._request, sending=False):
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        # release() returns a fully read connection to the pool, and closes any other.
        self._response.release()
        if self._slots is not None:
            self._slots.release()
            self._slots = None


@contextmanager
def _mapped_errors(request: httpx.Request, *, sending: bool) -> Iterator[None]:
    """Re-raise aiohttp's errors as the httpx errors for the phase they happened in."""
    try:
        yield
    except aiohttp.ClientError as error:
        # These two print the full URL, query included: keep them out of the chain.
        hide = isinstance(error, aiohttp.ClientResponseError | aiohttp.InvalidURL)
        raise _httpx_error(error, request, sending) from (None if hide else error)
    except TimeoutError as error:  # a bare timeout from a read with no socket timeout class
        raise httpx.ReadTimeout(str(error) or "Timed out reading the response.", request=request) from error


def _httpx_error(error: aiohttp.ClientError, request: httpx.Request, sending: bool) -> httpx.HTTPError:
    message = str(error) or type(error).__name__
    kind: type[httpx.RequestError]
    # Never sent: the connection was not made (TLS failures keep their ssl cause, so they are
    # recognised and not retried).
    if isinstance(error, aiohttp.ConnectionTimeoutError):
        kind = httpx.ConnectTimeout
    elif isinstance(error, aiohttp.ClientConnectorError):
        kind = httpx.ConnectError
    # Maybe sent: the server may have seen the request.
    elif isinstance(error, aiohttp.SocketTimeoutError | aiohttp.ServerTimeoutError):
        kind = httpx.ReadTimeout
    elif isinstance(error, aiohttp.ServerDisconnectedError):
        kind = httpx.RemoteProtocolError
        message = (
            "Server disconnected without sending a response."
            if sending
            else "peer closed connection without sending complete message body"
        )
    elif isinstance(error, aiohttp.ClientPayloadError):
        kind = httpx.RemoteProtocolError
        message = f"peer closed connection without sending complete message body ({message})"
    elif isinstance(error, aiohttp.ClientOSError | aiohttp.ClientConnectionError):
        kind = httpx.WriteError if sending and "write" in message.lower() else httpx.ReadError
    elif isinstance(error, aiohttp.InvalidURL):
        kind = httpx.UnsupportedProtocol
        message = "Invalid request URL."
    else:
        # A response aiohttp could not parse: the server does not speak HTTP. Not retried.
        kind = httpx.RemoteProtocolError
        detail = error.message if isinstance(error, aiohttp.ClientResponseError) else type(error).__name__
        message = f"Invalid HTTP response: {detail}"
    return kind(message, request=request)
