"""
The size cap against every content coding and stack of them, gzip bodies of several members,
the default cap, and responses that have no body.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import tracemalloc
import zlib
from collections.abc import Callable

import brotli  # type: ignore[import-untyped]
import httpx
import pytest
import zstandard

from fastapi_retry_http import Client, ClientSettings
from fastapi_retry_http._safety import decoders as _body
from fastapi_retry_http._safety.decoders import PIECE
from fastapi_retry_http._safety.size_cap import DEFAULT_MAX_RESPONSE_BYTES, LimitedStream, limit_body
from fastapi_retry_http.exceptions import ResponseTooLargeError
from tests.servers import RawServer, Reply, Upstream

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("backend")]


def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": functools.partial(gzip.compress, mtime=0),
    "x-gzip": functools.partial(gzip.compress, mtime=0),
    "deflate": zlib.compress,
    "raw-deflate": _raw_deflate,
    "br": functools.partial(brotli.compress, quality=5),
    "zstd": zstandard.ZstdCompressor().compress,
    "identity": lambda data: data,
}


def encode(data: bytes, codings: list[str]) -> tuple[bytes, dict[str, str]]:
    """The body with `codings` applied in order, and its Content-Encoding header."""
    for coding in codings:
        data = ENCODERS[coding](data)
    names = ", ".join("deflate" if c == "raw-deflate" else c for c in codings)
    return data, {"Content-Encoding": names}


@functools.cache
def bomb(codings: tuple[str, ...], size: int = 50 << 20) -> tuple[bytes, dict[str, str]]:
    return encode(b"\0" * size, list(codings))


async def traced(coroutine: object) -> int:
    """Peak memory (bytes, tracemalloc) while awaiting `coroutine`; it must raise ResponseTooLargeError."""
    tracemalloc.start()
    try:
        with pytest.raises(ResponseTooLargeError):
            await coroutine  # type: ignore[misc]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


STACKS = [
    ["gzip", "gzip"],
    ["deflate", "gzip"],
    ["gzip", "raw-deflate"],
    ["x-gzip"],
    ["br"],
    ["zstd"],
    ["gzip", "br"],
    ["br", "zstd"],
    ["zstd", "gzip", "deflate"],
]


class TestEveryCoding:
    @pytest.mark.parametrize("codings", STACKS, ids="+".join)
    async def test_a_bomb_is_refused_with_memory_far_below_its_expansion(
        self, upstream: Upstream, codings: list[str]
    ) -> None:
        wire, headers = bomb(tuple(codings))  # 50 MB decoded, at most a few hundred KB on the wire
        assert len(wire) < 300_000
        upstream.script("/bomb", Reply(200, wire, headers))
        async with Client(upstream.url, max_response_bytes=1_000_000) as c:
            peak = await traced(c.get("/bomb"))
        assert peak < 10 << 20
        assert upstream.hits["/bomb"] == 1

    @pytest.mark.parametrize("codings", [*STACKS, ["identity", "gzip"], ["identity"]], ids="+".join)
    async def test_the_caller_gets_the_decoded_body_and_the_cap_counts_it(
        self, upstream: Upstream, codings: list[str]
    ) -> None:
        body = bytes(range(256)) * 40  # 10240 bytes
        wire, headers = encode(body, codings)
        upstream.script("/fits", Reply(200, wire, headers))
        upstream.script("/over", Reply(200, wire, headers))
        async with Client(upstream.url, max_response_bytes=len(body)) as c:
            response = await c.get("/fits")
            assert response.content == body
            assert response.headers.get("content-encoding", "identity") == "identity"  # decoded
        async with Client(upstream.url, max_response_bytes=len(body) - 1) as c:
            with pytest.raises(ResponseTooLargeError):
                await c.get("/over")

    async def test_an_unknown_coding_is_left_encoded_and_counted_on_the_wire(self, upstream: Upstream) -> None:
        wire = b"opaque" * 1000
        upstream.script("/fits", Reply(200, wire, {"Content-Encoding": "x-custom"}))
        upstream.script("/over", Reply(200, wire, {"Content-Encoding": "x-custom"}))
        async with Client(upstream.url, max_response_bytes=len(wire)) as c:
            response = await c.get("/fits")
        assert response.content == wire
        assert response.headers["content-encoding"] == "x-custom"
        async with Client(upstream.url, max_response_bytes=len(wire) - 1) as c:
            with pytest.raises(ResponseTooLargeError):
                await c.get("/over")

    async def test_known_codings_applied_before_an_unknown_one_are_decoded(self, upstream: Upstream) -> None:
        # "x-custom, gzip": gzip was applied last, so it comes off; x-custom stays.
        inner = b"opaque" * 1000
        upstream.script("/x", Reply(200, gzip.compress(inner), {"Content-Encoding": "x-custom, gzip"}))
        async with Client(upstream.url, max_response_bytes=len(inner)) as c:
            response = await c.get("/x")
        assert response.content == inner
        assert response.headers["content-encoding"] == "x-custom"

    async def test_a_known_coding_beneath_an_unknown_one_is_a_decoding_error(self, upstream: Upstream) -> None:
        # httpx would skip x-custom and inflate the rest itself, with no bound on the output.
        wire, _ = bomb(("gzip",))
        upstream.script("/x", Reply(200, wire, {"Content-Encoding": "gzip, x-custom"}))
        async with Client(upstream.url, max_response_bytes=1_000_000) as c:
            with pytest.raises(httpx.DecodingError):
                await c.get("/x")

    async def test_br_is_refused_under_a_cap_when_brotli_cannot_bound_its_output(
        self, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # As with brotli < 1.2: httpx can decode br, but only in one unbounded call per chunk.
        monkeypatch.delitem(_body.DECODERS, "br")
        wire, headers = encode(b"hello" * 100, ["br"])
        upstream.script("/capped", Reply(200, wire, headers))
        upstream.script("/streamed", Reply(200, wire, headers))
        upstream.script("/empty", Reply(200, b"", headers))
        async with Client(upstream.url, max_response_bytes=10_000) as c:
            with pytest.raises(httpx.DecodingError):
                await c.get("/capped")
            with pytest.raises(httpx.DecodingError):
                await c.get("/empty")
        async with Client(upstream.url) as c, c.stream("GET", "/streamed") as response:
            assert await response.aread() == b"hello" * 100  # uncapped: httpx decodes, as before

    def test_br_is_not_asked_for_when_brotli_cannot_bound_its_output(self, monkeypatch: pytest.MonkeyPatch) -> None:
        class OldDecompressor:
            def process(self, data: bytes) -> bytes:
                return data

        monkeypatch.setattr(_body, "_brotli", type("brotli", (), {"Decompressor": OldDecompressor}))
        assert not _body._brotli_bounded()

    def test_a_missing_optional_module_is_none(self) -> None:
        assert _body._optional("fastapi_retry_http_no_such_module") is None

    async def test_the_client_asks_for_what_it_decodes(self, upstream: Upstream) -> None:
        async with Client(upstream.url) as c:
            await c.get("/x")
        headers, _ = upstream.seen["/x"][0]
        assert headers["accept-encoding"] == "gzip, deflate, br, zstd"

    async def test_an_uncapped_stream_decodes_layered_codings_piece_by_piece(self, upstream: Upstream) -> None:
        wire, headers = bomb(("gzip", "gzip"))
        upstream.script("/big", Reply(200, wire, headers))
        async with Client(upstream.url, max_response_bytes=None) as c, c.stream("GET", "/big") as response:
            total = largest = 0
            tracemalloc.start()
            try:
                async for chunk in response.aiter_bytes():
                    total += len(chunk)
                    largest = max(largest, len(chunk))
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
        assert total == 50 << 20
        assert largest <= PIECE
        assert peak < 10 << 20


def members(*parts: bytes) -> bytes:
    return b"".join(gzip.compress(part, mtime=0) for part in parts)


class TestGzipMembers:
    @pytest.mark.parametrize("cap", [None, 100_000])
    async def test_every_member_reaches_the_caller(self, upstream: Upstream, cap: int | None) -> None:
        upstream.script("/get", Reply(200, members(b"first,", b"second,", b"third"), {"Content-Encoding": "gzip"}))
        upstream.script("/stream", Reply(200, members(b"first,", b"second,", b"third"), {"Content-Encoding": "gzip"}))
        async with Client(upstream.url, max_response_bytes=cap) as c:
            assert (await c.get("/get")).content == b"first,second,third"
            async with c.stream("GET", "/stream") as response:
                assert await response.aread() == b"first,second,third"

    async def test_later_members_count_against_the_cap(self, upstream: Upstream) -> None:
        upstream.script("/x", Reply(200, members(b"small") + bomb(("gzip",))[0], {"Content-Encoding": "gzip"}))
        async with Client(upstream.url, max_response_bytes=1_000_000) as c:
            peak = await traced(c.get("/x"))
        assert peak < 10 << 20

    async def test_zero_padding_after_a_member_is_allowed(self, upstream: Upstream) -> None:
        body = gzip.compress(b"one") + b"\0" * 100 + gzip.compress(b"two") + b"\0" * 7
        upstream.script("/x", Reply(200, body, {"Content-Encoding": "gzip"}))
        async with Client(upstream.url) as c:
            assert (await c.get("/x")).content == b"onetwo"

    @pytest.mark.parametrize(
        ("coding", "wire"),
        [
            pytest.param("gzip", gzip.compress(b"data", mtime=0) + b"garbage", id="gzip-garbage"),
            # Cut short: the HTTP framing is complete, only the gzip stream says data is missing.
            pytest.param("gzip", gzip.compress(b"data" * 1000, mtime=0)[:-12], id="gzip-truncated"),
            pytest.param("deflate", zlib.compress(b"data") + b"garbage", id="deflate-garbage"),
            pytest.param("deflate", zlib.compress(b"data" * 1000)[:-12], id="deflate-truncated"),
            pytest.param("deflate", b"x", id="deflate-one-byte"),
            pytest.param("br", brotli.compress(b"data" * 1000)[:-5], id="br-truncated"),
            pytest.param("br", brotli.compress(b"data") + b"garbage", id="br-garbage"),
            pytest.param("zstd", ENCODERS["zstd"](b"data" * 1000)[:-5], id="zstd-truncated"),
            pytest.param("zstd", ENCODERS["zstd"](b"data") + b"garbage", id="zstd-garbage"),
        ],
    )
    async def test_a_truncated_or_trailing_garbage_body_is_a_decoding_error(
        self, upstream: Upstream, coding: str, wire: bytes
    ) -> None:
        upstream.script("/x", Reply(200, wire, {"Content-Encoding": coding}))
        async with Client(upstream.url, max_response_bytes=None) as c:
            with pytest.raises(httpx.DecodingError):
                await c.get("/x")

    @pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
    async def test_an_empty_encoded_body_is_empty(self, upstream: Upstream, coding: str) -> None:
        upstream.script("/x", Reply(200, b"", {"Content-Encoding": coding}))
        async with Client(upstream.url) as c:
            assert (await c.get("/x")).content == b""

    async def test_several_zstd_frames_are_all_decoded(self, upstream: Upstream) -> None:
        wire = ENCODERS["zstd"](b"one") + ENCODERS["zstd"](b"two")
        upstream.script("/x", Reply(200, wire, {"Content-Encoding": "zstd"}))
        async with Client(upstream.url) as c:
            assert (await c.get("/x")).content == b"onetwo"


class TestDefaultCap:
    async def test_buffered_calls_are_capped_and_streamed_ones_are_not(self, upstream: Upstream) -> None:
        size = DEFAULT_MAX_RESPONSE_BYTES + 1
        wire, headers = bomb(("gzip",), size)
        upstream.script("/file", Reply(200, wire, headers), Reply(200, wire, headers))
        async with Client(upstream.url) as c:
            with pytest.raises(ResponseTooLargeError):
                await c.get("/file")
            async with c.stream("GET", "/file") as response:
                assert sum([len(chunk) async for chunk in response.aiter_bytes()]) == size

    async def test_a_content_length_over_the_default_refuses_a_buffered_call_only(self) -> None:
        async def huge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n" + b"x" * 1000)
            await writer.drain()
            await asyncio.sleep(3600)

        async with RawServer(huge) as server, Client(server.url) as c:
            with pytest.raises(ResponseTooLargeError):
                await c.get("/x")
            async with c.stream("GET", "/x") as response:
                assert response.headers["content-length"] == "1000000000"
                async for chunk in response.aiter_bytes():
                    assert chunk  # the download starts
                    break

    async def test_none_lifts_it(self, upstream: Upstream) -> None:
        size = DEFAULT_MAX_RESPONSE_BYTES + 1
        wire, headers = bomb(("gzip",), size)
        upstream.script("/file", Reply(200, wire, headers))
        async with Client(upstream.url, max_response_bytes=None) as c:
            assert len((await c.get("/file")).content) == size

    async def test_a_number_given_caps_streams_too(self, upstream: Upstream) -> None:
        wire, headers = bomb(("gzip",), 2000)
        upstream.script("/x", Reply(200, wire, headers))
        async with Client(upstream.url, max_response_bytes=1000) as c, c.stream("GET", "/x") as response:
            with pytest.raises(ResponseTooLargeError):
                await response.aread()

    def test_settings_default_to_it(self) -> None:
        settings = ClientSettings(base_url="http://127.0.0.1")
        assert settings.max_response_bytes == DEFAULT_MAX_RESPONSE_BYTES == 32 << 20
        assert settings.client_kwargs()["max_response_bytes"] is DEFAULT_MAX_RESPONSE_BYTES
        assert ClientSettings(base_url="http://127.0.0.1", max_response_bytes=None).max_response_bytes is None


class TestBodilessResponses:
    @pytest.mark.parametrize("status", [200, 404])
    async def test_a_head_is_never_refused_on_its_content_length(self, status: int) -> None:
        async def head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 50000000\r\n\r\n".encode())
            await writer.drain()

        async with RawServer(head) as server, Client(server.url, max_response_bytes=1000) as c:
            response = await c.head("/file")
            assert (response.status_code, response.headers["content-length"]) == (status, "50000000")
            async with c.stream("HEAD", "/file") as streamed:
                assert streamed.headers["content-length"] == "50000000"
            assert server.requests == 2

    @pytest.mark.parametrize("status", [204, 304])
    async def test_204_and_304_are_never_refused_on_their_content_length(self, status: int) -> None:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 50000000\r\n\r\n".encode())
            await writer.drain()

        async with RawServer(answer) as server, Client(server.url, max_response_bytes=1000) as c:
            response = await c.get("/x")
            assert (response.status_code, response.content) == (status, b"")
            response = await c.get("/x")  # and the connection is still good
            assert response.status_code == status

    @pytest.mark.parametrize("status", [100, 101, 204, 304])
    def test_informational_and_bodiless_statuses_keep_their_stream(self, status: int) -> None:
        request = httpx.Request("GET", "http://127.0.0.1/")
        response = httpx.Response(status, headers={"Content-Length": "50000000"}, stream=httpx.ByteStream(b""))
        stream = response.stream
        limit_body(response, request, 1000, buffered=True)
        assert response.stream is stream

    def test_a_get_with_a_body_is_counted(self) -> None:
        request = httpx.Request("GET", "http://127.0.0.1/")
        response = httpx.Response(200, stream=httpx.ByteStream(b""))
        limit_body(response, request, 1000, buffered=True)
        assert isinstance(response.stream, LimitedStream)
