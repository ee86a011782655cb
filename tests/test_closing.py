"""
Closing a client stops it: nothing is sent after `aclose()`, and calls still running end at
once instead of retrying on a closed pool (as lifespan shutdown needs). On both backends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest

from fastapi_retry_http import Client, RetryPolicy, _clock
from fastapi_retry_http.exceptions import ClientClosedError
from tests.servers import RawServer, Reply, Upstream

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("backend")]


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Poll (not a backoff wait: the test waits for the other side to get somewhere)."""
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 (the condition is in another thread or object)
            await asyncio.sleep(0.005)


async def forever(seconds: float) -> None:
    await asyncio.Event().wait()


async def test_a_call_waiting_to_retry_ends_at_once_and_nothing_more_is_sent(
    upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A backoff wait that would never end by itself: only closing can end it.
    monkeypatch.setattr(_clock, "sleep", forever)
    upstream.script("/x", Reply(503, headers={"Retry-After": "1"}))
    c = Client(upstream.url)
    call = asyncio.create_task(c.get("/x"))
    await until(lambda: bool(c.transport._waits))  # the call is in its backoff wait
    await c.aclose()
    async with asyncio.timeout(1):
        with pytest.raises(ClientClosedError, match="closed while a call waited to retry"):
            await call
    assert upstream.hits["/x"] == 1
    assert not c.transport._sender.deadlines.armed  # no timer left armed


async def test_an_attempt_in_flight_ends_promptly_without_a_retry() -> None:
    hang = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await hang.wait()

    async with RawServer(silent) as server:
        c = Client(server.url, retry=RetryPolicy(attempts=5))
        call = asyncio.create_task(c.get("/x"))
        await until(lambda: server.requests == 1)
        await c.aclose()
        async with asyncio.timeout(2):
            with pytest.raises((ClientClosedError, httpx.HTTPError)) as caught:
                await call
        assert type(caught.value) is not RuntimeError
        await asyncio.sleep(0.05)
        assert (server.requests, server.connections) == (1, 1)


@pytest.mark.parametrize(
    "call",
    [lambda c: c.get("/x"), lambda c: c.post("/x", content=b"body")],
)
async def test_a_call_after_close_sends_nothing(
    upstream: Upstream, call: Callable[[Client], Awaitable[httpx.Response]]
) -> None:
    c = Client(upstream.url)
    await c.get("/warm")
    await c.aclose()
    with pytest.raises(ClientClosedError):
        await call(c)
    assert upstream.hits["/x"] == 0


async def test_the_bare_transport_refuses_after_close(upstream: Upstream) -> None:
    from fastapi_retry_http import RetryTransport

    transport = RetryTransport(httpx.AsyncHTTPTransport())
    request = httpx.Request("GET", upstream.url + "/x")
    await transport.aclose()
    with pytest.raises(ClientClosedError):
        await transport.handle_async_request(request)
    assert upstream.hits["/x"] == 0
