"""The inner transports that `RetryTransport` wraps, and the TLS contexts they share."""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Coroutine
from functools import lru_cache
from typing import Any, Literal

import httpx

from ._aiohttp import AiohttpTransport
from .exceptions import ConfigurationError

#: The inner transports a client can be built on, by name.
Backend = Literal["aiohttp", "httpx"]

#: The default backend: aiohttp's pool, the fastest that passes the whole suite (see the
#: Performance page of the docs). Tests switch it to run everything on each backend.
DEFAULT_BACKEND: Backend = "aiohttp"

#: httpx's own pool defaults, spelled out so that they are documented here.
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)


def default_transport(
    *,
    backend: Backend | None = None,
    verify: bool | str | ssl.SSLContext = True,
    http2: bool = False,
    limits: httpx.Limits | None = None,
    proxy: str | httpx.URL | None = None,
) -> httpx.AsyncBaseTransport:
    """The inner transport for `backend`, built with a shared TLS context."""
    backend = backend or DEFAULT_BACKEND
    limits = limits if limits is not None else DEFAULT_LIMITS
    if backend == "aiohttp" and not http2:  # aiohttp speaks HTTP/1.1 only
        return AiohttpTransport(ssl_context=tls_context(verify, False), limits=limits, proxy=proxy)
    return CancelSafeTransport(
        httpx.AsyncHTTPTransport(verify=tls_context(verify, http2), http2=http2, limits=limits, proxy=proxy)
    )


def tls_context(verify: bool | str | ssl.SSLContext, http2: bool) -> ssl.SSLContext:
    """
    The TLS context for `verify`: a caller's own context as is, otherwise a shared one.

    Raises:
        ConfigurationError: `verify` is a CA bundle path where there is no file or directory,
            or a caller's own context with `http2=True`.
    """
    if isinstance(verify, ssl.SSLContext):
        if http2:
            # httpcore sets the ALPN protocols on the context it is given, at every connection:
            # with http2 it would offer h2 on the caller's context, for every other client of it
            # too (an aiohttp-backend client then gets an h2 answer it cannot read). An
            # SSLContext can be neither copied nor asked for its ALPN, so it is refused here.
            raise ConfigurationError(
                "verify: an ssl.SSLContext cannot be used with http2=True (httpx would set its ALPN "
                "protocols on your context, which every other user of it would then offer); pass "
                "verify=True or a CA bundle path instead."
            )
        return verify
    if isinstance(verify, bool):
        return _shared_context(verify, http2, None)
    try:
        found = os.stat(verify)
    except (FileNotFoundError, NotADirectoryError):
        # The path is not shown: it says where the secrets of the deployment are kept.
        raise ConfigurationError("verify: CA bundle not found (no such file or directory)") from None
    # A bundle rotated at the same path (a new file, a renamed one or a swapped symlink) has
    # another inode, size or mtime, and so gets a context of its own.
    version = (found.st_mtime_ns, found.st_size, found.st_ino, found.st_dev)
    return _shared_context(verify, http2, version)


@lru_cache(maxsize=32)
def _shared_context(verify: bool | str, http2: bool, version: tuple[int, ...] | None) -> ssl.SSLContext:
    # httpx builds a new SSLContext per client (about 48 ms, mostly loading the CA store).
    # Clients with the same TLS settings share one; http2 is part of the key because httpcore
    # sets the ALPN protocols on the context it is given, and `version` is the CA bundle's
    # stat so that a bundle replaced on disk is read again (contexts of old versions fall out
    # of the cache as new ones come in).
    if isinstance(verify, bool):
        return httpx.create_ssl_context(verify=verify)
    if os.path.isdir(verify):
        return ssl.create_default_context(capath=verify)
    return ssl.create_default_context(cafile=verify)


class CancelSafeTransport(httpx.AsyncBaseTransport):
    """
    httpx's transport, kept out of the way of cancellation.

    httpcore 1.0 can lose a pool slot for good when a request is cancelled mid-flight (with
    `max_connections=2`, 20 rounds of 10 cancelled requests ended in a permanent
    `PoolTimeout` in 1 run of 8, measured). `RetryTransport` runs each attempt on this
    transport, body read included, through `shield()`: the caller's cancellation is never
    delivered inside httpcore. The caller stops waiting at once; the attempt finishes in the
    background (cut after `BACKGROUND_LIMIT`) and its response is closed, which frees the slot.
    """

    #: Seconds a cancelled attempt may go on in the background before it is cut.
    BACKGROUND_LIMIT = 30.0

    def __init__(self, inner: httpx.AsyncHTTPTransport) -> None:
        self.inner = inner
        self._background: set[asyncio.Task[httpx.Response]] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        # Headers were checked before any I/O (`RetryTransport`), so h11 never gets to quote
        # a header value in an error of its own.
        return await self.inner.handle_async_request(request)

    async def shield(self, attempt: Coroutine[Any, Any, httpx.Response]) -> httpx.Response:
        """Run `attempt` where the caller's cancellation cannot reach it."""
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
        for task in list(self._background):
            task.cancel()
        await self.inner.aclose()
