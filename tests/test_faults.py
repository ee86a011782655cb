"""
Faults no HTTP framework produces on purpose, from raw asyncio servers on loopback. The
server counts the requests it read: that count is how many attempts reached it.
"""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import pytest

from fastapi_retry_http import Client, RetryPolicy
from fastapi_retry_http.exceptions import DeadlineExceeded
from tests.servers import RawServer, ok, reset, response_bytes

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("backend")]

Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter


def free_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_connection_refused_is_retried_for_every_method(waits: list[float]) -> None:
    async with Client(f"http://127.0.0.1:{free_port()}") as c:
        with pytest.raises(httpx.ConnectError):
            await c.post("/x", json={})
    assert len(waits) == 2


class TestKeepAliveRace:
    """The server read the request and closed the connection without answering."""

    @staticmethod
    async def close_first(reader: Reader, writer: Writer, n: int) -> None:
        if n == 1:
            writer.close()
        else:
            await ok(reader, writer)

    async def test_get_is_retried(self) -> None:
        async with RawServer(self.close_first) as server, Client(server.url) as c:
            assert (await c.get("/x")).status_code == 200
        assert server.requests == 2

    async def test_post_raises_after_exactly_one_request(self) -> None:
        async with RawServer(self.close_first) as server, Client(server.url) as c:
            with pytest.raises(httpx.RemoteProtocolError):
                await c.post("/x", content=b"charge")
        assert server.requests == 1

    async def test_a_dead_reused_connection_costs_an_attempt_like_any_other(self) -> None:
        """No hidden re-send below the policy (aiohttp has one, turned off): attempts=1 means one."""

        async def close_second(reader: Reader, writer: Writer, n: int) -> None:
            if n == 2:
                writer.close()
            else:
                await ok(reader, writer)

        async with RawServer(close_second) as server, Client(server.url, retry=RetryPolicy(attempts=1)) as c:
            assert (await c.get("/first")).status_code == 200
            with pytest.raises(httpx.RemoteProtocolError):
                await c.get("/second")  # sent on the kept-alive connection, which the server drops
        assert (server.connections, server.requests) == (1, 2)


async def test_an_idle_connection_the_server_closed_is_replaced_without_a_retry(waits: list[float]) -> None:
    """The FIN arrived while the connection sat in the pool: a new one is made, no attempt is spent."""
    closed = asyncio.Event()

    async def answer_then_close(reader: Reader, writer: Writer, n: int) -> None:
        await ok(reader, writer)
        if n == 1:
            writer.close()  # what a keepalive_timeout does
            await writer.wait_closed()
            closed.set()

    async with RawServer(answer_then_close) as server, Client(server.url, retry=RetryPolicy(attempts=1)) as c:
        assert (await c.get("/first")).status_code == 200
        await closed.wait()
        for _ in range(5):
            await asyncio.sleep(0)  # let the client's loop see the FIN
        assert (await c.get("/second")).status_code == 200
    assert (server.requests, server.connections, waits) == (2, 2, [])


class TestBrokenBodies:
    @staticmethod
    async def reset_mid_body(reader: Reader, writer: Writer, n: int) -> None:
        if n == 1:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
            await writer.drain()
            await asyncio.sleep(0.01)
            reset(writer)
        else:
            await ok(reader, writer)

    @staticmethod
    async def truncate(reader: Reader, writer: Writer, n: int) -> None:
        if n == 1:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"partial")
            await writer.drain()
            writer.close()
        else:
            await ok(reader, writer)

    @pytest.mark.parametrize("fault", ["reset_mid_body", "truncate"])
    async def test_get_is_retried_and_never_returns_a_partial_body(self, fault: str) -> None:
        async with RawServer(getattr(self, fault)) as server, Client(server.url) as c:
            response = await c.get("/x")
        assert (response.status_code, response.content, server.requests) == (200, b"ok", 2)

    @pytest.mark.parametrize("fault", ["reset_mid_body", "truncate"])
    async def test_post_is_not_retried(self, fault: str) -> None:
        async with RawServer(getattr(self, fault)) as server, Client(server.url) as c:
            with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
                await c.post("/x", content=b"charge")
        assert server.requests == 1

    async def test_a_streamed_body_failing_midway_is_raised_not_retried(self) -> None:
        async with RawServer(self.truncate) as server, Client(server.url) as c, c.stream("GET", "/x") as response:
            with pytest.raises(httpx.RemoteProtocolError):
                await response.aread()
        assert server.requests == 1


