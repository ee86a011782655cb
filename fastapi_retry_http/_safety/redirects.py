"""
Following redirects without leaking credentials.

httpx drops `Authorization` on a cross-origin redirect but forwards every other header, so a
configured `X-Api-Key` follows a redirect to any host (measured). With `follow_redirects=True`
the client remembers each request's origin and the names of the headers it was given, and a
request hook, which httpx calls for every hop, strips them when a hop leaves that origin.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import httpx

from ..exceptions import UnsafeRedirectError

__all__ = ["guard_redirect", "remember_origin"]

_ORIGIN: Final = "fastapi_retry_http.origin"
_PRIVATE: Final = "fastapi_retry_http.private_headers"

#: Always dropped when a hop leaves the origin.
ALWAYS_PRIVATE: Final = frozenset({"authorization", "cookie", "proxy-authorization"})
#: httpx's own defaults: nothing secret, and the next hop needs them.
_HTTPX_DEFAULTS: Final = frozenset({"accept", "accept-encoding", "connection", "user-agent"})


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def remember_origin(request: httpx.Request, private: Iterable[str]) -> None:
    """Record where `request` starts and which of its headers are the caller's."""
    names = {name.lower() for name in private} - _HTTPX_DEFAULTS
    request.extensions = {**request.extensions, _ORIGIN: _origin(request.url), _PRIVATE: names | ALWAYS_PRIVATE}


async def guard_redirect(request: httpx.Request) -> None:
    """httpx request hook: strip private headers on a cross-origin hop, refuse https to http."""
    origin = request.extensions.get(_ORIGIN)
    if origin is None or _origin(request.url) == origin:
        return
    if origin[0] == "https" and request.url.scheme != "https":
        raise UnsafeRedirectError("Refused a redirect from https to http.", request=request)
    for name in request.extensions[_PRIVATE]:
        request.headers.pop(name, None)
