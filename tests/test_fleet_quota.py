"""
`FleetLimiter` alone, with scripted Redis replies on a fake clock: how it takes leased slots and
holes, refuses without a round trip, publishes the server's word, sizes its leases, and goes
local and back. (tests/test_rate_limit_fleet.py runs it against a real redis-server.)
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

import httpx
import pytest

from fastapi_retry_http import RateLimit, RetryPolicy
from fastapi_retry_http._pipeline.attempts import Call, Outcome
from fastapi_retry_http._pipeline.strategy import Refusal
from fastapi_retry_http._stores.fleet_quota import FleetLimiter
from fastapi_retry_http._strategies.rate_limit import NEED_LEASE, RateLimitGate
from fastapi_retry_http.exceptions import RateLimitedError

pytestmark = pytest.mark.anyio

LIMIT = RateLimit(rate=10, max_wait=5)
REDIS_NOW = 1_800_000_000_000_000  # microseconds


class Script:
    """Redis's replies, in order; an exception instance is raised instead."""

    def __init__(self, *replies: Any) -> None:
        self.replies = list(replies)
        self.args: list[list[Any]] = []

    async def run(self, keys: list[str], args: list[Any]) -> Any:
        self.args.append(args)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lease(*offsets_ms: float, processes: int = 2, earliest_ms: float = 0.0) -> list[int]:
    return [processes, REDIS_NOW, int(earliest_ms * 1000), *(int(ms * 1000) for ms in offsets_ms)]


def limiter(script: Script, clock: Clock, limit: RateLimit = LIMIT) -> FleetLimiter:
    return FleetLimiter(limit, "p:{partner}:quota", script.run, clock)


async def test_slots_come_from_the_lease_then_holes_then_another_lease() -> None:
    clock, script = Clock(), Script(lease(0, 100, 200), lease(300))
    fleet = limiter(script, clock)
    assert fleet.take(clock.now, clock.now + 5) is NEED_LEASE
    await asyncio.gather(*(fleet.refill(clock.now, clock.now + 5) for _ in range(3)))  # one lease of 3
    assert script.args[0][2] == 3
    assert fleet.processes == 2
    first = fleet.take(clock.now, clock.now + 5)
    second = fleet.take(clock.now, clock.now + 5)
    assert isinstance(first, float)
    assert isinstance(second, float)
    assert first == pytest.approx(100.0)
    assert second == pytest.approx(100.1)
    fleet.give_back(second, clock.now)  # a cancelled waiter: the next taker gets it
    assert fleet.take(clock.now, clock.now + 5) == second
    assert fleet.take(clock.now, clock.now + 0.1) is None  # the next leased one is 0.2 s away
    assert fleet.earliest(clock.now) == pytest.approx(100.2)
    clock.now += 1.0  # the last leased slot passed unused: lost
    assert fleet.take(clock.now, clock.now + 5) is NEED_LEASE
    status = fleet.status(clock.now)
    assert status["fleet"] == {"redis": "up", "processes": 2, "leased": 0, "round_trips": 1}


async def test_nothing_within_reach_is_refused_without_another_round_trip() -> None:
    clock, script = Clock(), Script(lease(earliest_ms=8000))
    fleet = limiter(script, clock)
    await fleet.refill(clock.now, clock.now + 5)
    assert fleet.take(clock.now, clock.now + 5) is None
    assert fleet.earliest(clock.now) == pytest.approx(108.0)
    assert len(script.args) == 1


async def test_replies_out_of_range_are_not_obeyed() -> None:
    clock = Clock()
    script = Script([10**9, REDIS_NOW, -5, -1000, 10**12, 0])
    fleet = limiter(script, clock)
    await fleet.refill(clock.now, clock.now + 5)
    assert fleet.processes == 10_000
    assert fleet.take(clock.now, clock.now + 5) == pytest.approx(100.0)  # only the sane offset
    assert fleet.take(clock.now, clock.now + 5) is NEED_LEASE


async def test_the_servers_word_is_published_only_when_it_matters() -> None:
    clock, script = Clock(), Script(lease(), lease(), lease())
    fleet = limiter(script, clock)
    fleet.heed(None, 40, clock.now + 10, 0.5)  # quota left: nothing to tell the fleet
    await asyncio.sleep(0)
    assert script.args == []
    fleet.heed(None, 0, clock.now + 10, None)  # spent until the reset
    await asyncio.sleep(0.01)
    fleet.heed(clock.now + 3, None, None, None)  # a pause
    await asyncio.sleep(0.01)
    spent, paused = script.args
    assert spent[5:8] == [0, 0, 10_000_000]
    assert paused[5:8] == [3_000_000, -1, 0]
    assert spent[0] == 500_000  # the server's pace (0.5 s) is slower than the rate's (0.1 s)
    assert not fleet.valid(clock.now + 1)  # inside the pause


