"""Responses built from a body already read: a caller's own copy of a shared or stored response."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx

__all__ = ["read_response"]


def read_response(
    status_code: int,
    headers: httpx.Headers | Sequence[tuple[bytes, bytes]],
    content: bytes,
    request: httpx.Request,
    extensions: Mapping[str, Any],
) -> httpx.Response:
    """
    A response whose decoded body is `content`, read and closed, for `request`.

    Not through `httpx.Response(content=...)`: that runs the body through the decoders its
    `Content-Encoding` names, and this body is decoded already (as `aiohttp_pool` does too).
    """
    response = httpx.Response(
        status_code, headers=headers, stream=httpx.ByteStream(content), request=request, extensions=dict(extensions)
    )
    response._content = content
    response.is_stream_consumed = True
    response.is_closed = True
    return response
