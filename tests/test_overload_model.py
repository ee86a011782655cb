"""
The concurrency limit's bookkeeping against a reference model (hypothesis state machine):
slots are never lost or doubled, the limit stays within its bounds, AIMD moves as documented.
"""

from __future__ import annotations

import math

import httpx
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from fastapi_retry_http import ConcurrencyLimit, RetryPolicy
from fastapi_retry_http._pipeline.attempts import Call, Outcome
from fastapi_retry_http._pipeline.strategy import Refusal
from fastapi_retry_http._strategies.concurrency import BACKOFF, NEARLY_USED, ConcurrencyGate

CONFIG = ConcurrencyLimit(limit=4, max_wait=0, min_limit=2, max_limit=8)
OUTCOMES = {
    "success": lambda: Outcome(response=httpx.Response(200)),
    "drop": lambda: Outcome(response=httpx.Response(503)),
    "timeout": lambda: Outcome(error=httpx.ReadTimeout("slow")),
    "neutral": lambda: Outcome(response=httpx.Response(500)),
    "cancelled": lambda: Outcome(cancelled=True),
    "refused_later": lambda: Outcome(refusal=Refusal("rate_limit")),
}


async def _never(seconds: float) -> None:
    raise AssertionError("max_wait=0 never waits")


class ConcurrencyModel(RuleBasedStateMachine):
    calls = Bundle("calls")

    def __init__(self) -> None:
        super().__init__()
        self.gate = ConcurrencyGate(CONFIG, "billing", lambda: 0.0, _never)
        self.in_flight = 0
        self.limit = float(CONFIG.limit)
        self.epoch = 0
        self.epochs: dict[int, int] = {}

    @rule(target=calls)
    def admit(self) -> object:
        call = Call(httpx.Request("GET", "http://x.internal/"), RetryPolicy(attempts=1), "billing", None, False)
        answer = self.gate.admit(call)
        if self.in_flight < math.floor(self.limit):
            assert answer is None
            self.in_flight += 1
            self.epochs[id(call)] = self.epoch
            return call
        assert isinstance(answer, Refusal)
        assert answer.reason == "concurrency"
        return None

    @rule(call=consumes(calls), kind=st.sampled_from(sorted(OUTCOMES)))
    def finish(self, call: Call | None, kind: str) -> None:
        if call is None:
            return
        in_use = self.in_flight
        self.gate.record(call, OUTCOMES[kind]())
        self.in_flight -= 1
        epoch = self.epochs.pop(id(call))
        if kind in ("drop", "timeout") and epoch == self.epoch:
            self.limit = max(CONFIG.min_limit, self.limit * BACKOFF)
            self.epoch += 1
        elif kind == "success" and in_use >= NEARLY_USED * math.floor(self.limit):
            self.limit = min(CONFIG.max_limit, self.limit + 1 / self.limit)

    @invariant()
    def agrees(self) -> None:
        assert self.gate.in_flight == self.in_flight >= 0
        assert self.gate.limit == self.limit
        assert CONFIG.min_limit <= self.gate.current <= CONFIG.max_limit


ConcurrencyModel.TestCase.settings = settings(max_examples=100, stateful_step_count=50, deadline=None)
TestConcurrencyModel = ConcurrencyModel.TestCase
