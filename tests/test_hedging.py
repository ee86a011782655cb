"""
Hedged requests and attempt timeouts against real loopback servers that count requests: the
first acceptable answer wins, losers are cancelled and release their connections, writes are
never hedged, hedges are paid from the budget; a slow attempt is cut at `attempt_timeout`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from fastapi_retry_http import AttemptEvent, Client, RetryBudget, RetryPolicy
from fastapi_retry_http.exceptions import AttemptTimeout, DeadlineExceeded
from tests.servers import RawServer, ok, response_bytes

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("backend")]

Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter
HEDGED = RetryPolicy(hedge_after=0.05, jitter=False)


def slow_first(seconds: float = 5.0) -> Callable[[Reader, Writer, int], Awaitable[None]]:
    """Request 1 answers after `seconds`; every other one at once."""

    async def handler(reader: Reader, writer: Writer, n: int) -> None:
        if n == 1:
            await asyncio.sleep(seconds)
        writer.write(response_bytes(200, f"answer {n}".encode()))
        await writer.drain()

    return handler


class Recorder:
    def __init__(self) -> None:
        self.events: list[AttemptEvent] = []

    def on_attempt(self, event: AttemptEvent) -> None:
        self.events.append(event)


class TestHedging:
    async def test_the_first_answer_wins_and_the_loser_is_cancelled(self) -> None:
        recorder = Recorder()
        async with (
            RawServer(slow_first()) as server,
            Client(server.url, retry=HEDGED, instrumentation=[recorder]) as c,
        ):
            started = time.monotonic()
            response = await c.get("/x")
            elapsed = time.monotonic() - started
        assert (response.text, server.requests) == ("answer 2", 2)
        assert elapsed < 2  # the first attempt would have taken 5 s
        assert sorted((e.attempt, e.outcome) for e in recorder.events) == [(1, "hedge_lost"), (2, "success")]

    async def test_a_write_is_never_hedged(self) -> None:
        async with RawServer(slow_first(0.3)) as server, Client(server.url, retry=HEDGED) as c:
            response = await c.post("/x", content=b"order")
        assert (response.text, server.requests) == ("answer 1", 1)

    async def test_an_idempotency_key_allows_hedging_a_write(self) -> None:
        async with RawServer(slow_first()) as server, Client(server.url, retry=HEDGED) as c:
            response = await c.post("/x", content=b"order", headers={"Idempotency-Key": "k1"})
        assert (response.text, server.requests) == ("answer 2", 2)

    async def test_a_streamed_body_is_never_hedged(self) -> None:
        async def body() -> AsyncIterator[bytes]:
            yield b"once"

        recorder = Recorder()
        async with (
            RawServer(slow_first(0.3)) as server,
            Client(server.url, retry=HEDGED, instrumentation=[recorder]) as c,
        ):
            response = await c.put("/x", content=body())
        # (The raw server reads a chunked body as a second request head: count attempts instead.)
        assert (response.text, [e.attempt for e in recorder.events]) == ("answer 1", [1])

    async def test_a_retryable_failure_starts_the_next_hedge_at_once(self) -> None:
        async def fail_first(reader: Reader, writer: Writer, n: int) -> None:
            writer.write(response_bytes(503 if n == 1 else 200, b"busy" if n == 1 else b"ok"))
            await writer.drain()

        policy = RetryPolicy(hedge_after=30.0, deadline=None)
        async with RawServer(fail_first) as server, Client(server.url, retry=policy) as c:
            started = time.monotonic()
            response = await c.get("/x")
        assert (response.status_code, server.requests) == (200, 2)
        assert time.monotonic() - started < 5  # did not wait for hedge_after

    async def test_when_every_hedge_fails_the_last_failure_is_returned(self) -> None:
        async def busy(reader: Reader, writer: Writer, n: int) -> None:
            writer.write(response_bytes(503, b"busy"))
            await writer.drain()

        async with RawServer(busy) as server, Client(server.url, retry=HEDGED) as c:
            response = await c.get("/x")
        assert (response.status_code, server.requests) == (503, 3)  # attempts=3, no retries after

    async def test_hedges_are_paid_from_the_budget(self) -> None:
        spent = RetryBudget(ratio=0, min_retries=0)
        async with (
            RawServer(slow_first(0.3)) as server,
            Client(server.url, retry=HEDGED, retry_budget=spent) as c,
        ):
            response = await c.get("/x")
        assert (response.text, server.requests) == ("answer 1", 1)

    async def test_a_caller_leaving_during_the_first_attempt_sends_no_hedge(self) -> None:
        arrived = asyncio.Event()

        async def hang(reader: Reader, writer: Writer, n: int) -> None:
            arrived.set()
            await asyncio.sleep(5)

        recorder = Recorder()
        policy = RetryPolicy(hedge_after=1.0, jitter=False)
        async with (
            RawServer(hang) as server,
            Client(server.url, retry=policy, instrumentation=[recorder]) as c,
        ):
            call = asyncio.create_task(c.get("/x"))
            await arrived.wait()
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            assert not c.transport._hedge_timers._at  # the hedge due in 1 s will never be sent
        assert server.requests == 1
        assert [(e.attempt, e.outcome) for e in recorder.events] == [(1, "cancelled")]

    async def test_a_caller_leaving_while_hedges_run_cancels_every_attempt(self) -> None:
        second = asyncio.Event()

        async def hang(reader: Reader, writer: Writer, n: int) -> None:
            if n == 2:
                second.set()
            await asyncio.sleep(5)

        recorder = Recorder()
        async with (
            RawServer(hang) as server,
            Client(server.url, retry=HEDGED, instrumentation=[recorder]) as c,
        ):
            call = asyncio.create_task(c.get("/x"))
            await second.wait()  # the first attempt and a hedge in flight
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            # Nothing of the call is left running: every attempt heard the caller leave.
            assert [(e.attempt, e.outcome) for e in sorted(recorder.events, key=lambda e: e.attempt)] == [
                (1, "cancelled"),
                (2, "cancelled"),
            ]

    async def test_hundreds_of_hedged_calls_never_leak_the_pool(self) -> None:
        async def every_third_slow(reader: Reader, writer: Writer, n: int) -> None:
            if n % 3 == 0:
                await asyncio.sleep(0.05)
            await ok(reader, writer)

        limits = httpx.Limits(max_connections=2)
        policy = RetryPolicy(hedge_after=0.005, deadline=5)
        async with (
            RawServer(every_third_slow) as server,
            Client(server.url, retry=policy, limits=limits, timeout=httpx.Timeout(5, pool=2)) as c,
        ):
            for _ in range(100):
                first, second = await asyncio.gather(c.get("/x"), c.get("/x"))
                assert (first.status_code, second.status_code) == (200, 200)
            # Both slots free: two requests at once, neither waiting for the pool.
            async with asyncio.timeout(1):
                await asyncio.gather(c.get("/after"), c.get("/after"))
        assert server.requests >= 202


class TestAttemptTimeout:
    async def test_a_hanging_body_is_cut_and_retried(self) -> None:
        async def drip(reader: Reader, writer: Writer, n: int) -> None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            for _ in range(1000):
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(0.02)  # each byte well within the read timeout

        policy = RetryPolicy(attempt_timeout=0.2, deadline=10)
        async with RawServer(drip) as server, Client(server.url, retry=policy) as c:
            started = time.monotonic()
            with pytest.raises(AttemptTimeout) as caught:
                await c.get("/x")
        assert server.requests == 3  # retried like a read timeout
        assert time.monotonic() - started < 3
        assert isinstance(caught.value, httpx.TimeoutException)

    async def test_a_post_that_times_out_is_not_resent(self) -> None:
        async def silent(reader: Reader, writer: Writer, n: int) -> None:
            await asyncio.sleep(5)

        async with RawServer(silent) as server, Client(server.url, retry=RetryPolicy(attempt_timeout=0.1)) as c:
            with pytest.raises(AttemptTimeout):
                await c.post("/x", content=b"order")
        assert server.requests == 1

    async def test_it_never_outlasts_the_deadline(self) -> None:
        async def silent(reader: Reader, writer: Writer, n: int) -> None:
            await asyncio.sleep(5)

        policy = RetryPolicy(attempt_timeout=0.3, deadline=0.4)
        async with RawServer(silent) as server, Client(server.url, retry=policy) as c:
            started = time.monotonic()
            with pytest.raises((AttemptTimeout, DeadlineExceeded)):
                await c.get("/x")
        assert time.monotonic() - started < 1.0
