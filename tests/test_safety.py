"""The safety guards: redirects, the response size cap, TLS, and the guards fuzzed."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import ssl
import tracemalloc
import zlib
from pathlib import Path

import httpx
import pytest
import trustme

from fastapi_retry_http import Client, RetryTransport
from fastapi_retry_http.exceptions import (
    ConfigurationError,
    ResponseTooLargeError,
    UnsafeRedirectError,
)
from tests.servers import RawServer, Reply, Upstream, ok

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("backend")]

#: Resolves paths against a base URL the way every Client does (never sends anything).

SECRET_HEADERS = {"Authorization": "Bearer tok", "X-Api-Key": "key", "Cookie": "session=1"}


class TestRedirects:
    async def test_off_by_default(self, upstream: Upstream) -> None:
        upstream.script("/moved", Reply(302, headers={"Location": "/landing"}))
        async with Client(upstream.url) as c:
            assert (await c.get("/moved")).status_code == 302
        assert upstream.hits["/landing"] == 0

    async def test_a_cross_origin_hop_carries_no_configured_or_credential_headers(self, upstream: Upstream) -> None:
        elsewhere = upstream.url.replace("127.0.0.1", "localhost") + "/landing"
        upstream.script("/moved", Reply(302, headers={"Location": elsewhere}))
        async with Client(upstream.url, headers=SECRET_HEADERS, follow_redirects=True) as c:
            response = await c.get("/moved", headers={"X-Call-Secret": "s"})
        assert response.status_code == 200
        headers, _ = upstream.seen["/landing"][0]
        assert not {"authorization", "x-api-key", "cookie", "x-call-secret"} & set(headers)
        assert headers["host"] == elsewhere.split("/")[2]

    async def test_a_same_origin_hop_keeps_them(self, upstream: Upstream) -> None:
        upstream.script("/moved", Reply(301, headers={"Location": "/landing"}))
        async with Client(upstream.url, headers=SECRET_HEADERS, follow_redirects=True) as c:
            await c.get("/moved")
        headers, _ = upstream.seen["/landing"][0]
        assert headers["x-api-key"] == "key"
        assert headers["authorization"] == "Bearer tok"

    async def test_https_to_http_is_refused(self) -> None:
        seen: list[str] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(str(request.url))
            return httpx.Response(302, headers={"Location": "http://billing.internal/plain"})

        transport = httpx.MockTransport(handler)
        async with Client("https://billing.internal", follow_redirects=True, transport=transport) as c:
            with pytest.raises(UnsafeRedirectError):
                await c.get("/secure")
        assert seen == ["https://billing.internal/secure"]

    async def test_user_hooks_still_run_on_every_hop(self, upstream: Upstream) -> None:
        hops: list[str] = []

        async def on_request(request: httpx.Request) -> None:
            hops.append(request.url.path)

        upstream.script("/moved", Reply(307, headers={"Location": "/landing"}))
        async with Client(upstream.url, follow_redirects=True, event_hooks={"request": [on_request]}) as c:
            await c.get("/moved")
        assert hops == ["/moved", "/landing"]


class TestHeaderInjection:
    @pytest.mark.parametrize("headers", [{"X-A": "tok-secret\r\nInjected: 1"}, {"X-A\r\nB": "tok-secret"}])
    async def test_crlf_in_a_call_header_fails_before_sending_without_echoing_it(
        self, headers: dict[str, str], waits: list[float]
    ) -> None:
        async with RawServer(lambda r, w, n: ok(r, w)) as server, Client(server.url) as c:
            with pytest.raises(httpx.LocalProtocolError) as caught:
                await c.get("/x", headers=headers)
        assert "tok-secret" not in f"{caught.value} {caught.value!r}"
        assert (server.connections, server.requests, waits) == (0, 0, [])

    async def test_crlf_set_on_the_client_later_is_refused_by_the_transport_without_echoing_it(self) -> None:
        async with RawServer(lambda r, w, n: ok(r, w)) as server, Client(server.url) as c:
            c.headers["X-A"] = "tok-secret\r\nInjected: 1"
            with pytest.raises(httpx.LocalProtocolError) as caught:
                await c.get("/x")
        assert "tok-secret" not in f"{caught.value} {caught.value!r}"
        assert server.requests == 0

    def test_crlf_in_a_configured_header_fails_at_construction(self) -> None:
        with pytest.raises(
            ValueError, match="'billing': headers: Request header 'X-Api-Key' has a control character"
        ) as caught:
            Client("https://billing.internal", name="billing", headers={"X-Api-Key": "tok-secret\n"})
        assert "tok-secret" not in str(caught.value)

    @pytest.mark.parametrize("name", ["X-Role:admin X-Pad", "X Role", "X-Role:", "", "X-Rôle", "X\x00"])
    async def test_an_invalid_header_name_is_refused_before_any_io(
        self, backend: str, name: str, waits: list[float]
    ) -> None:
        # aiohttp wrote "X-Role:admin X-Pad" as is, and the server read a different header.
        async with RawServer(lambda r, w, n: ok(r, w)) as server, Client(server.url) as c:
            with pytest.raises(httpx.LocalProtocolError, match="not a valid HTTP token") as caught:
                await c.get("/x", headers={name: "v"})
            if name.isascii():  # httpx itself refuses a non-ASCII name on the client
                c.headers[name] = "v"  # set on the client later: refused by the transport
                with pytest.raises(httpx.LocalProtocolError, match="not a valid HTTP token"):
                    await c.get("/x")
        assert (server.connections, waits) == (0, [])
        assert "control character" not in str(caught.value)

    def test_an_invalid_configured_header_name_fails_at_construction_without_showing_it(self) -> None:
        with pytest.raises(ConfigurationError, match="'billing': headers: A request header name is not") as caught:
            Client("https://billing.internal", name="billing", headers={"Bearer tok-secret": "x"})
        assert "tok-secret" not in str(caught.value)

    async def test_a_non_ascii_value_is_refused_before_any_io_without_echoing_it(self, backend: str) -> None:
        # httpx raised UnicodeEncodeError, showing part of the value and keeping it in `.object`.
        async with RawServer(lambda r, w, n: ok(r, w)) as server, Client(server.url) as c:
            with pytest.raises(httpx.LocalProtocolError, match="'X-A' has a non-ASCII value") as caught:
                await c.get("/x", headers={"X-A": "tök-secret"})
        assert "secret" not in f"{caught.value} {caught.value!r} {caught.value.args}"
        assert server.connections == 0

    async def test_a_bare_retry_transport_refuses_them_too(self) -> None:
        sent: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            sent.append(request)
            return httpx.Response(200)

        transport = RetryTransport(httpx.MockTransport(handler))
        async with httpx.AsyncClient(transport=transport) as c:
            with pytest.raises(httpx.LocalProtocolError, match="not a valid HTTP token"):
                await c.get("http://upstream/x", headers={"X Y": "1"})
        assert sent == []


class TestRedirectLimits:
    async def test_a_redirect_loop_ends_after_five_hops(self, upstream: Upstream) -> None:
        for i in range(10):
            upstream.script(f"/loop{i}", Reply(302, headers={"Location": f"/loop{i + 1}"}))
        async with Client(upstream.url, follow_redirects=True) as c:
            with pytest.raises(httpx.TooManyRedirects):
                await c.get("/loop0")
        assert sum(upstream.hits.values()) == 6


def gzip_bomb(expanded: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    block = bytes(1 << 20)
    parts = [compressor.compress(block) for _ in range(expanded >> 20)]
    return b"".join([*parts, compressor.flush()])


class TestResponseSizeCap:
    async def test_a_gzip_bomb_is_refused_with_memory_far_below_its_expansion(self, upstream: Upstream) -> None:
        bomb = gzip_bomb(100 << 20)  # about 100 KB on the wire, 100 MB decoded
        assert len(bomb) < 200_000
        upstream.script("/bomb", Reply(200, bomb, {"Content-Encoding": "gzip"}))
        async with Client(upstream.url, max_response_bytes=1 << 20) as c:
            tracemalloc.start()
            try:
                with pytest.raises(ResponseTooLargeError):
                    await c.get("/bomb")
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
        assert peak < 10 << 20
        assert upstream.hits["/bomb"] == 1  # not retried

    async def test_a_too_large_content_length_is_refused_before_reading(self) -> None:
        async def huge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(3600)

        async with RawServer(huge) as server, Client(server.url, max_response_bytes=1000, timeout=30) as c:
            with pytest.raises(ResponseTooLargeError):
                await c.get("/x")
            with pytest.raises(ResponseTooLargeError):
                await c.stream("GET", "/x").__aenter__()
        assert server.requests == 2

    @pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate", "identity"])
    async def test_the_cap_counts_decoded_bytes_for_each_encoding(self, upstream: Upstream, encoding: str) -> None:
        body = b"a" * 5000
        wire = {
            "gzip": gzip.compress(body),
            "deflate": zlib.compress(body),
            "raw-deflate": zlib.compress(body)[2:-4],
            "identity": body,
        }[encoding]
        header = {"Content-Encoding": "deflate" if encoding == "raw-deflate" else encoding}
        upstream.script("/small", Reply(200, wire, header))
        upstream.script("/large", Reply(200, wire, header))
        async with Client(upstream.url, max_response_bytes=5000) as c:
            assert (await c.get("/small")).content == body
        async with Client(upstream.url, max_response_bytes=4999) as c:
            with pytest.raises(ResponseTooLargeError):
                await c.get("/large")

    async def test_a_streamed_body_is_capped_while_read(self, upstream: Upstream) -> None:
        upstream.script("/stream", Reply(200, gzip_bomb(8 << 20), {"Content-Encoding": "gzip"}))
        async with Client(upstream.url, max_response_bytes=1 << 20) as c, c.stream("GET", "/stream") as response:
            with pytest.raises(ResponseTooLargeError):
                await response.aread()

    async def test_a_corrupt_gzip_body_is_httpxs_decoding_error(self, upstream: Upstream) -> None:
        upstream.script("/corrupt", Reply(200, b"not gzip at all", {"Content-Encoding": "gzip"}))
        async with Client(upstream.url, max_response_bytes=1000) as c:
            with pytest.raises(httpx.DecodingError):
                await c.get("/corrupt")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


class TestTls:
    async def test_an_untrusted_certificate_fails_once_not_retried(
        self, tls_server_context: ssl.SSLContext, waits: list[float]
    ) -> None:
        handshakes = 0

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal handshakes
            handshakes += 1  # counted at TCP accept: the TLS handshake is what fails
            with contextlib.suppress(ssl.SSLError, ConnectionError):
                await writer.start_tls(tls_server_context)
            writer.close()

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server, Client(f"https://127.0.0.1:{port}") as c:
            with pytest.raises(httpx.ConnectError):
                await c.get("/x")
        assert (handshakes, waits) == (1, [])

    async def test_a_ca_bundle_path_makes_it_trusted(
        self, ca: trustme.CA, tls_server_context: ssl.SSLContext, tmp_path: Path
    ) -> None:
        bundle = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(bundle))
        async with (
            RawServer(lambda r, w, n: ok(r, w), ssl=tls_server_context) as server,
            Client(server.url, verify=str(bundle)) as c,
        ):
            assert (await c.get("/x")).text == "ok"
