"""
The httpx private names the request path uses, all in this module: each is pinned by
`tests/test_reaches.py` and listed under "Reaches into other libraries" in docs/architecture.md.

They buy speed on every call, where httpx's public route rebuilds what is already there:
`Headers.raw` builds a new list on each read (four reads a call), `Headers(raw)` normalises
every header the parser already gave as bytes, `Request.read()` runs a `typing.Iterable`
check to join an empty body, and `Response.read()` runs a body read elsewhere through the
decoder chain again. httpx2 has the same names (the suite runs on both).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import httpx

__all__ = ["header_list", "headers_from_raw", "mark_read", "read_response"]

#: Handed to httpx's constructors in place of `None`: they copy a `Headers` at once, and test
#: `None` against `typing.Mapping`, an ABC check that costs more than the copy.
_NO_HEADERS: Final = httpx.Headers()


def header_list(headers: httpx.Headers) -> list[tuple[bytes, bytes, bytes]]:
    """
    The headers as httpx holds them, `(name, lowercased name, value)` bytes, without a copy.
    Read it, never change it; keep a copy (`list(...)`) to compare later calls with: httpx
    changes it in place when a header is set.
    """
    return headers._list


def headers_from_raw(raw: Sequence[tuple[bytes, bytes]]) -> httpx.Headers:
    """`httpx.Headers(raw)` for headers a parser gave as bytes, without normalising them again."""
    headers = httpx.Headers(_NO_HEADERS)
    headers._list = [(name, name.lower(), value) for name, value in raw]
    return headers


def mark_read(request: httpx.Request, content: bytes) -> None:
    """`request.read()` for a request whose `ByteStream` holds `content`, without reading it."""
    request._content = content


def read_response(
    status_code: int,
    headers: httpx.Headers | Sequence[tuple[bytes, bytes]],
    content: bytes,
    request: httpx.Request | None,
    extensions: Mapping[str, Any],
) -> httpx.Response:
    """
    A response whose decoded body is `content`, read and closed (for `request`, if given).

    Not through `httpx.Response(content=...)`: that runs the body through the decoders its
    `Content-Encoding` names, and this body is decoded already (or was never coded).
    """
    response = httpx.Response(
        status_code, headers=_NO_HEADERS, stream=httpx.ByteStream(content), request=request, extensions=extensions
    )
    # Its own headers: a copy of a `Headers` (cheap: httpx copies its list), or built from bytes.
    response.headers = httpx.Headers(headers) if isinstance(headers, httpx.Headers) else headers_from_raw(headers)
    response._content = content
    response.is_stream_consumed = True
    response.is_closed = True  # nothing left to close
    return response