class TestNotHttp:
    @pytest.mark.parametrize(
        "garbage",
        [
            b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
            b"HTTP/1.1 abc Nope\r\n\r\n",
            b"\x00\xff" * 20,
            # A status line that quotes a disconnect phrase is still a server speaking garbage.
            b"HTTP/1.1 abc peer closed connection\r\n\r\n",
            b"HTTP/1.1 abc Server disconnected\r\n\r\n",
        ],
    )
    async def test_a_server_speaking_garbage_gets_one_attempt(self, garbage: bytes) -> None:
        async def speak(reader: Reader, writer: Writer, n: int) -> None:
            writer.write(garbage)
            await writer.drain()
            writer.close()

        async with RawServer(speak) as server, Client(server.url) as c:
            with pytest.raises(httpx.RemoteProtocolError):
                await c.get("/x")
        assert server.requests == 1


class TestSlowServers:
    @staticmethod
    async def hang(reader: Reader, writer: Writer, n: int) -> None:
        await asyncio.sleep(3600)

    async def test_a_hang_without_headers_times_out_per_attempt_and_is_retried(self) -> None:
        async with RawServer(self.hang) as server, Client(server.url, timeout=0.1) as c:
            with pytest.raises(httpx.ReadTimeout):
                await c.get("/x")
        assert server.requests == 3

    async def test_a_hang_ends_at_the_deadline(self) -> None:
        policy = RetryPolicy(deadline=0.3, attempts=10)
        started = time.monotonic()
        async with RawServer(self.hang) as server, Client(server.url, timeout=60, retry=policy) as c:
            with pytest.raises(DeadlineExceeded):
                await c.get("/x")
        assert time.monotonic() - started < 5
        assert server.requests == 1

    async def test_a_slow_drip_cannot_outlive_the_deadline(self) -> None:
        """One byte every 20 ms never trips a 1 s read timeout; only the deadline ends it."""

        async def drip(reader: Reader, writer: Writer, n: int) -> None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
            for _ in range(100_000):
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(0.02)

        policy = RetryPolicy(deadline=0.5)
        started = time.monotonic()
        async with RawServer(drip) as server, Client(server.url, timeout=1.0, retry=policy) as c:
            with pytest.raises(DeadlineExceeded):
                await c.get("/x")
        assert time.monotonic() - started < 5
        assert server.requests == 1

    async def test_pool_timeout_is_not_retried(self, waits: list[float]) -> None:
        held = asyncio.Event()

        async def hold(reader: Reader, writer: Writer, n: int) -> None:
            held.set()
            await asyncio.sleep(3600)

        async with (
            RawServer(hold) as server,
            Client(server.url, limits=httpx.Limits(max_connections=1), timeout=httpx.Timeout(60, pool=0.1)) as c,
        ):
            holder = asyncio.create_task(c.get("/held"))
            await held.wait()
            with pytest.raises(httpx.PoolTimeout):
                await c.get("/x")
            holder.cancel()
        assert (server.requests, waits) == (1, [])


async def test_garbage_retry_after_from_a_real_server_falls_back_to_backoff(waits: list[float]) -> None:
    async def throttle(reader: Reader, writer: Writer, n: int) -> None:
        status = 429 if n == 1 else 200
        writer.write(response_bytes(status, headers={"Retry-After": "Fri, 99 Nov 2026 99:00:00 GMT"}))
        await writer.drain()

    async with RawServer(throttle) as server, Client(server.url, retry=RetryPolicy(jitter=False)) as c:
        assert (await c.get("/x")).status_code == 200
    assert (server.requests, waits) == (2, [0.1])
