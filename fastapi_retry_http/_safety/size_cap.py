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

import importlib
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from types import ModuleType
from typing import Final, NoReturn, Protocol

import httpx

from ..exceptions import ResponseTooLargeError


class _DefaultCap(int):
    """An int that marks the default cap: it applies to buffered calls only."""


#: The default `max_response_bytes` of `Client` and `ClientSettings`, for buffered calls only.
#: A buffered call holds its whole body in memory, twice over while httpx joins the pieces (a
#: 32 MiB body peaked at 64 MiB, measured), more once the caller parses it. 32 MiB is far above
#: what JSON APIs answer, and a few dozen such calls at once do not take a service down. A
#: streamed call is not capped unless given a number explicitly: it reads piece by piece, and
#: downloading a large file with `stream()` works by default.
DEFAULT_MAX_RESPONSE_BYTES: Final[int] = _DefaultCap(32 << 20)

#: The most a decoding layer produces in one step (brotli's limit stops its buffer growing once
#: past it: 96 KiB at most, measured).
PIECE: Final = 64 * 1024

#: zstandard's Python API cannot bound the output of one call, so its input goes in slices: a
#: zstd block decodes to at most 128 KiB and takes at least 4 bytes, so 64 bytes yield at most
#: 2 MiB (measured on zeros). It costs about 5 ms per compressed MB, measured.
ZSTD_SLICE: Final = 64

#: RFC 9659: a decoder may refuse zstd windows above 8 MiB (each costs that much memory).
ZSTD_MAX_WINDOW: Final = 8 << 20


def _optional(*names: str) -> ModuleType | None:
    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError:
            pass
    return None


# The same modules, in the same order of preference, as httpx's own decoders.
_brotli = _optional("brotli", "brotlicffi")
_zstandard = _optional("zstandard")


TRUNCATED: Final = "the body ends before its compressed stream does"


class _Corrupt(Exception):
    """A body that does not decode; raised to the caller as `httpx.DecodingError`."""


class _Layer(Protocol):
    # Decodes `data` into pieces of bounded size, all it can; raises _Corrupt.
    def feed(self, data: bytes) -> Iterator[bytes]: ...
    # The body ended: raises _Corrupt if this coding's stream did not.
    def finish(self) -> None: ...


class _Zlib:
    """gzip (every member, RFC 1952) or deflate, zlib-wrapped or raw as httpx accepts it."""

    def __init__(self, gzip: bool) -> None:
        self._gzip = gzip
        self._wbits = zlib.MAX_WBITS | 16 if gzip else zlib.MAX_WBITS
        self._decoder = zlib.decompressobj(self._wbits)
        self._started = False
        self._head = b""  # deflate: the first bytes, until they tell zlib-wrapped from raw

    def feed(self, data: bytes) -> Iterator[bytes]:
        if not self._gzip and not self._started:
            # "deflate" should be zlib-wrapped but is often raw: a zlib header says which.
            data, self._head = self._head + data, b""
            if len(data) < 2:
                self._head = data
                return
            if (data[0] & 0x0F) != 8 or (data[0] << 8 | data[1]) % 31:
                self._wbits = -zlib.MAX_WBITS
                self._decoder = zlib.decompressobj(self._wbits)
        more = bool(data)
        while more:
            if self._decoder.eof:
                if not self._gzip:
                    raise _Corrupt("data after the end of the deflate stream")
                # Another gzip member. Zero padding between members is allowed, as Python's
                # gzip module reads it.
                data = data.lstrip(b"\0")
                if not data:
                    return
                self._decoder = zlib.decompressobj(self._wbits)
            self._started = True
            try:
                out = self._decoder.decompress(data, PIECE)
            except zlib.error as error:
                raise _Corrupt(str(error)) from None
            if out:
                yield out
            if self._decoder.eof:
                data = self._decoder.unused_data
                more = bool(data)
            else:
                data = self._decoder.unconsumed_tail
                # A full piece may leave output inside zlib with no input left: ask again.
                more = bool(data) or len(out) == PIECE

    def finish(self) -> None:
        if self._head or (self._started and not self._decoder.eof):
            raise _Corrupt(TRUNCATED)


