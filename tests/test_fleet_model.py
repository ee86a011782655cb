"""
Two processes' breakers sharing one real redis-server, driven by hypothesis
(`RuleBasedStateMachine`): random calls and outcomes in either process, flushes, real time
passing (Redis keeps time by TTLs), Redis stopped, started and restarted, and hostile values
written into the store's keys. After every step:

- no break, local or adopted, is longer than `max_break_duration`; no lease outlives the break;
- at most one probe is out in the fleet (while Redis has been up for a whole lease);
- a process never closes without an upstream success somewhere in the fleet since it opened;
- `on_circuit` hears every change of each process exactly once, adopted ones included;
- liveness (at the end): once the upstream answers, a call succeeds within the capped break
  plus a lease and a flush, and both processes close.

Flushes are steps of their own (the stores' own interval never fires), so a failing sequence
replays. Bounded: a derandomized run and a random one, each well under a minute.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Coroutine, Iterator
from typing import Any

import httpx
import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from fastapi_retry_http import CircuitBreaker, CircuitEvent, RetryPolicy, _clock
from fastapi_retry_http._pipeline.attempts import Call, Outcome
from fastapi_retry_http._pipeline.strategy import Refusal
from fastapi_retry_http._strategies.breaker import BreakerGate
from fastapi_retry_http.exceptions import DeadlineExceeded
from fastapi_retry_http.redis import RedisStore
from tests.redis_server import RedisServer, redis_server_path

CONFIG = CircuitBreaker(failure_ratio=0.5, minimum_throughput=2, window=60, break_duration=0.2, max_break_duration=0.5)
REQUEST = httpx.Request("GET", "http://upstream.test/")
RESULTS = ["success", "failure", "failure", "failure", "cancelled", "refused", "deadline", "pool_timeout", "lost"]
HOSTILE = ["open_forever", "tripped_garbage", "stranger_probe", "counts_garbage", "wrong_types"]
SERVER: RedisServer | None = None


def outcome_of(result: str, attempt: int) -> Outcome:
    if result == "success":
        return Outcome(response=httpx.Response(200), attempt=attempt)
    if result == "failure":
        return Outcome(response=httpx.Response(503), attempt=attempt)
    if result == "cancelled":
        return Outcome(cancelled=True, attempt=attempt)
    if result == "refused":
        return Outcome(refusal=Refusal("rate_limit"), attempt=attempt)
    error = DeadlineExceeded("deadline") if result == "deadline" else httpx.PoolTimeout("pool")
    return Outcome(error=error, attempt=attempt)


class Process:
    """One process: its store, its breaker gate, what it heard, its attempts in flight."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.state = store.breaker_state("billing", CONFIG)
        self.gate = BreakerGate(self.state, "billing", _clock.monotonic, lambda: 0.5, self.heard_one)
        self.heard: list[tuple[str, str]] = []
        #: Attempts in flight, and whether each was let through as a probe.
        self.flying: list[tuple[Call, bool]] = []
        #: Upstream successes in the fleet when this process last opened.
        self.successes_at_open = 0
        #: Changes heard that the invariant has checked.
        self.checked = 0

    def heard_one(self, event: CircuitEvent) -> None:
        self.heard.append((event.previous, event.state))


class FleetMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        assert SERVER is not None
        self.server = SERVER
        if not self.server.ping():
            self.server.start()
        self.loop = asyncio.new_event_loop()
        prefix = f"model-{uuid.uuid4().hex[:8]}"
        self.base = f"{prefix}:{{billing}}"
        self.stores = [RedisStore(self.server.url, prefix=prefix, interval=10.0, timeout=0.5) for _ in range(2)]
        for store in self.stores:
            self.run(store.start())
        self.processes = [Process(store) for store in self.stores]
        self.successes = 0
        self.disrupted = time.monotonic()  # Redis's leases are trusted a lease after this

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(coroutine)

    @rule(p=st.integers(0, 1))
    def call(self, p: int) -> None:
        process = self.processes[p]
        call = Call(REQUEST, RetryPolicy(), "billing", None, True)
        probing = process.state.tripped
        if process.gate.admit(call) is None:
            call.attempt = 1
            process.flying.append((call, probing))

    @precondition(lambda self: any(p.flying for p in self.processes))
    @rule(data=st.data(), result=st.sampled_from(RESULTS))
    def finish(self, data: st.DataObject, result: str) -> None:
        process = data.draw(st.sampled_from([p for p in self.processes if p.flying]))
        call, probe = process.flying.pop(data.draw(st.integers(0, len(process.flying) - 1)))
        self.successes += probe and result == "success"  # a probe's upstream success
        if result != "lost":
            process.gate.record(call, outcome_of(result, 1))

    @rule(p=st.integers(0, 1))
    def flush(self, p: int) -> None:
        self.run(self.stores[p].flush())

    @rule(seconds=st.sampled_from([0.05, 0.1, 0.25]))
    def wait(self, seconds: float) -> None:
        time.sleep(seconds)  # Redis keeps time by its TTLs: real time has to pass

    @rule(how=st.sampled_from(["stop", "start", "restart"]))
    def redis_outage(self, how: str) -> None:
        if how in ("stop", "restart"):
            self.server.stop()
        if how in ("start", "restart") and not self.server.ping():
            self.server.start()
        self.disrupted = time.monotonic()

    @rule(kind=st.sampled_from(HOSTILE))
    def hostile(self, kind: str) -> None:
        if not self.server.ping():
            return
        r = redis.Redis.from_url(self.server.url)
        base, ten_years = self.base, 10 * 365 * 86400 * 1000
        if kind == "open_forever":
            r.set(f"{base}:open", "1", px=ten_years)
        elif kind == "tripped_garbage":
            r.set(f"{base}:tripped", "-7e99")
        elif kind == "stranger_probe":
            r.set(f"{base}:probe", "stranger")
            self.disrupted = time.monotonic()  # a lease Redis did not grant to either
        elif kind == "counts_garbage":
            r.hset(f"{base}:breaker:60000", mapping={"a1": "x", "f9999999999999": "1", "a0": "-5"})
        else:
            r.delete(f"{base}:closed")
            r.hset(f"{base}:closed", "x", "y")
        r.close()

    @invariant()
    def bounded(self) -> None:
        now = _clock.monotonic()
        for process in self.processes:
            assert process.state.open_until - now <= CONFIG.max_break_duration + 1e-6
            assert process.state.probe_until - now <= CONFIG.break_duration + 1e-6

    @invariant()
    def one_probe_in_the_fleet(self) -> None:
        now = _clock.monotonic()
        if time.monotonic() - self.disrupted < CONFIG.break_duration + 0.05:
            return
        if not all(store.connected for store in self.stores):
            return
        out = sum(p.state.probe_out(now) for p in self.processes)
        assert out <= 1

    @invariant()
    def heard_once_and_never_closed_without_success(self) -> None:
        for process in self.processes:
            heard = process.heard
            for (_, before), (after, _) in itertools.pairwise(heard):
                assert before == after  # a chain: nothing missed, nothing twice
            for previous, current in heard[process.checked :]:
                if previous == "closed":
                    process.successes_at_open = self.successes
                if current == "closed":
                    assert self.successes > process.successes_at_open
            process.checked = len(heard)
            phase = process.state.phase(_clock.monotonic())
            assert (heard[-1][1] if heard else "closed") == phase

    def teardown(self) -> None:
        try:
            if not self.server.ping():
                self.server.start()
            self.liveness()
        finally:
            for store in self.stores:
                self.run(store.aclose())
            self.loop.close()

    def liveness(self) -> None:
        """The upstream answers from now: both close within break + lease + a few flushes."""
        bound = CONFIG.max_break_duration + CONFIG.break_duration + 0.6
        started = time.monotonic()
        while any(p.state.tripped for p in self.processes):
            assert time.monotonic() - started < bound, "the fleet did not recover in time"
            for process in self.processes:
                call = Call(REQUEST, RetryPolicy(), "billing", None, True)
                probing = process.state.tripped
                if process.gate.admit(call) is None:
                    self.successes += probing
                    process.gate.record(call, outcome_of("success", 1))
            for store in self.stores:
                self.run(store.flush())
            self.heard_once_and_never_closed_without_success()
            time.sleep(0.02)


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    executable = redis_server_path()
    if executable is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server); CI installs it")
    global SERVER
    SERVER = RedisServer(executable)
    SERVER.start()
    yield SERVER
    SERVER.stop()
    SERVER = None


BOUNDS = settings(
    max_examples=10,
    stateful_step_count=25,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def test_two_processes_against_the_contract_fixed_sequence(server: RedisServer) -> None:
    run_state_machine_as_test(FleetMachine, settings=settings(BOUNDS, derandomize=True))


def test_two_processes_against_the_contract_random_sequence(server: RedisServer) -> None:
    run_state_machine_as_test(FleetMachine, settings=BOUNDS)
