"""
The backends: the connection pools attempts are sent through, behind httpx's transport API.

- `aiohttp` (the default): aiohttp's pool, several times faster, safe under cancellation.
- `httpx`: httpx's own pool, needed for HTTP/2, cancelled only where httpcore is safe under it.

Both implement `protocol.Backend`; one that must not see a caller's cancellation mid-attempt
also implements `protocol.Shielding`, which the pipeline honours.
"""

from __future__ import annotations

import ssl
from typing import Literal

import httpx

from .aiohttp_pool import AiohttpTransport
from .httpx_pool import CancelSafeTransport
from .tls import tls_context

__all__ = ["DEFAULT_BACKEND", "DEFAULT_LIMITS", "BackendName", "default_transport"]

#: The inner transports a client can be built on, by name.
BackendName = Literal["aiohttp", "httpx"]

#: The default backend: aiohttp's pool, the fastest that passes the whole suite (see the
#: Performance page of the docs). Tests switch it to run everything on each backend.
DEFAULT_BACKEND: BackendName = "aiohttp"

#: httpx's own pool defaults, spelled out so that they are documented here.
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)


def default_transport(
    *,
    backend: BackendName | None = None,
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
        httpx.AsyncHTTPTransport(verify=tls_context(verify, http2), http2=http2, limits=limits, proxy=proxy),
        http2=http2,
    )
