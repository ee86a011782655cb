"""
Following redirects without leaking credentials.

httpx drops `Authorization` on a cross-origin redirect but forwards every other header, so a
configured `X-Api-Key` follows a redirect to any host (measured). Every request that goes
through httpx's send loop (the only one that follows redirects) remembers its origin and the
names of the headers it was given, in its extensions, which httpx hands on to every hop. The
pipeline checks each hop it receives (`guard_hop`), so the guard holds however redirects were
turned on: at construction, or later through `client.httpx.follow_redirects`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import httpx

from ..exceptions import UnsafeRedirectError

__all__ = ["guard_hop", "remember_first_hop", "remember_origin"]

_ORIGIN: Final = "fastapi_retry_http.origin"
_PRIVATE: Final = "fastapi_retry_http.private_headers"

#: Always dropped when a hop leaves the origin.
ALWAYS_PRIVATE: Final = frozenset({"authorization", "cookie", "proxy-authorization"})
#: httpx's own defaults and what describes the body or the hop: nothing secret, and the next
#: hop needs them (httpx rewrites `Host` for it).
_HTTPX_DEFAULTS: Final = frozenset(
    {
        "accept",
        "accept-encoding",
        "connection",
        "user-agent",
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
    }
)


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def remember_origin(request: httpx.Request, private: Iterable[str]) -> None:
    """Record where `request` starts and which of its headers are the caller's."""
    names = {name.lower() for name in private} - _HTTPX_DEFAULTS
    request.extensions = {**request.extensions, _ORIGIN: _origin(request.url), _PRIVATE: names | ALWAYS_PRIVATE}


async def remember_first_hop(request: httpx.Request) -> None:
    """httpx request hook, first of every client's: where a request starts, and its headers."""
    if _ORIGIN not in request.extensions:
        remember_origin(request, request.headers.keys())


def guard_hop(request: httpx.Request) -> None:
    """Strip private headers from a hop that left its origin; refuse https to http."""
    origin = request.extensions.get(_ORIGIN)
    if origin is None or _origin(request.url) == origin:
        return
    if origin[0] == "https" and request.url.scheme != "https":
        raise UnsafeRedirectError("Refused a redirect from https to http.", request=request)
    for name in request.extensions[_PRIVATE]:
        request.headers.pop(name, None)
