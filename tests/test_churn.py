"""
What a busy service does to its clients: requests cancelled mid-flight by the thousand, and
a fault-injecting upstream. Bounded in count and time; seeded, so a failure replays.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from fastapi_retry_http import Client, RetryPolicy, RetryTransport
from fastapi_retry_http._backends.aiohttp_pool import AiohttpTransport
from fastapi_retry_http._backends.httpx_pool import CancelSafeTransport
from tests.servers import RawServer, ok, reset, response_bytes

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("backend")]

Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter


def active_connections(client: Client) -> int:
    inner = client.transport.inner
    if isinstance(inner, AiohttpTransport):
        session = inner._session
        return 0 if session is None else len(session.connector._acquired)  # type: ignore[union-attr]
    pool = inner.inner._pool  # type: ignore[attr-defined]
    return sum(1 for c in pool.connections if not (c.is_idle() or c.is_closed()))


def open_sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


@pytest.mark.parametrize("run", range(5))
async def test_cancellation_churn_never_leaks_pool_slots(run: int) -> None:
    """httpcore alone ended this in a permanent PoolTimeout in 1 run of 8 (measured)."""
    rng = random.Random(run)

    async def slow(reader: Reader, writer: Writer, n: int) -> None:
        await asyncio.sleep(rng.random() * 0.01)
        await ok(reader, writer)

    limits = httpx.Limits(max_connections=2)
    async with RawServer(slow) as server, Client(server.url, limits=limits, timeout=httpx.Timeout(5, pool=1)) as c:
        for _ in range(20):
            calls = [asyncio.create_task(c.get("/x")) for _ in range(10)]
            await asyncio.sleep(rng.random() * 0.01)
            for call in calls:
                call.cancel()
            await asyncio.gather(*calls, return_exceptions=True)
        # Both slots must be usable again: two requests at once, neither waiting for the pool.
        first, second = await asyncio.gather(c.get("/after"), c.get("/after"))
        assert (first.status_code, second.status_code) == (200, 200)


async def test_soak_through_a_fault_injecting_upstream() -> None:
    """2000 calls, 64 at a time, through resets, 503s, silent closes and latency (seeded)."""
    rng = random.Random(1234)
    faults = {"503": 0, "reset": 0, "close": 0}

    async def flaky(reader: Reader, writer: Writer, n: int) -> None:
        roll = rng.random()
        await asyncio.sleep(rng.random() * 0.002)
        if roll < 0.10:
            faults["503"] += 1
            writer.write(response_bytes(503, b"busy"))
            await writer.drain()
        elif roll < 0.14:
            faults["reset"] += 1
            reset(writer)
        elif roll < 0.17:
            faults["close"] += 1
            writer.close()
        else:
            await ok(reader, writer)

    policy = RetryPolicy(attempts=3, deadline=5.0)
    sockets_before = open_sockets()
    outcomes = {"ok": 0, "503": 0, "error": 0}
    slowest = 0.0
    async with RawServer(flaky) as server:
        client = Client(server.url, retry=policy, limits=httpx.Limits(max_connections=32), timeout=5.0)
        gate = asyncio.Semaphore(64)

        async def call(i: int) -> None:
            nonlocal slowest
            async with gate:
                started = time.monotonic()
                try:
                    response = await client.get(f"/item/{i}")
                    outcomes["ok" if response.status_code == 200 else "503"] += 1
                except httpx.HTTPError:
                    outcomes["error"] += 1
                slowest = max(slowest, time.monotonic() - started)

        async with asyncio.timeout(60):
            await asyncio.gather(*(call(i) for i in range(2000)))
        assert active_connections(client) == 0
        await client.aclose()
    assert sum(outcomes.values()) == 2000
    assert policy.deadline is not None
    assert slowest < policy.deadline + 1
    # With 3 attempts, about 17% faults per attempt leave roughly 0.5% of calls failing.
    assert outcomes["ok"] >= 1900, outcomes
    assert min(faults.values()) > 0
    # Closed sockets are released by the event loop a few iterations after close().
    for _ in range(100):
        if open_sockets() <= sockets_before:
            break
        await asyncio.sleep(0.01)
    assert open_sockets() <= sockets_before


async def test_a_call_cancelled_before_its_request_is_written_never_gets_the_cancellation_inside_httpcore() -> None:
    """
    The deterministic guard for the shield of the httpx backend: the churn test above only
    caught a missing shield in 0 or 1 runs of 10. This pool emits no trace event, so the
    attempt never reaches a point where it is written or could stop: it runs to its end in
    the background. (tests/test_cancel_safe.py covers each point an attempt can be at.)
    """
    started, release = asyncio.Event(), asyncio.Event()
    seen: list[str] = []

    class Body(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield b"ok"

        async def aclose(self) -> None:
            seen.append("closed")

    class Inner(httpx.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            started.set()
            try:
                await release.wait()
            except asyncio.CancelledError:
                seen.append("cancelled inside")
                raise
            seen.append("finished")
            return httpx.Response(200, stream=Body())

    async with httpx.AsyncClient(transport=RetryTransport(CancelSafeTransport(Inner()))) as client:
        call = asyncio.create_task(client.get("http://upstream/x"))
        await started.wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        release.set()
        async with asyncio.timeout(5):
            while "closed" not in seen:  # noqa: ASYNC110 (the background attempt ends by itself)
                await asyncio.sleep(0.001)
    assert seen == ["finished", "closed"]  # finished in the background, then released
