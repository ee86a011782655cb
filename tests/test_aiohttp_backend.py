"""
The aiohttp backend against real loopback faults: each aiohttp failure must surface as the
httpx error httpx's own transport raises for it, by type and phase, so that the retry rules
(which trust the type) resend exactly what they would resend on httpx. Where both backends
can be run, they are, and must agree.
"""

from __future__ import annotations

import asyncio
import gc
import math
import re
import socket
import ssl
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import trustme

from fastapi_retry_http import Client, RetryPolicy
from fastapi_retry_http._backends import BackendName as Backend
from fastapi_retry_http._backends.aiohttp_pool import AiohttpTransport
from fastapi_retry_http._backends.tls import tls_context
from fastapi_retry_http._pipeline.policy import error_phase
from fastapi_retry_http.exceptions import ClientClosedError
from tests.servers import RawServer, Upstream, ok, reset
from tests.test_backends import full_backlog  # noqa: F401  (a fixture)
from tests.test_faults import free_port

pytestmark = pytest.mark.anyio

Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter
ONE_TRY = RetryPolicy(attempts=1)


def chain_text(error: BaseException) -> str:
    """The error and its causes as a traceback or an error tracker prints them."""
    parts: list[str] = []
    current: BaseException | None = error
    while current is not None:
        parts.append(f"{current!s} {current!r}")
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return "\n".join(parts)


async def failure(server_url: str, method: str = "GET", **kwargs: object) -> httpx.HTTPError:
    """The error one attempt on the aiohttp backend ends with."""
    async with Client(server_url, backend="aiohttp", retry=ONE_TRY, timeout=2.0) as c:
        with pytest.raises(httpx.HTTPError) as caught:
            await c.request(method, "/x", params={"token": "q-secret"}, **kwargs)  # type: ignore[arg-type]
    assert "q-secret" not in chain_text(caught.value)
    return caught.value


class TestNeverSent:
    async def test_a_refused_port_is_a_connect_error_worded_like_httpx(self, waits: list[float]) -> None:
        port = free_port()
        async with Client(f"http://127.0.0.1:{port}", backend="aiohttp") as c:
            with pytest.raises(httpx.ConnectError) as caught:
                await c.post("/x", content=b"charge")
        assert len(waits) == 2  # nothing was sent: retried even for POST
        message = str(caught.value)
        assert message.startswith(f"Cannot connect to the server 127.0.0.1:{port}: [Errno 111]")
        assert "ssl:" not in message
        assert isinstance(caught.value.__cause__, ConnectionRefusedError)

    async def test_a_full_backlog_is_a_connect_timeout(self, full_backlog: int) -> None:  # noqa: F811
        timeout = httpx.Timeout(5.0, connect=0.1)
        async with Client(f"http://127.0.0.1:{full_backlog}", backend="aiohttp", timeout=timeout, retry=ONE_TRY) as c:
            with pytest.raises(httpx.ConnectTimeout) as caught:
                await c.get("/x", params={"token": "q-secret"})
        assert "q-secret" not in chain_text(caught.value)  # aiohttp's own message prints the URL

    @pytest.mark.parametrize("backend", ["aiohttp", "httpx"])
    async def test_a_refused_proxy_is_a_connect_error(self, backend: Backend) -> None:
        proxy = f"http://127.0.0.1:{free_port()}"
        async with Client("http://billing.invalid/", backend=backend, proxy=proxy, retry=ONE_TRY) as c:
            with pytest.raises(httpx.ConnectError) as caught:
                await c.get("/x")
        assert error_phase(caught.value) == "connect"
        if backend == "aiohttp":
            assert str(caught.value).startswith("Cannot connect to the proxy 127.0.0.1:")

    @pytest.mark.parametrize("backend", ["aiohttp", "httpx"])
    async def test_a_proxy_refusing_the_tunnel_is_a_proxy_error(self, backend: Backend) -> None:
        async def refuse(reader: Reader, writer: Writer, n: int) -> None:
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()

        async with (
            RawServer(refuse) as server,
            Client("https://example.test/", backend=backend, proxy=server.url) as c,
        ):
            with pytest.raises(httpx.ProxyError, match="407 Proxy Authentication Required"):
                await c.get("/x")
        assert server.heads[0].startswith(b"CONNECT example.test:443 HTTP/1.1")
        assert server.requests == 1  # not retried


