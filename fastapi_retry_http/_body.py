"""
The `max_response_bytes` cap, counted on decoded bytes while the body is read.

The cap counts *decoded* bytes: 200 KB of gzip can expand to 200 MB, and httpx decodes a
whole network chunk at once (a 64 KB chunk of a gzip bomb decoded to 67 MB, measured), so a
check after httpx decodes comes far too late. The counter here decompresses with zlib's
`max_length`, so it never holds more than the limit, and raises as soon as it is passed.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

import httpx

from .exceptions import ResponseTooLargeError


class LimitedStream(httpx.AsyncByteStream):
    """A streamed response body that raises once its decoded size passes the limit."""

    def __init__(self, response: httpx.Response, request: httpx.Request, limit: int) -> None:
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        self._stream = stream
        self._counter = DecodedSize(response, request, limit)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            self._counter.feed(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self._stream.aclose()


class DecodedSize:
    """Counts the decoded size of a body fed chunk by chunk; raises past `limit`."""

    def __init__(self, response: httpx.Response, request: httpx.Request, limit: int) -> None:
        self._request = request
        self._limit = limit
        self._size = 0
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            self._too_large()
        encoding = response.headers.get("content-encoding", "").strip().lower()
        self._decoder: zlib._Decompress | None = None
        # "deflate" is meant to be zlib-wrapped but is often raw; httpx accepts both.
        self._raw_deflate_fallback = encoding == "deflate"
        if encoding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(zlib.MAX_WBITS | 16)
        elif encoding == "deflate":
            self._decoder = zlib.decompressobj()
        # Other encodings are counted as they arrive on the wire: the client only advertises
        # gzip and deflate when a limit is set.

    def feed(self, chunk: bytes) -> None:
        if self._decoder is None:
            self._size += len(chunk)
        else:
            self._decode(chunk)
        if self._size > self._limit:
            self._too_large()

    def _decode(self, data: bytes) -> None:
        assert self._decoder is not None
        try:
            while data and not self._decoder.eof:
                # Never ask for more than one byte past the limit: memory stays bounded.
                self._size += len(self._decoder.decompress(data, self._limit - self._size + 1))
                if self._size > self._limit:
                    return
                data = self._decoder.unconsumed_tail
        except zlib.error:
            if self._raw_deflate_fallback and self._size == 0:
                self._raw_deflate_fallback = False
                self._decoder = zlib.decompressobj(-zlib.MAX_WBITS)
                self._decode(data)
                return
            # Not ours to report: httpx raises DecodingError when it decodes the body. From
            # here on, count what arrives.
            self._decoder = None
            self._size += len(data)

    def _too_large(self) -> None:
        raise ResponseTooLargeError(
            f"The response body is larger than max_response_bytes ({self._limit} bytes).", request=self._request
        )
