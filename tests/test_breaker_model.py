"""
The breaker's state machine against a reference model (hypothesis `RuleBasedStateMachine`).

Random sequences of calls, retries, outcomes (upstream success and failure, cancellation,
refusal by a later gate, the call's deadline, a pool timeout, a local error, a record that
never comes) and clock moves drive the real `BreakerGate` through the pipeline's seam
(`admit`, `record`, `status`). After every step the gate must agree with the model, and:

- it never closes without an upstream success, and never reopens without an upstream failure;
- it is never half-open or open with no probe out once the break is over (the probe lease
  expires within `break_duration`);
- at most one probe is out; no break is longer than `max_break_duration`;
- `on_circuit` hears every change exactly once, in order;
- liveness (at the end): once the upstream answers, a call succeeds within the capped break
  plus the lease.

Bounded: a derandomized run (a fixed sequence) and a random one, a few seconds each.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import httpx
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from fastapi_retry_http import CircuitBreaker, CircuitEvent, RetryPolicy
from fastapi_retry_http._pipeline.attempts import Call, Outcome
from fastapi_retry_http._pipeline.strategy import Refusal
from fastapi_retry_http._strategies.breaker import BreakerGate
from fastapi_retry_http._strategies.breaker_state import BreakerState
from fastapi_retry_http.exceptions import DeadlineExceeded

#: A window far longer than any run: the model needs no buckets.
CONFIG = CircuitBreaker(failure_ratio=0.5, minimum_throughput=2, window=1e7, break_duration=5, max_break_duration=30)
REQUEST = httpx.Request("GET", "http://upstream.test/")
RESULTS = ["success", "upstream_failure", "cancelled", "refused", "deadline", "pool_timeout", "local_error", "lost"]
ANSWERED = {"success", "upstream_failure"}
#: Failures often enough to open it, successes often enough to close it, the rest mixed in.
WEIGHTED = ["upstream_failure"] * 5 + ["success"] * 2 + RESULTS


def outcome_of(result: str, attempt: int) -> Outcome:
    """The `Outcome` the pipeline would record for `result` (`lost`: never recorded)."""
    if result == "success":
        return Outcome(response=httpx.Response(200), attempt=attempt)
    if result == "upstream_failure":
        return Outcome(response=httpx.Response(503), attempt=attempt)
    if result == "cancelled":
        return Outcome(cancelled=True, attempt=attempt)
    if result == "refused":
        return Outcome(refusal=Refusal("rate_limit"), attempt=attempt)
    errors = {
        "deadline": DeadlineExceeded("deadline"),
        "pool_timeout": httpx.PoolTimeout("pool"),
        "local_error": httpx.LocalProtocolError("local"),
    }
    return Outcome(error=errors[result], attempt=attempt)


@dataclass
class Model:
    """The breaker as the contract says it behaves, with no buckets and no jitter."""

    now: float = 0.0
    tripped: bool = False
    open_until: float = -math.inf
    opened: int = 0
    attempts: int = 0
    failures: int = 0
    probe: int | None = None  # the id of the call attempt holding the lease
    probe_until: float = -math.inf
    changes: list[tuple[str, str]] = field(default_factory=list)
    announced: str = "closed"

    def phase(self) -> str:
        if not self.tripped:
            return "closed"
        return "open" if self.now < self.open_until else "half_open"

    def observe(self) -> None:
        current = self.phase()
        if current != self.announced:
            if self.announced == "closed" and current == "half_open":
                self.changes.append(("closed", "open"))
                self.announced = "open"
            self.changes.append((self.announced, current))
            self.announced = current

    def admit(self, attempt_id: int) -> bool:
        if not self.tripped:
            return True
        self.observe()
        if self.now < self.open_until or self.now < self.probe_until:
            return False
        self.probe, self.probe_until = attempt_id, self.now + CONFIG.break_duration
        return True

    def record(self, attempt_id: int, result: str) -> None:
        if self.tripped and self.probe == attempt_id:
            self.probe, self.probe_until = None, -math.inf
            if result == "success":
                self.tripped, self.open_until, self.opened = False, -math.inf, 0
                self.attempts = self.failures = 0
                self.probe = None
            elif result == "upstream_failure":
                self.trip()
            self.observe()
            return
        if result not in ANSWERED | {"deadline", "pool_timeout", "local_error"}:
            return
        self.attempts += 1
        self.failures += result == "upstream_failure"
        enough = self.attempts >= CONFIG.minimum_throughput
        ratio = self.failures >= CONFIG.failure_ratio * self.attempts
        if result == "upstream_failure" and not self.tripped and enough and ratio:
            self.trip()
            self.observe()

    def trip(self) -> None:
        self.tripped = True
        self.opened += 1
        self.open_until = self.now + min(CONFIG.max_break_duration, CONFIG.break_for(self.opened, 0.0))
        self.probe, self.probe_until = None, -math.inf


class BreakerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self.heard: list[tuple[str, str]] = []
        self.state = BreakerState(CONFIG)
        self.gate = BreakerGate(self.state, "billing", lambda: self.model.now, lambda: 0.0, self._heard)
        self.flying: dict[int, Call] = {}  # attempt id -> its call
        self.done: list[Call] = []  # calls that may retry
        self.next_id = 0
        self.answered_since_change = False

    def _heard(self, event: CircuitEvent) -> None:
        self.heard.append((event.previous, event.state))

    def _attempt(self, call: Call) -> None:
        self.next_id += 1
        attempt_id = self.next_id
        went = self.gate.admit(call) is None
        assert went == self.model.admit(attempt_id)
        if went:
            call.attempt += 1
            call.state = call.state or {}
            call.state["id"] = attempt_id
            self.flying[attempt_id] = call

    @rule()
    def new_call(self) -> None:
        self._attempt(Call(REQUEST, RetryPolicy(), "billing", None, True))

    @precondition(lambda self: bool(self.done))
    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        call = self.done.pop(data.draw(st.integers(0, len(self.done) - 1)))
        self._attempt(call)

    @precondition(lambda self: bool(self.flying))
    @rule(data=st.data(), result=st.sampled_from(WEIGHTED))
    def finish(self, data: st.DataObject, result: str) -> None:
        attempt_id = data.draw(st.sampled_from(sorted(self.flying)))
        call = self.flying.pop(attempt_id)
        was = self.model.phase()
        if result != "lost":
            self.gate.record(call, outcome_of(result, call.attempt))
            self.model.record(attempt_id, result)
        if was != "closed" and self.model.phase() == "closed":
            assert result == "success"  # never closes without an upstream success
        self.done.append(call)

    @rule(seconds=st.sampled_from([0.0, 0.5, 1.0, 2.5, 4.9, 5.0, 10.0, 31.0]))
    def later(self, seconds: float) -> None:
        self.model.now += seconds

    @rule()
    def read_status(self) -> None:
        status = self.gate.status()
        self.model.observe()
        assert status.state == self.model.phase()
        expected = max(0.0, self.model.open_until - self.model.now) if status.state == "open" else 0.0
        assert status.retry_after == expected

    @invariant()
    def agrees_with_the_model(self) -> None:
        state, now = self.state, self.model.now
        assert state.tripped == self.model.tripped
        assert state.open_until == self.model.open_until
        assert state.probe_out(now) == (now < self.model.probe_until)

    @invariant()
    def bounded(self) -> None:
        state, now = self.state, self.model.now
        assert state.open_until - now <= CONFIG.max_break_duration + 1e-9  # no break beyond the cap
        assert state.probe_until - now <= CONFIG.break_duration + 1e-9  # a lease, never held for good
        leases = [c.state.get(state) for c in self.flying.values() if c.state is not None]
        holders = [held for held in leases if isinstance(held, tuple) and held[0] == state.lease_number]
        assert len(holders) <= 1 or not state.probe_out(now)  # one probe at a time

    @invariant()
    def every_change_heard_once(self) -> None:
        assert self.heard == self.model.changes
        for (_, before), (after, _) in itertools.pairwise(self.heard):
            assert before == after  # a chain: nothing missed, nothing twice

    def teardown(self) -> None:
        # Liveness: the upstream answers from now on; within the capped break plus the lease
        # every leftover lease has expired and the break is over: the next call probes, closes.
        self.model.now += CONFIG.max_break_duration + CONFIG.break_duration
        call = Call(REQUEST, RetryPolicy(), "billing", None, True)
        assert self.gate.admit(call) is None
        call.attempt = 1
        self.gate.record(call, outcome_of("success", 1))
        assert self.gate.status().state == "closed"


BOUNDS = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_the_breaker_against_its_model_fixed_sequence() -> None:
    run_state_machine_as_test(BreakerMachine, settings=settings(BOUNDS, derandomize=True))


def test_the_breaker_against_its_model_random_sequence() -> None:
    run_state_machine_as_test(BreakerMachine, settings=BOUNDS)