class TestTls:
    """A TLS failure keeps its ssl cause, so the policy never retries it."""

    async def test_an_untrusted_certificate(self, waits: list[float]) -> None:
        ca = trustme.CA()
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(server_context)
        async with RawServer(lambda r, w, n: ok(r, w), ssl=server_context) as server:
            error = await failure(server.url)
        assert isinstance(error, httpx.ConnectError)
        assert "CERTIFICATE_VERIFY_FAILED" in str(error)
        assert (error_phase(error), server.requests) == ("never", 0)

    async def test_a_server_that_does_not_speak_tls(self) -> None:
        async def plain(reader: Reader, writer: Writer) -> None:
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(plain, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            error = await failure(f"https://127.0.0.1:{port}")
        finally:
            server.close()
            await server.wait_closed()
        assert isinstance(error, httpx.ConnectError)
        assert isinstance(error.__cause__, ssl.SSLError)
        assert error_phase(error) == "never"


class TestAfterSending:
    @staticmethod
    async def reset_mid_headers(reader: Reader, writer: Writer, n: int) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Le")
        await writer.drain()
        await asyncio.sleep(0.01)
        reset(writer)

    async def test_a_reset_mid_headers_is_a_read_error_retried_for_get(self) -> None:
        async with RawServer(self.reset_mid_headers) as server, Client(server.url, backend="aiohttp") as c:
            with pytest.raises(httpx.ReadError, match=r"receiving the response \(ECONNRESET\)"):
                await c.get("/x")
        assert server.requests == 3

    async def test_a_reset_mid_headers_is_not_retried_for_post(self) -> None:
        async with RawServer(self.reset_mid_headers) as server:
            error = await failure(server.url, "POST", content=b"charge")
        assert isinstance(error, httpx.ReadError)
        assert server.requests == 1

    async def test_a_reset_while_the_body_is_sent_is_a_write_error(self) -> None:
        async def endless() -> AsyncIterator[bytes]:
            while True:
                yield b"x" * 65536
                await asyncio.sleep(0.001)

        async def reset_at_once(reader: Reader, writer: Writer, n: int) -> None:
            reset(writer)  # the head was read; the chunked body is still coming

        async with RawServer(reset_at_once) as server:
            error = await failure(server.url, "POST", content=endless())
        assert isinstance(error, httpx.WriteError)
        assert "sending the request" in str(error)
        assert server.requests == 1

    async def test_a_close_before_the_response_is_a_disconnect_the_policy_recognises(self) -> None:
        async def close(reader: Reader, writer: Writer, n: int) -> None:
            writer.close()

        async with RawServer(close) as server:
            error = await failure(server.url)
        assert isinstance(error, httpx.RemoteProtocolError)
        assert str(error) == "Server disconnected without sending a response."
        assert error_phase(error) == "sent"

    async def test_a_truncated_streamed_body_is_a_disconnect_the_policy_recognises(self) -> None:
        async def truncate(reader: Reader, writer: Writer, n: int) -> None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
            await writer.drain()
            writer.close()

        async with (
            RawServer(truncate) as server,
            Client(server.url, backend="aiohttp") as c,
            c.stream("GET", "/x") as response,
        ):
            with pytest.raises(httpx.RemoteProtocolError) as caught:
                await response.aread()
        assert str(caught.value) == "peer closed connection without sending complete message body"
        assert error_phase(caught.value) == "sent"

    async def test_a_hang_is_a_read_timeout(self) -> None:
        async def hang(reader: Reader, writer: Writer, n: int) -> None:
            await asyncio.sleep(3600)

        async with RawServer(hang) as server, Client(server.url, backend="aiohttp", timeout=0.1) as c:
            with pytest.raises(httpx.ReadTimeout, match="Timed out reading the response"):
                await c.get("/x")
        assert server.requests == 3

    @pytest.mark.parametrize(("gap", "times_out"), [(0.02, False), (0.5, True)])
    async def test_the_read_timeout_bounds_each_wait_for_bytes_not_the_whole_body(
        self, gap: float, times_out: bool
    ) -> None:
        """httpx's meaning of `read`, kept by one timer for all connections: each chunk moves it."""

        async def drip(reader: Reader, writer: Writer, n: int) -> None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n")
            for _ in range(8):
                await writer.drain()
                await asyncio.sleep(gap)  # the server's pace, real time: what is being timed
                writer.write(b"x")
            await writer.drain()

        async with RawServer(drip) as server, Client(server.url, retry=RetryPolicy(attempts=1), timeout=0.25) as c:
            if times_out:
                with pytest.raises(httpx.ReadTimeout):
                    await c.get("/x")
            else:
                assert (await c.get("/x")).content == b"x" * 8  # 8 gaps of 0.02 s: fine
        assert server.requests == 1

    async def test_an_idle_pooled_connection_outlives_the_read_timeout(self, upstream: Upstream) -> None:
        """A read's deadline ends with its response: a connection idle for longer is reused."""
        async with Client(upstream.url, timeout=0.05) as c:
            assert (await c.get("/a")).status_code == 200
            await asyncio.sleep(0.2)  # idle in the pool, four read timeouts long
            assert (await c.get("/b")).status_code == 200
        assert len(upstream.client_ports) == 1

    @pytest.mark.parametrize(
        "garbage",
        [
            b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
            # The server's bytes are never echoed: these would read as a retryable disconnect.
            b"HTTP/1.1 abc peer closed connection\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz server disconnected\r\n",
        ],
    )
    async def test_garbage_is_a_protocol_error_that_is_not_retried(self, garbage: bytes) -> None:
        async def speak(reader: Reader, writer: Writer, n: int) -> None:
            writer.write(garbage)
            await writer.drain()
            writer.close()

        async with RawServer(speak) as server, Client(server.url, backend="aiohttp") as c:
            with pytest.raises(httpx.RemoteProtocolError) as caught:
                await c.get("/x")
        assert re.fullmatch(r"Invalid HTTP response \((BadStatusLine|BadHttpMessage)\)\.", str(caught.value))
        assert error_phase(caught.value) == "never"
        assert server.requests == 1


class TestRefusedLocally:
    async def test_a_url_aiohttp_refuses_is_a_local_error_that_shows_no_value(self, upstream: Upstream) -> None:
        async with Client(upstream.url, backend="aiohttp", allow_absolute_urls=True) as c:
            with pytest.raises(httpx.LocalProtocolError) as caught:
                await c.get("http://127.0.0.1:99999/x")
        assert str(caught.value) == "aiohttp refused the request: ValueError"
        assert "99999" not in chain_text(caught.value)

    async def test_an_invalid_proxy_url_is_a_local_error_that_shows_no_value(self) -> None:
        # Client refuses it at construction; the transport alone still maps it safely.
        proxy = "http://user:proxy-secret@[::1"
        transport = AiohttpTransport(ssl_context=tls_context(True, False), limits=httpx.Limits(), proxy=proxy)
        async with httpx.AsyncClient(transport=transport) as c:
            with pytest.raises(httpx.LocalProtocolError) as caught:
                await c.get("http://billing.invalid/x")
        assert str(caught.value) == "aiohttp refused the request: InvalidURL"
        assert "proxy-secret" not in chain_text(caught.value)
        assert error_phase(caught.value) == "never"

    @pytest.mark.parametrize("backend", ["aiohttp", "httpx"])
    async def test_a_scheme_that_is_not_http_is_unsupported(self, backend: Backend, upstream: Upstream) -> None:
        async with Client(upstream.url, backend=backend, allow_absolute_urls=True) as c:
            with pytest.raises(httpx.UnsupportedProtocol):
                await c.get("ftp://127.0.0.1/x")

    @pytest.mark.parametrize("backend", ["aiohttp", "httpx"])
    async def test_a_failing_body_stream_raises_its_own_error(self, backend: Backend, upstream: Upstream) -> None:
        class Broken(Exception):
            pass

        async def broken() -> AsyncIterator[bytes]:
            yield b"first"
            raise Broken("the caller's stream failed")

        async with Client(upstream.url, backend=backend) as c:
            with pytest.raises(Broken):
                await c.post("/echo", content=broken())


@pytest.fixture
def deaf() -> Iterator[socket.socket]:
    """A listener whose connections the kernel accepts but nobody ever reads from."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener


@pytest.mark.parametrize("backend", ["aiohttp", "httpx"])
async def test_an_upload_nobody_reads_ends_at_the_write_timeout(backend: Backend, deaf: socket.socket) -> None:
    timeout = httpx.Timeout(10.0, write=0.3)
    body = b"x" * (64 * 1024 * 1024)  # far more than the socket buffers hold
    started = time.monotonic()
    url = f"http://127.0.0.1:{deaf.getsockname()[1]}"
    async with Client(url, backend=backend, timeout=timeout, retry=ONE_TRY) as c:
        with pytest.raises(httpx.WriteTimeout):
            await c.post("/upload", content=body)
    assert time.monotonic() - started < 3
    # A closed socket with unsent data stays open until the peer goes: httpx's transport
    # would be collected still open (a ResourceWarning). Closing the listener resets it.
    deaf.close()
    await asyncio.sleep(0.05)


class TestKeepAlive:
    """Idle connections kept for reuse are capped by max_keepalive_connections, as in httpx."""

    @staticmethod
    def burst_server(size: int) -> RawServer:
        complete: defaultdict[int, asyncio.Event] = defaultdict(asyncio.Event)

        async def answer_together(reader: Reader, writer: Writer, n: int) -> None:
            # Every request of a burst is held until all arrived: each needs its own connection.
            burst = (n - 1) // size
            if n % size == 0:
                complete[burst].set()
            await complete[burst].wait()
            await ok(reader, writer)

        return RawServer(answer_together)

    @pytest.mark.parametrize("backend", ["aiohttp", "httpx"])
    async def test_at_most_max_keepalive_connections_stay_for_reuse(self, backend: Backend) -> None:
        limits = httpx.Limits(max_connections=10, max_keepalive_connections=2)
        server = self.burst_server(6)
        async with server, Client(server.url, backend=backend, limits=limits) as c:
            await asyncio.gather(*(c.get(f"/a{i}") for i in range(6)))
            assert server.connections == 6
            await asyncio.gather(*(c.get(f"/b{i}") for i in range(6)))
        assert server.connections == 10  # 2 were kept and reused, 4 new ones were opened

    @pytest.mark.parametrize("backend", ["aiohttp", "httpx"])
    async def test_zero_means_no_reuse(self, backend: Backend) -> None:
        limits = httpx.Limits(max_keepalive_connections=0)
        async with (
            RawServer(lambda r, w, n: ok(r, w)) as server,
            Client(server.url, backend=backend, limits=limits) as c,
        ):
            for _ in range(3):
                assert (await c.get("/x")).status_code == 200
        assert (server.requests, server.connections) == (3, 3)


@pytest.mark.parametrize("backend", ["aiohttp", "httpx"])
@pytest.mark.parametrize("seconds", [None, math.inf])
async def test_no_timeout_means_none_or_infinity(backend: Backend, seconds: float | None, upstream: Upstream) -> None:
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=None, keepalive_expiry=seconds)
    async with Client(upstream.url, backend=backend, timeout=httpx.Timeout(seconds), limits=limits) as c:
        responses = await asyncio.gather(*(c.post("/echo", content=b"body") for _ in range(3)))
    assert [r.content for r in responses] == [b"body"] * 3


class TestClosing:
    @staticmethod
    def transport() -> AiohttpTransport:
        return AiohttpTransport(ssl_context=ssl.create_default_context(), limits=httpx.Limits(max_connections=None))

    async def test_a_request_after_close_raises_before_any_io(self, upstream: Upstream) -> None:
        transport = self.transport()
        async with httpx.AsyncClient(transport=transport) as client:
            assert (await client.get(f"{upstream.url}/first")).status_code == 200
            await transport.aclose()
            for _ in range(2):
                with pytest.raises(ClientClosedError):
                    await client.get(f"{upstream.url}/second")
        assert upstream.hits["/second"] == 0
        gc.collect()  # an unclosed session would warn here, and warnings are errors

    async def test_a_transport_closed_before_its_first_request_never_opens(self, upstream: Upstream) -> None:
        transport = self.transport()
        await transport.aclose()
        async with httpx.AsyncClient(transport=transport) as client:
            with pytest.raises(ClientClosedError):
                await client.get(f"{upstream.url}/x")
        assert upstream.hits["/x"] == 0

    async def test_an_attempt_still_connecting_ends_promptly_when_closed(self, full_backlog: int) -> None:  # noqa: F811
        transport = self.transport()
        async with httpx.AsyncClient(transport=transport, timeout=30) as client:
            task = asyncio.create_task(client.get(f"http://127.0.0.1:{full_backlog}/x"))
            await asyncio.sleep(0.05)  # the connection attempt is under way
            started = time.monotonic()
            await transport.aclose()
            with pytest.raises(ClientClosedError):
                await asyncio.wait_for(task, 2)
            assert time.monotonic() - started < 1
        gc.collect()

    async def test_only_a_cancellation_by_close_becomes_closed(self, full_backlog: int) -> None:  # noqa: F811
        """The caller's own cancellation stays a cancellation, even if close follows it."""
        transport = self.transport()
        async with httpx.AsyncClient(transport=transport, timeout=30) as client:
            task = asyncio.create_task(client.get(f"http://127.0.0.1:{full_backlog}/x"))
            await asyncio.sleep(0.05)
            task.cancel()
            await transport.aclose()
            with pytest.raises(asyncio.CancelledError):
                await task

    @pytest.mark.parametrize("streamed", [False, True])
    async def test_an_attempt_in_flight_ends_promptly_when_closed(self, streamed: bool) -> None:
        received = asyncio.Event()

        async def hang(reader: Reader, writer: Writer, n: int) -> None:
            if streamed:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nsome")
                await writer.drain()
            received.set()
            await asyncio.sleep(3600)

        async def fetch(client: httpx.AsyncClient, url: str) -> bytes:
            async with client.stream("GET", url) as response:
                return await response.aread()

        transport = self.transport()
        async with RawServer(hang) as server, httpx.AsyncClient(transport=transport) as client:
            task = asyncio.create_task(fetch(client, f"{server.url}/x"))
            await received.wait()
            await asyncio.sleep(0.01)  # let the response headers reach the client
            started = time.monotonic()
            await transport.aclose()
            with pytest.raises(ClientClosedError):
                await asyncio.wait_for(task, 2)
            assert time.monotonic() - started < 1
        gc.collect()


async def test_a_request_waiting_for_a_slot_when_closed_raises_closed(upstream: Upstream) -> None:
    held = asyncio.Event()

    async def hold(reader: Reader, writer: Writer, n: int) -> None:
        held.set()
        await asyncio.sleep(3600)

    transport = AiohttpTransport(ssl_context=ssl.create_default_context(), limits=httpx.Limits(max_connections=1))
    async with RawServer(hold) as server, httpx.AsyncClient(transport=transport, timeout=5) as client:
        first = asyncio.create_task(client.get(f"{server.url}/held"))
        await held.wait()
        second = asyncio.create_task(client.get(f"{server.url}/waiting"))
        await asyncio.sleep(0.01)  # the second one now waits for the slot
        await transport.aclose()
        for task in (first, second):
            with pytest.raises(ClientClosedError):
                await asyncio.wait_for(task, 2)
    assert server.requests == 1
