"""
An attempt abandoned before its request was written (its caller cancelled or timed out, a lost
hedge, an attempt timeout) is never sent afterwards, and one abandoned after it was written
gives its connection back at once, on every backend: the four observations of issue 20,
against a loopback server that counts what it receives.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from fastapi_retry_http import Client, RetryPolicy
from fastapi_retry_http.exceptions import AttemptTimeout
from tests.servers import RawServer, ok, response_bytes

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("backend")]

Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter


def paths(server: RawServer) -> list[str]:
    """The paths of the requests the server received, in order."""
    return [head.split(b" ")[1].decode() for head in server.heads]


def current_path(server: RawServer) -> str:
    return paths(server)[-1]


def count_entries(client: Client) -> list[str]:
    """
    The paths of the attempts that reached the backend: the list grows when an attempt is
    handed to the connection pool, before it waits there for a connection.
    """
    inner = client.transport.inner
    send = inner.handle_async_request
    entered: list[str] = []

    async def counted(request: httpx.Request) -> httpx.Response:
        entered.append(request.url.path)
        return await send(request)

    inner.handle_async_request = counted  # type: ignore[method-assign]
    return entered


async def until(condition: Callable[[], bool]) -> None:
    """Poll the loop until `condition` holds (bounded): what the server saw is not an event."""
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110 (the server and the backend do not signal)
            await asyncio.sleep(0.001)


async def until_eof(reader: Reader) -> None:
    """Hang until the client closes the connection."""
    while await reader.read(1024):
        pass


async def test_a_post_whose_caller_gave_up_before_it_was_written_is_never_sent() -> None:
    """A POST queued for the only connection, its caller gone: it must never reach the upstream."""
    release = asyncio.Event()

    async def held_first(reader: Reader, writer: Writer, n: int) -> None:
        if n == 1:
            await release.wait()
        await ok(reader, writer)

    limits = httpx.Limits(max_connections=1)
    async with RawServer(held_first) as server, Client(server.url, limits=limits) as c:
        entered = count_entries(c)
        first = asyncio.create_task(c.get("/hold"))
        await until(lambda: server.requests == 1)
        post = asyncio.create_task(c.post("/charge", content=b"42 EUR"))
        await until(lambda: entered == ["/hold", "/charge"])  # waiting for the connection
        post.cancel()
        with pytest.raises(asyncio.CancelledError):
            await post
        release.set()
        assert (await first).status_code == 200
        # Queued behind the POST: once this is answered, the POST would have been sent.
        assert (await c.get("/after")).status_code == 200
    assert paths(server) == ["/hold", "/after"]


async def test_mass_cancelled_calls_send_nothing_late_and_leave_the_pool_free() -> None:
    """100 calls cancelled, 4 of them in flight: none of the others is sent after its caller left."""
    in_flight, calls = 4, 100

    async def held(reader: Reader, writer: Writer, n: int) -> None:
        if current_path(server) != "/next":
            await until_eof(reader)  # answers only once its client has gone
        await ok(reader, writer)

    limits = httpx.Limits(max_connections=in_flight)
    timeout = httpx.Timeout(5, pool=2)
    async with RawServer(held) as server, Client(server.url, limits=limits, timeout=timeout) as c:
        entered = count_entries(c)
        tasks = [asyncio.create_task(c.get(f"/{i}")) for i in range(calls)]
        await until(lambda: server.requests == in_flight and len(entered) == calls)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert all(task.cancelled() for task in tasks)
        gone = server.requests
        response = await c.get("/next")  # under the 2 s pool timeout
    assert response.status_code == 200
    assert gone == in_flight
    assert paths(server)[in_flight:] == ["/next"]  # nothing reached it after its caller left


async def test_sequential_hedged_calls_never_exhaust_the_pool() -> None:
    """Each call's first attempt hangs, its hedge wins: the losers must give their connections back."""

    async def first_of_each_path_hangs(reader: Reader, writer: Writer, n: int) -> None:
        path = current_path(server)
        if paths(server).count(path) == 1:
            await until_eof(reader)
            return
        writer.write(response_bytes(200, path.encode()))
        await writer.drain()

    limits = httpx.Limits(max_connections=2)
    policy = RetryPolicy(attempts=2, hedge_after=0.01, deadline=5, jitter=False)
    timeout = httpx.Timeout(5, pool=0.5)
    async with (
        RawServer(first_of_each_path_hangs) as server,
        Client(server.url, retry=policy, limits=limits, timeout=timeout) as c,
    ):
        for i in range(20):
            response = await c.get(f"/{i}")
            assert response.text == f"/{i}"
    assert server.requests == 40


async def test_a_lost_hedge_that_was_never_written_is_never_sent() -> None:
    """
    The hedge waits for the only connection slot; the first attempt wins and closes its
    connection, so the hedge is still connecting when it loses: it must not be sent after.
    (Over a kept-alive connection the hedge would be written before the race is decided.)
    """
    release = asyncio.Event()

    async def held_first(reader: Reader, writer: Writer, n: int) -> None:
        if n == 1:
            await release.wait()
            writer.write(response_bytes(200, b"first", {"Connection": "close"}))
            await writer.drain()
            writer.close()
            return
        await ok(reader, writer)

    limits = httpx.Limits(max_connections=1)
    policy = RetryPolicy(attempts=2, hedge_after=0.01, deadline=5, jitter=False)
    async with RawServer(held_first) as server, Client(server.url, retry=policy, limits=limits) as c:
        entered = count_entries(c)
        call = asyncio.create_task(c.get("/x"))
        await until(lambda: len(entered) == 2)  # the hedge is waiting for the connection
        release.set()
        assert (await call).text == "first"
        assert (await c.get("/after", retry=RetryPolicy(attempts=1))).status_code == 200  # not hedged
    assert paths(server) == ["/x", "/after"]


async def test_an_attempt_timeout_on_a_dripping_body_leaves_the_pool_to_healthy_calls() -> None:
    async def drip(reader: Reader, writer: Writer, n: int) -> None:
        if current_path(server) != "/drip":
            await ok(reader, writer)
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nx")
        await writer.drain()
        await until_eof(reader)

    limits = httpx.Limits(max_connections=1)
    policy = RetryPolicy(attempts=1, attempt_timeout=0.05)
    async with RawServer(drip) as server, Client(server.url, retry=policy, limits=limits) as c:
        with pytest.raises(AttemptTimeout):
            await c.get("/drip")
        for _ in range(3):
            assert (await c.get("/healthy")).status_code == 200
    assert paths(server) == ["/drip", "/healthy", "/healthy", "/healthy"]
