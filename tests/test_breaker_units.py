"""
The breaker's and the shared store's small rules, one at a time, with no I/O: the recheck
before a retry, listeners that went away, adoption that never shortens a break, the reply
bounded again, a flush that fails or is answered with garbage, URLs that are sockets.
"""

from __future__ import annotations

import gc
import math
from typing import Any

import httpx
import pytest

from fastapi_retry_http import CircuitBreaker, CircuitEvent, RetryBudget, RetryPolicy
from fastapi_retry_http._pipeline.attempts import Call
from fastapi_retry_http._stores.fleet import FleetBreakerState, FleetBudgetCounter
from fastapi_retry_http._stores.fleet_sync import Reply, adopt, breaker_args, parse_reply
from fastapi_retry_http._stores.redis_sync import Entry, sync
from fastapi_retry_http._strategies.breaker import BreakerGate
from fastapi_retry_http._strategies.breaker_state import BreakerState
from fastapi_retry_http.redis import redacted

pytestmark = pytest.mark.anyio

CONFIG = CircuitBreaker(minimum_throughput=2, break_duration=5, max_break_duration=30)
REQUEST = httpx.Request("GET", "http://upstream.test/")


def a_call() -> Call:
    return Call(REQUEST, RetryPolicy(), "billing", None, True)


def gate_on(state: BreakerState, now: list[float], heard: list[CircuitEvent] | None = None) -> BreakerGate:
    return BreakerGate(state, "billing", lambda: now[0], lambda: 0.0, (heard if heard is not None else []).append)


def test_a_retry_that_is_the_probe_goes_and_others_wait() -> None:
    now, state = [0.0], BreakerState(CONFIG)
    gate = gate_on(state, now)
    assert gate.ready(a_call()) is None  # closed
    state.trip(0.0, lambda: 0.0)
    now[0] = 5.0
    probe, other = a_call(), a_call()
    assert gate.admit(probe) is None  # admitted before its backoff wait: the probe
    assert gate.ready(probe) is None  # still the probe after the wait
    assert gate.ready(other) is not None  # the slot is taken
    now[0] = 10.0  # the probe's lease expired during its wait: the slot is free again
    assert gate.ready(other) is None


def test_a_listener_that_went_away_is_dropped() -> None:
    now, state = [0.0], BreakerState(CONFIG)
    heard: list[CircuitEvent] = []
    gone = gate_on(state, now)
    kept = gate_on(state, now, heard)
    del gone
    gc.collect()
    state.trip(0.0, lambda: 0.0)
    assert [(e.previous, e.state) for e in heard] == [("closed", "open")]
    assert len(state._listeners) == 1
    assert kept.status().state == "open"


def test_adoption_never_shortens_a_break_and_a_close_of_a_closed_breaker_is_nothing() -> None:
    state = BreakerState(CONFIG)
    state.adopt_close(0.0)
    assert state.announced == "closed"
    state.adopt_open(0.0, 20.0, 3)
    state.adopt_open(1.0, 10.0, 1)  # shorter: kept as it was
    assert (state.open_until, state.opened) == (20.0, 3)
    state.adopt_open(1.0, 1e9, 99)  # longer than the cap: capped
    assert (state.open_until, state.opened) == (31.0, 64)


def test_a_reply_is_bounded_again_and_garbage_is_unusable() -> None:
    reply = parse_reply([-5, 10**20, 1, 1, 10**9, 999, 7, -9, b"marker", 0], 30_000, 5_000)
    assert reply == Reply(0, 10**9, 1, 1, 30_000, 64, True, -2, "marker", 0)
    assert parse_reply([1, 2, 3], 30_000, 5_000) is None
    assert parse_reply(["x"] * 10, 30_000, 5_000) is None


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("unix:///run/redis.sock?password=pw", "unix:///run/redis.sock"),
        ("unix://:pw@/run/redis.sock", "unix://***@/run/redis.sock"),
        ("redis://[::1]:6379/0", "redis://[::1]:6379/0"),
        ("redis://host/0/pw", "redis://host"),
    ],
)
def test_socket_and_odd_urls_show_no_secret(url: str, shown: str) -> None:
    assert redacted(url) == shown


def test_a_used_lease_is_given_back_without_sitting_out() -> None:
    state = FleetBreakerState(CONFIG)
    state.fleet = (0, 0)
    state.trip(0.0, lambda: 0.0)
    state.publish = ""
    state.fleet_lease_until = 7.0
    assert state.try_probe(5.0) is not None  # under the fleet's lease, bounded by it
    assert state.probe_until == 7.0
    state.settle(state.lease_number, 6.0, "no_answer", lambda: 0.0)
    args = breaker_args(state, 6.0, 5.0)
    assert args[10] == "1"  # release
    assert state.cooldown == 0  # it was used: no reason to sit out


def test_a_probe_out_here_is_not_republished() -> None:
    state = FleetBreakerState(CONFIG)
    state.fleet = (0, 0)
    state.trip(0.0, lambda: 0.0)
    state.publish = ""
    state.fleet_lease_until = 10.0
    state.try_probe(5.0)
    adopt(state, 5.0, Reply(0, 0, 0, 0, -2, 0, False, -2, "", 0), state.decided, 0.1, 5.0)
    assert state.publish == ""


async def test_a_failed_flush_keeps_its_counts_and_a_newer_change() -> None:
    entry = Entry("p", "billing")
    entry.budget = FleetBudgetCounter(RetryBudget())
    entry.breaker = breaker = FleetBreakerState(CONFIG)
    entry.budget.sent(0.0)
    breaker.tally(0.0, True)

    async def fails_after_a_change(**_: Any) -> Any:
        breaker.trip(0.0, lambda: 0.0)  # decided here while the flush was out
        breaker.publish = "close"
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        await sync(entry, fails_after_a_change, 0.1, 5.0)
    assert entry.budget.pending_requests == 1
    assert (breaker.pending_attempts, breaker.pending_failures) == (1, 1)
    assert breaker.publish == "close"  # the newer change, not the older one


async def test_a_garbage_reply_changes_nothing() -> None:
    entry = Entry("p", "billing")
    entry.breaker = FleetBreakerState(CONFIG)

    async def garbage(**_: Any) -> Any:
        return [b"x"] * 10

    assert await sync(entry, garbage, 0.1, 5.0) is None
    assert entry.breaker.fleet is None
    assert entry.breaker.open_until == -math.inf