class _Brotli:
    """br, with brotli's output limit (brotli and brotlicffi 1.2 and later)."""

    def __init__(self) -> None:
        assert _brotli is not None
        self._decoder = _brotli.Decompressor()
        self._started = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        assert _brotli is not None
        self._started = self._started or bool(data)
        try:
            out: bytes = self._decoder.process(data, output_buffer_limit=PIECE)
            while True:
                if out:
                    yield out
                if self._decoder.can_accept_more_data():
                    return
                out = self._decoder.process(b"", output_buffer_limit=PIECE)
        except _brotli.error as error:
            raise _Corrupt(str(error)) from None

    def finish(self) -> None:
        if self._started and not self._decoder.is_finished():
            raise _Corrupt(TRUNCATED)


class _Zstd:
    """zstd, every frame (as httpx reads it), its input in `ZSTD_SLICE` slices."""

    def __init__(self) -> None:
        assert _zstandard is not None
        self._context = _zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
        self._decoder = self._context.decompressobj()
        self._started = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        assert _zstandard is not None
        view = memoryview(data)
        try:
            for start in range(0, len(view), ZSTD_SLICE):
                piece = view[start : start + ZSTD_SLICE]
                while piece:
                    if self._decoder.eof:
                        self._decoder = self._context.decompressobj()  # the next frame
                    self._started = True
                    out: bytes = self._decoder.decompress(piece)
                    if out:
                        yield out
                    piece = memoryview(self._decoder.unused_data) if self._decoder.eof else view[:0]
        except _zstandard.ZstdError as error:
            raise _Corrupt(str(error)) from None

    def finish(self) -> None:
        if self._started and not self._decoder.eof:
            raise _Corrupt(TRUNCATED)


class _Refused:
    """Codings httpx would decode itself in one unbounded call (or in the wrong order)."""

    def __init__(self, message: str) -> None:
        self._message = message

    def feed(self, data: bytes) -> Iterator[bytes]:
        raise _Corrupt(self._message)

    def finish(self) -> None:
        raise _Corrupt(self._message)


def _brotli_bounded() -> bool:
    return _brotli is not None and hasattr(_brotli.Decompressor(), "can_accept_more_data")


#: The codings decoded here, each with bounded memory.
DECODERS: Final[dict[str, Callable[[], _Layer]]] = {
    "gzip": lambda: _Zlib(gzip=True),
    # RFC 9110: a recipient should treat "x-gzip" as "gzip" (httpx leaves it encoded).
    "x-gzip": lambda: _Zlib(gzip=True),
    "deflate": lambda: _Zlib(gzip=False),
    **({"br": _Brotli} if _brotli_bounded() else {}),
    **({"zstd": _Zstd} if _zstandard is not None else {}),
}

#: What a client asks for: the codings decoded here. An older brotli cannot bound its output,
#: so br is then not asked for.
ACCEPT_ENCODING: Final = ", ".join(coding for coding in DECODERS if coding != "x-gzip")

#: What httpx itself decodes, in one unbounded call per chunk, when it is left to it.
_HTTPX_DECODES: Final = {"gzip", "deflate"} | ({"br"} if _brotli else set()) | ({"zstd"} if _zstandard else set())

_BODILESS: Final = frozenset({204, 304})


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
    codings = [c.strip().lower() for c in response.headers.get_list("content-encoding", split_commas=True)]
    left = [c for c in codings if c and c != "identity"]
    layers: list[_Layer] = []
    while left and left[-1] in DECODERS:  # codings are listed in the order applied
        layers.append(DECODERS[left.pop()]())
    if _HTTPX_DECODES.intersection(left):
        if limit is None:
            return  # nothing to count: httpx decodes it all, as it always has
        layers = [_Refused(f"Content-Encoding {', '.join(codings)!r} cannot be decoded with bounded memory.")]
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
        self, stream: httpx.AsyncByteStream, request: httpx.Request, limit: int | None, layers: list[_Layer]
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
        except _Corrupt as error:
            raise httpx.DecodingError(str(error), request=self._request) from None

    def _decoded(self, chunk: bytes) -> Iterable[bytes]:
        # Generators all the way down: each layer holds at most one piece at a time.
        pieces: Iterable[bytes] = (chunk,)
        for layer in self._layers:
            pieces = _through(layer, pieces)
        return pieces

    async def aclose(self) -> None:
        await self._stream.aclose()


def _through(layer: _Layer, pieces: Iterable[bytes]) -> Iterator[bytes]:
    for piece in pieces:
        yield from layer.feed(piece)


def _too_large(request: httpx.Request, limit: int) -> NoReturn:
    raise ResponseTooLargeError(
        f"The response body is larger than max_response_bytes ({limit} bytes).", request=request
    )
