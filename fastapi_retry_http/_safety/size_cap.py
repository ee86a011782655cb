"""
Response bodies: decoded here, with bounded memory, and counted against `max_response_bytes`.

The cap counts *decoded* bytes, and httpx decodes a whole network chunk at once (a 64 KB chunk
of a gzip bomb decoded to 67 MB, measured; `Content-Encoding: gzip, gzip` multiplies that
again). So the stream here undoes every content coding itself, layer by layer, each in pieces
of at most `PIECE` bytes, and raises as soon as the count passes the limit. httpx receives
identity bytes: the decoded codings come off `Content-Encoding` (and `Content-Length` with
them), so it does not decode them again. This also fixes what httpx gets wrong: it keeps only
the first member of a gzip body (RFC 1952 allows several) and drops the rest without a word,
and it does not notice a gzip, deflate or br stream cut short.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Final, NoReturn

import httpx

from .._pipeline.httpx_parts import header_list
from ..exceptions import ResponseTooLargeError
from .decoders import DECODERS, HTTPX_DECODES, Corrupt, Layer, Refused


class _DefaultCap(int):
    """An int that marks the default cap: it applies to buffered calls only."""


#: The default `max_response_bytes` of `Client` and `ClientSettings`, for buffered calls only.
#: A buffered call holds its whole body in memory, twice over while httpx joins the pieces (a
#: 32 MiB body peaked at 64 MiB, measured), more once the caller parses it. 32 MiB is far above
#: what JSON APIs answer, and a few dozen such calls at once do not take a service down. A
#: streamed call is not capped unless given a number explicitly: it reads piece by piece, and
#: downloading a large file with `stream()` works by default.
DEFAULT_MAX_RESPONSE_BYTES: Final[int] = _DefaultCap(32 << 20)

_BODILESS: Final = frozenset({204, 304})


def _coding_and_length(headers: httpx.Headers) -> tuple[bool, bytes]:
    """Whether a `Content-Encoding` other than identity is declared, and the `Content-Length`."""
    coded, declared = False, b""
    for _, name, value in header_list(headers):
        if name == b"content-encoding":
            coded = coded or value.strip().lower() not in (b"", b"identity")
        elif name == b"content-length":
            declared = value.strip()
    return coded, declared


def limit_body(response: httpx.Response, request: httpx.Request, limit: int | None, *, buffered: bool) -> None:
    """
    Make `response` decode its body here, counted against `limit` (`None`: not counted).

    Raises `ResponseTooLargeError` at once when nothing is to be decoded and `Content-Length`
    is over the limit. The default cap applies to buffered calls only.
    """
    if request.method == "HEAD" or response.status_code < 200 or response.status_code in _BODILESS:
        return  # no body, whatever Content-Length says: it is how a caller asks for a size
    if isinstance(limit, _DefaultCap) and not buffered:
        limit = None
    coded, declared = _coding_and_length(response.headers)
    if not coded:
        # The common response: nothing to decode. Checked on the raw bytes: httpx decodes
        # every header of a response the first time one is read as text.
        if limit is not None and declared.isdigit() and int(declared) > limit:
            _too_large(request, limit)
        if limit is None or declared.isdigit():
            # Both backends' HTTP parsers stop at Content-Length: nothing left to count, and
            # the common case stays free of a stream wrapper (2-4 us a call, measured).
            return
    codings = [c.strip().lower() for c in response.headers.get_list("content-encoding", split_commas=True)]
    left = [c for c in codings if c and c != "identity"]
    layers: list[Layer] = []
    while left and left[-1] in DECODERS:  # codings are listed in the order applied
        layers.append(DECODERS[left.pop()]())
    if HTTPX_DECODES.intersection(left):
        if limit is None:
            return  # nothing to count: httpx decodes it all, as it always has
        layers = [Refused(f"Content-Encoding {', '.join(codings)!r} cannot be decoded with bounded memory.")]
    elif layers:
        # What httpx gets is decoded: only the codings not undone here are left.
        del response.headers["content-encoding"]
        response.headers.pop("content-length", None)
        if left:
            response.headers["content-encoding"] = ", ".join(left)
    elif limit is None:
        return
    else:
        declared = response.headers.get("content-length", "")
        if declared.isdigit():
            if int(declared) > limit:
                _too_large(request, limit)
            # Both backends' HTTP parsers stop at Content-Length: nothing left to count, and
            # the common case stays free of a stream wrapper (2-4 us a call, measured).
            return
    stream = response.stream
    assert isinstance(stream, httpx.AsyncByteStream)
    response.stream = LimitedStream(stream, request, limit, layers)


class LimitedStream(httpx.AsyncByteStream):
    """A response body decoded through `layers`, raising once its size passes `limit`."""

    def __init__(
        self, stream: httpx.AsyncByteStream, request: httpx.Request, limit: int | None, layers: list[Layer]
    ) -> None:
        self._stream = stream
        self._request = request
        self._limit = limit
        self._layers = layers
        self._size = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                for piece in self._decoded(chunk):
                    self._size += len(piece)
                    if self._limit is not None and self._size > self._limit:
                        _too_large(self._request, self._limit)
                    yield piece
            # httpx does not notice a compressed stream cut short; the caller would get
            # part of the body as if it were all of it.
            for layer in self._layers:
                layer.finish()
        except Corrupt as error:
            raise httpx.DecodingError(str(error), request=self._request) from None

    def _decoded(self, chunk: bytes) -> Iterable[bytes]:
        # Generators all the way down: each layer holds at most one piece at a time.
        pieces: Iterable[bytes] = (chunk,)
        for layer in self._layers:
            pieces = _through(layer, pieces)
        return pieces

    async def aclose(self) -> None:
        await self._stream.aclose()


def _through(layer: Layer, pieces: Iterable[bytes]) -> Iterator[bytes]:
    for piece in pieces:
        yield from layer.feed(piece)


def _too_large(request: httpx.Request, limit: int) -> NoReturn:
    raise ResponseTooLargeError(
        f"The response body is larger than max_response_bytes ({limit} bytes).", request=request
    )
