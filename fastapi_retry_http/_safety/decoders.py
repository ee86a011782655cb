"""
The content decoders the size cap runs a body through, each with bounded memory: gzip and
deflate (zlib), br (brotli 1.2+) and zstd (zstandard), when installed.
"""

from __future__ import annotations

import importlib
import zlib
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Final, Protocol

__all__ = ["ACCEPT_ENCODING", "DECODERS", "HTTPX_DECODES", "PIECE", "TRUNCATED", "Corrupt", "Layer", "Refused"]


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


class Corrupt(Exception):
    """A body that does not decode; raised to the caller as `httpx.DecodingError`."""


class Layer(Protocol):
    # Decodes `data` into pieces of bounded size, all it can; raises Corrupt.
    def feed(self, data: bytes) -> Iterator[bytes]: ...
    # The body ended: raises Corrupt if this coding's stream did not.
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
                    raise Corrupt("data after the end of the deflate stream")
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
                raise Corrupt(str(error)) from None
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
            raise Corrupt(TRUNCATED)


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
            raise Corrupt(str(error)) from None

    def finish(self) -> None:
        if self._started and not self._decoder.is_finished():
            raise Corrupt(TRUNCATED)


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
            raise Corrupt(str(error)) from None

    def finish(self) -> None:
        if self._started and not self._decoder.eof:
            raise Corrupt(TRUNCATED)


class Refused:
    """Codings httpx would decode itself in one unbounded call (or in the wrong order)."""

    def __init__(self, message: str) -> None:
        self._message = message

    def feed(self, data: bytes) -> Iterator[bytes]:
        raise Corrupt(self._message)

    def finish(self) -> None:
        raise Corrupt(self._message)


def _brotli_bounded() -> bool:
    return _brotli is not None and hasattr(_brotli.Decompressor(), "can_accept_more_data")


#: The codings decoded here, each with bounded memory.
DECODERS: Final[dict[str, Callable[[], Layer]]] = {
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
HTTPX_DECODES: Final = {"gzip", "deflate"} | ({"br"} if _brotli else set()) | ({"zstd"} if _zstandard else set())
