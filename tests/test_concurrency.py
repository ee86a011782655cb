"""
The concurrency limit (issue 23), against loopback servers that hold requests until told:
at most `limit` in flight, waiters in order, refusals after `max_wait`, slots given back on
every path, AIMD. Waits are injected (`sleep=`), never slept for real.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from fastapi_retry_http import (
    AdaptiveThrottle,
    Client,
    ConcurrencyLimit,
    OverloadStatus,
    RetryPolicy,
)
from fastapi_retry_http._pipeline.attempts import Outcome
from fastapi_retry_http._pipeline.strategy import Refusal
from fastapi_retry_http._strategies.concurrency import ConcurrencyGate
from fastapi_retry_http._strategies.overload import overload_status
from fastapi_retry_http.exceptions import ThrottledError
from tests.overload_helpers import ONCE, Clock, Recorder, arrived, call, gate, never, pipeline
from tests.servers import RawServer, Upstream, response_bytes

pytestmark = pytest.mark.anyio


class TestConcurrency:
    async def test_at_most_limit_in_flight_and_waiters_get_slots_in_order(self) -> None:
        release = asyncio.Event()
        in_flight, most = 0, 0

        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            await release.wait()
            in_flight -= 1
            writer.write(response_bytes())
            await writer.drain()

        limit = ConcurrencyLimit(limit=2, max_wait=60)
        async with RawServer(hold) as server, pipeline(server.url, concurrency=limit, sleep=never) as (c, transport):
            calls = [asyncio.create_task(c.get("/x")) for _ in range(5)]
            await arrived(server, 2)
            await asyncio.sleep(0.05)  # the other three wait in the client, not at the server
            assert server.requests == 2
            assert overload_status(transport.strategies.by_option) == OverloadStatus(0.0, 2, 2)
            assert transport.strategies.by_option["concurrency"].status()["waiting"] == 3
            release.set()
            responses = await asyncio.gather(*calls)
        assert [r.status_code for r in responses] == [200] * 5
        assert (server.requests, most) == (5, 2)

    async def test_a_waiter_out_of_time_is_refused_and_never_sent(self, waits: list[float]) -> None:
        release = asyncio.Event()

        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            await release.wait()
            writer.write(response_bytes())
            await writer.drain()

        recorder = Recorder()
        limit = ConcurrencyLimit(limit=1, max_wait=0.3, adaptive=False)
        async with (
            RawServer(hold) as server,
            Client(server.url, name="billing", retry=ONCE, concurrency=limit, instrumentation=[recorder]) as c,
        ):
            first = asyncio.create_task(c.get("/x"))
            await arrived(server, 1)
            with pytest.raises(ThrottledError) as raised:
                await c.get("/x")  # waits 0.3 s (skipped, recorded), then refused
            deadline = RetryPolicy(attempts=1, deadline=0.1)
            with pytest.raises(ThrottledError):
                await c.get("/x", retry=deadline)  # never waits past its deadline
            release.set()
            assert (await first).status_code == 200
        assert waits[0] == pytest.approx(0.3)
        assert waits[1] <= 0.1
        assert server.requests == 1
        assert (raised.value.reason, raised.value.client) == ("concurrency", "billing")
        assert [(e.outcome, e.reason) for e in recorder.events[:2]] == [
            ("refused", "concurrency"),
            ("refused", "concurrency"),
        ]

    async def test_max_wait_zero_refuses_at_once(self, waits: list[float]) -> None:
        gate = ConcurrencyGate(ConcurrencyLimit(limit=1, max_wait=0), "billing", Clock(), never)
        first, second = call(), call()
        assert gate.admit(first) is None
        refusal = gate.admit(second)
        assert refusal is not None
        assert not asyncio.iscoroutine(refusal)
        gate.record(first, Outcome(response=httpx.Response(200)))
        assert (gate.in_flight, waits) == (0, [])

    async def test_a_cancelled_waiter_gives_its_place_back(self) -> None:
        release = asyncio.Event()

        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            await release.wait()
            writer.write(response_bytes())
            await writer.drain()

        async with RawServer(hold) as server:
            limit = ConcurrencyLimit(limit=1, max_wait=60, adaptive=False)
            async with pipeline(server.url, concurrency=limit, sleep=never) as (client, transport):
                concurrency: ConcurrencyGate = transport.strategies.by_option["concurrency"]
                first = asyncio.create_task(client.get("/x"))
                await arrived(server, 1)
                waiter = asyncio.create_task(client.get("/x"))
                await asyncio.sleep(0.02)
                assert concurrency.status()["waiting"] == 1
                waiter.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await waiter
                assert (concurrency.status()["waiting"], concurrency.in_flight) == (0, 1)
                release.set()
                assert (await first).status_code == 200
                assert (await client.get("/x")).status_code == 200
                assert concurrency.in_flight == 0
        assert server.requests == 2

    async def test_a_burst_of_503s_shrinks_the_limit_once_per_round(self, upstream: Upstream) -> None:
        upstream.script("/busy", *[503] * 10)
        async with Client(upstream.url, name="billing", retry=ONCE, concurrency=ConcurrencyLimit(limit=10)) as c:
            responses = await asyncio.gather(*(c.get("/busy") for _ in range(10)))
            assert [r.status_code for r in responses] == [503] * 10
            assert c.overload.limit == 9  # not 0.9**10 of it
            await c.get("/busy")  # a 200, with one in flight: the limit is not nearly used
            assert c.overload.limit == 9
            upstream.script("/busy", 503)
            await c.get("/busy")  # a new round: shrinks again
            assert c.overload.limit == 8
        assert upstream.hits["/busy"] == 12


class TestConcurrencyGate:
    async def test_a_retry_takes_its_slot_after_its_backoff(self, upstream: Upstream, waits: list[float]) -> None:
        upstream.script("/flaky", 503)
        policy = RetryPolicy(attempts=2)
        async with pipeline(upstream.url, policy=policy, concurrency=ConcurrencyLimit(limit=1)) as (client, transport):
            assert (await client.get("/flaky")).status_code == 200
            concurrency: ConcurrencyGate = transport.strategies.by_option["concurrency"]
            assert (concurrency.in_flight, concurrency.status()["waiting"]) == (0, 0)
        assert upstream.hits["/flaky"] == 2
        assert len(waits) == 1  # the backoff, not a wait for a slot

    async def test_a_call_without_a_deadline_waits_for_the_slot(self) -> None:
        gate = ConcurrencyGate(ConcurrencyLimit(limit=1, max_wait=5), "billing", Clock(), never)
        holder, waiter = call(), call()
        assert waiter.deadline_at is None
        assert gate.admit(holder) is None
        waiting = gate.admit(waiter)
        assert asyncio.iscoroutine(waiting)
        task = asyncio.ensure_future(waiting)
        await asyncio.sleep(0)
        assert gate.status()["waiting"] == 1
        gate.record(holder, Outcome(response=httpx.Response(200)))
        assert await task is None  # granted, in order
        assert (gate.in_flight, gate.status()["waiting"]) == (1, 0)

    async def test_a_call_past_its_deadline_does_not_wait(self) -> None:
        clock = Clock()
        gate = ConcurrencyGate(ConcurrencyLimit(limit=1), "billing", clock, never)
        holder, late = call(), call()
        late.deadline_at = clock.now - 1
        assert gate.admit(holder) is None
        waiting = gate.admit(late)
        assert asyncio.iscoroutine(waiting)
        refusal = await waiting
        assert refusal is not None
        assert refusal.reason == "concurrency"
        assert gate.status()["waiting"] == 0

    async def test_a_retry_abandoned_before_its_wait_gives_nothing_back_twice(self) -> None:
        gate = ConcurrencyGate(ConcurrencyLimit(limit=1), "billing", Clock(), never)
        retry = call(attempt=1)
        waiting = gate.admit(retry)
        assert asyncio.iscoroutine(waiting)
        waiting.close()  # the call went away during its backoff
        gate.record(retry, Outcome(cancelled=True))
        gate.record(retry, Outcome(cancelled=True))  # nothing held: nothing to give back
        assert gate.in_flight == 0
        assert gate.admit(call()) is None


class TestReleasedOnEveryPath:
    async def test_a_retry_refused_after_its_wait_gives_its_slot_back(self, upstream: Upstream) -> None:
        """A gate that changes its mind during the backoff (as the breaker does): slots go back."""

        class ChangesItsMind:
            def __init__(self) -> None:
                self.recorded: list[Outcome] = []

            def admit(self, call: Any) -> None:
                return None

            def ready(self, call: Any) -> Refusal:
                return Refusal("breaker", httpx.ConnectError("opened meanwhile"))

            def record(self, call: Any, outcome: Outcome) -> None:
                self.recorded.append(outcome)

        upstream.script("/flaky", 503)
        mind = ChangesItsMind()
        options: dict[str, Any] = {"throttle": AdaptiveThrottle(), "concurrency": ConcurrencyLimit(limit=1)}
        options["random"] = lambda: 0.99  # the throttle lets the retry go
        async with pipeline(upstream.url, policy=RetryPolicy(attempts=2), gates=[mind], **options) as (client, t):
            with pytest.raises(httpx.ConnectError):
                await client.get("/flaky")
            assert gate(t).in_flight == 0
            assert t.strategies.by_option["concurrency"].in_flight == 0
        assert upstream.hits["/flaky"] == 1
        assert [o.refusal is not None for o in mind.recorded] == [False, True]


class TestHedges:
    async def test_a_hedge_takes_a_slot_of_its_own_or_is_not_sent(self, waits: list[float]) -> None:
        slow = asyncio.Event()

        async def first_slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            if n == 1:
                await slow.wait()
            writer.write(response_bytes())
            await writer.drain()

        policy = RetryPolicy(attempts=2, hedge_after=0.02)
        limit = ConcurrencyLimit(limit=1, max_wait=0.5)
        async with RawServer(first_slow) as server, pipeline(server.url, policy=policy, concurrency=limit) as (c, t):
            call = asyncio.create_task(c.get("/x"))
            await arrived(server, 1)
            async with asyncio.timeout(5):
                while not waits:  # noqa: ASYNC110 - the hedge's wait for a slot is recorded here
                    await asyncio.sleep(0.005)
            slow.set()
            assert (await call).status_code == 200
            assert t.strategies.by_option["concurrency"].in_flight == 0
        assert server.requests == 1  # the hedge found no slot within max_wait: never sent
        assert waits == [0.5]

    def test_a_hedged_call_holds_two_slots_each_with_its_epoch(self) -> None:
        gate = ConcurrencyGate(ConcurrencyLimit(limit=10), "billing", Clock(), never)
        hedged, other = call(), call()
        hedged.policy = RetryPolicy(hedge_after=0.05)
        assert gate.admit(hedged) is None  # the first attempt's slot: its epoch alone
        assert gate.admit(other) is None
        gate.record(other, Outcome(response=httpx.Response(503)))  # a decrease: the next round
        assert gate.limit == pytest.approx(9.0)
        hedged.attempt = 1
        assert gate.admit(hedged) is None  # the hedge's slot, taken at once too, in the new round
        assert gate.in_flight == 2
        gate.record(hedged, Outcome(response=httpx.Response(503)))  # the hedge's: this round's, so it shrinks
        assert gate.limit == pytest.approx(8.1)
        gate.record(hedged, Outcome(response=httpx.Response(503)))  # the first's: an earlier round, so not again
        assert gate.limit == pytest.approx(8.1)
        assert gate.in_flight == 0


class TestAimd:
    def test_grows_by_one_slot_per_limit_of_successes_while_nearly_used(self) -> None:
        gate = ConcurrencyGate(ConcurrencyLimit(limit=4, max_limit=5), "billing", Clock(), never)
        calls = [call() for _ in range(4)]
        for made in calls:
            assert gate.admit(made) is None
        for made in calls:  # 4 then 3 in flight of 4 are "nearly used" (>= 3/4 of it); 2 and 1 are not
            gate.record(made, Outcome(response=httpx.Response(200)))
        assert gate.limit == pytest.approx(4.25 + 1 / 4.25)
        for _ in range(40):
            batch = [call() for _ in range(gate.current)]
            for made in batch:
                gate.admit(made)
            for made in batch:
                gate.record(made, Outcome(response=httpx.Response(200)))
        assert gate.current == 5  # max_limit

    def test_a_small_fractional_limit_fully_used_still_grows(self) -> None:
        gate = ConcurrencyGate(ConcurrencyLimit(limit=2), "billing", Clock(), never)
        gate.limit = 1.9  # after a few decreases: one attempt at a time
        made = call()
        assert gate.admit(made) is None
        gate.record(made, Outcome(response=httpx.Response(200)))
        assert gate.current == 2

    def test_never_below_min_limit_and_fixed_when_not_adaptive(self) -> None:
        gate = ConcurrencyGate(ConcurrencyLimit(limit=3, min_limit=2), "billing", Clock(), never)
        fixed = ConcurrencyGate(ConcurrencyLimit(limit=3, adaptive=False), "billing", Clock(), never)
        for _ in range(20):
            for g in (gate, fixed):
                made = call()
                g.admit(made)
                g.record(made, Outcome(error=httpx.ReadTimeout("slow")))
        assert (gate.current, fixed.current) == (2, 3)
