"""
Which slots a call keeps: only those still ahead when taken (a waiter's), so that a cancelled
attempt gives its slot back; a slot that has passed is never kept (giving it back does nothing).
The gate runs alone on this process's `Schedule`, with a fake clock that the sleep moves.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import httpx
import pytest

from fastapi_retry_http import RateLimit, RetryPolicy
from fastapi_retry_http._pipeline.attempts import Call, Outcome
from fastapi_retry_http._strategies.rate_limit import RateLimitGate
from fastapi_retry_http._strategies.slots import Schedule

pytestmark = pytest.mark.anyio

LIMIT = RateLimit(rate=1, per=1.0, max_wait=30)  # one slot a second, no burst


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []
        self.during_sleep: Callable[[], None] = lambda: None

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.during_sleep()
        self.during_sleep = lambda: None
        self.now += seconds


def gate_and_clock() -> tuple[RateLimitGate, Schedule, Clock]:
    clock = Clock()
    schedule = Schedule(LIMIT.interval, 0)
    return RateLimitGate(LIMIT, schedule, "partner", clock, clock.sleep), schedule, clock


def a_call() -> Call:
    return Call(httpx.Request("GET", "http://partner.test/"), RetryPolicy(), "partner", None, True)


def sent() -> Outcome:
    return Outcome(response=httpx.Response(200))


async def test_a_slot_now_is_not_kept_and_a_waiters_slot_is_until_it_is_used() -> None:
    gate, _, clock = gate_and_clock()
    first, second = a_call(), a_call()
    assert gate.admit(first) is None
    assert first.state is None  # nothing kept: the slot has passed by the time anything ends
    waiting = gate.admit(second)  # one second ahead
    assert inspect.iscoroutine(waiting)
    assert second.state == {gate: [101.0]}
    assert await waiting is None
    assert clock.slept == [1.0]
    gate.record(second, sent())
    gate.record(first, sent())
    assert second.state == {gate: []}  # used: forgotten
    assert gate.in_flight() == 0


async def test_a_cancelled_waiter_gives_its_slot_to_the_next_asker() -> None:
    gate, schedule, clock = gate_and_clock()
    assert gate.admit(a_call()) is None
    waiter = a_call()
    waiting = gate.admit(waiter)
    assert inspect.iscoroutine(waiting)
    waiting.close()  # its call went away before it waited
    gate.record(waiter, Outcome(cancelled=True))
    assert schedule.take(clock.now, clock.now + 5) == 101.0  # the hole, not 102
    assert gate.in_flight() == 1


async def test_a_pause_during_the_wait_moves_the_waiter_to_a_slot_after_it() -> None:
    gate, schedule, clock = gate_and_clock()
    assert gate.admit(a_call()) is None
    call = a_call()
    waiting = gate.admit(call)
    assert inspect.iscoroutine(waiting)
    clock.during_sleep = lambda: schedule.pause(clock.now + 5)  # a Retry-After arrives meanwhile
    assert await waiting is None
    assert clock.slept == [1.0, 4.0]  # to its slot, then to the end of the pause
    assert call.state == {gate: [105.0]}
    gate.record(call, sent())
    assert call.state == {gate: []}


async def test_a_waiter_whose_slot_another_attempt_forgot_still_takes_a_new_one() -> None:
    gate, schedule, clock = gate_and_clock()
    call = a_call()
    assert gate.admit(call) is None  # the first attempt, sent now
    waiting = gate.admit(call)  # a hedge, one second ahead

    def first_ends_then_pause() -> None:
        clock.now += 1.0  # the hedge's slot passes while the first attempt still runs
        gate.record(call, sent())  # ... which then ends: the passed slot is forgotten
        schedule.pause(clock.now + 5)
        clock.now -= 1.0  # the sleep itself adds the second

    clock.during_sleep = first_ends_then_pause
    assert inspect.iscoroutine(waiting)
    assert await waiting is None
    assert call.state == {gate: [106.0]}
    assert gate.in_flight() == 1