async def test_redis_down_goes_local_at_the_share_and_comes_back(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    script = Script(lease(0, processes=4), ConnectionError("down"), ConnectionError("down"), lease(0, processes=4))
    fleet = limiter(script, clock, RateLimit(rate=10, burst=4))
    await fleet.refill(clock.now, clock.now + 5)
    fleet.take(clock.now, clock.now + 5)
    with caplog.at_level(logging.INFO, logger="fastapi_retry_http"):
        await fleet.refill(clock.now, clock.now + 5)  # fails: local from now on
        assert fleet.down
        slots = [fleet.take(clock.now, clock.now + 5) for _ in range(3)]
        assert slots == [pytest.approx(100.0), pytest.approx(100.0), pytest.approx(100.4)]  # 10/s / 4, burst 4 / 4
        assert fleet.earliest(clock.now) == pytest.approx(100.8)
        assert isinstance(slots[2], float)
        fleet.give_back(slots[2], clock.now)
        fleet.heed(clock.now + 5, None, None, None)  # kept for the next lease that gets through
        clock.now += 0.6  # the background retry, 0.5 s on: down again (one warning per outage)
        fleet.take(clock.now, clock.now + 5)
        await asyncio.sleep(0.01)
        clock.now += 0.6
        fleet.take(clock.now, clock.now + 5)  # and again: this time Redis answers
        await asyncio.sleep(0.01)
        assert fleet.down  # until the slots taken alone have passed
        clock.now += 6  # past the pause heard, and the slots taken in it
        assert fleet.take(clock.now, clock.now + 5) is NEED_LEASE
    assert not fleet.down
    assert script.args[-1][5] > 0  # the pause heard during the outage was published
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "1/4 of the rate" in warnings[0].getMessage()
    assert any("shared again" in r.getMessage() for r in caplog.records)


async def test_leases_grow_with_the_attempts_in_flight() -> None:
    clock = Clock()
    script = Script(*(lease(*range(0, 1000, 10)) for _ in range(3)))
    fleet = limiter(script, clock, RateLimit(rate=100))
    fleet.in_flight = lambda: 8
    await fleet.refill(clock.now, clock.now + 5)
    assert script.args[-1][2] == 1  # no demand yet: one slot
    fleet.take(clock.now, clock.now + 5)
    await asyncio.gather(*(fleet.refill(clock.now, clock.now + 5) for _ in range(8)))
    assert script.args[-1][2] == 8  # one per attempt asking
    for _ in range(8):
        fleet.take(clock.now, clock.now + 5)
    await asyncio.sleep(0.01)  # the next batch was leased ahead, in the background
    assert len(script.args) == 3
    assert script.args[-1][2] == 5  # 9 taken this second, for half a second


def gate_for(fleet: FleetLimiter, clock: Clock, limit: RateLimit = LIMIT) -> tuple[RateLimitGate, list[float]]:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    return RateLimitGate(limit, fleet, "partner", clock, sleep), waits


def a_call() -> Call:
    return Call(httpx.Request("GET", "http://partner.test/"), RetryPolicy(), "partner", None, True)


async def test_a_retry_whose_leased_slot_passed_leases_a_new_one() -> None:
    clock, script = Clock(), Script(lease(0, 100), lease(0))
    fleet = limiter(script, clock)
    gate, waits = gate_for(fleet, clock)
    await asyncio.gather(*(fleet.refill(clock.now, clock.now + 5) for _ in range(2)))
    call = a_call()
    assert gate.admit(call) is None  # the slot leased for now
    gate.record(call, Outcome(response=httpx.Response(200)))
    waiting = gate.admit(call)  # the next leased slot, 0.1 s ahead: the retry waits after its backoff
    assert inspect.iscoroutine(waiting)
    clock.now += 1.0  # the backoff outlasted the slot: a new lease, a slot now
    assert await waiting is None
    assert waits == []
    assert len(script.args) == 2
    assert gate.in_flight() == 1


async def test_a_lease_with_nothing_within_max_wait_refuses_the_call() -> None:
    clock, script = Clock(), Script(lease(3000, earliest_ms=3000))
    fleet = limiter(script, clock)
    gate, _ = gate_for(fleet, clock, RateLimit(rate=10, max_wait=1))
    waiting = gate.admit(a_call())
    assert inspect.iscoroutine(waiting)
    refusal = await waiting
    assert isinstance(refusal, Refusal)
    assert refusal.reason == "rate_limit"
    assert isinstance(refusal.error, RateLimitedError)
    assert refusal.error.retry_after == pytest.approx(3.0)


def test_a_record_without_a_slot_changes_nothing() -> None:
    clock = Clock()
    gate, _ = gate_for(limiter(Script(), clock), clock)
    gate.record(a_call(), Outcome(cancelled=True))
    assert gate.in_flight() == 0
    assert repr(NEED_LEASE) == "NEED_LEASE"


async def test_holes_that_passed_are_dropped_and_late_batches_never_overlap() -> None:
    clock, script = Clock(), Script(lease(0, 100, 200), lease(100, 300))
    fleet = limiter(script, clock)
    await asyncio.gather(*(fleet.refill(clock.now, clock.now + 5) for _ in range(3)))
    fleet.take(clock.now, clock.now + 5)
    fleet.give_back(100.05, clock.now)  # a hole, then it passes
    clock.now += 0.06
    assert fleet.take(clock.now, clock.now + 5) == pytest.approx(100.1)
    clock.now -= 0.06
    await asyncio.gather(*(fleet.refill(clock.now, clock.now + 5) for _ in range(2)))
    # The second batch came back placed before the end of the first: only what lies after it is kept.
    assert list(fleet._slots) == [pytest.approx(100.2), pytest.approx(100.3)]
