"""
The operators' actions (force a breaker open, close it), through the dashboard's routes on a
real lifespan and loopback upstream, and the gate's two orders against a reference model.

No `from __future__ import annotations` here: FastAPI must evaluate the `Depends` in the
annotations of routes defined inside test functions.
"""

import logging
from collections.abc import Iterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.testclient import TestClient
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from fastapi_retry_http import CircuitBreaker, CircuitEvent, Client, ClientRegistry, clients_lifespan, get_client
from fastapi_retry_http._pipeline.attempts import Call, Outcome
from fastapi_retry_http._pipeline.policy import RetryPolicy
from fastapi_retry_http._strategies.breaker import BreakerGate, BreakerState
from fastapi_retry_http.dashboard import AttemptLog, clients_router
from fastapi_retry_http.exceptions import ConfigurationError
from tests.servers import Upstream

KEY = "operator-key"
ACT = {"X-Api-Key": KEY, "X-Operator-Action": "test"}


async def operators_only(x_api_key: Annotated[str | None, Header()] = None) -> None:
    if x_api_key != KEY:
        raise HTTPException(401, "operators only")


@pytest.fixture
def http(upstream: Upstream) -> Iterator[TestClient]:
    breaker = CircuitBreaker(break_duration=5, max_break_duration=60)
    configs: dict[str, Any] = {
        "billing": {"base_url": upstream.url + "/api/", "circuit_breaker": breaker},
        "search": {"base_url": upstream.url + "/search/"},
    }
    log = AttemptLog()
    app = FastAPI(lifespan=clients_lifespan(configs, registry=ClientRegistry(), instrumentation=[log]))
    app.include_router(clients_router(dependencies=[Depends(operators_only)], actions=True), prefix="/ops")

    @app.get("/call")
    async def call(billing: Annotated[Client, Depends(get_client("billing"))]) -> int:
        try:
            return (await billing.get("ping")).status_code
        except httpx.HTTPError:
            return 0

    with TestClient(app) as client:
        yield client


def test_actions_are_never_public() -> None:
    with pytest.raises(ConfigurationError, match="actions are never public"):
        clients_router(public=True, actions=True)


def test_force_open_then_close(http: TestClient, upstream: Upstream, caplog: pytest.LogCaptureFixture) -> None:
    assert http.get("/ops/clients.json", headers=ACT).json()["actions"] is True
    with caplog.at_level(logging.WARNING, "fastapi_retry_http"):
        opened = http.post("/ops/clients/billing/circuit/open", headers=ACT).json()
    assert opened["state"] == "open"
    assert 4.9 < opened["retry_after"] <= 5  # the breaker's break_duration by default
    assert "billing: circuit forced open for 5s by an operator." in caplog.messages
    assert http.get("/call").json() == 0  # refused: nothing sent
    assert upstream.hits["/api/ping"] == 0
    assert http.post("/ops/clients/billing/circuit/open?seconds=42", headers=ACT).json()["retry_after"] > 41
    closed = http.post("/ops/clients/billing/circuit/close", headers=ACT).json()
    assert closed == {"state": "closed", "failure_ratio": 0.0, "attempts": 0, "retry_after": 0.0}
    assert http.get("/call").json() == 200
    assert upstream.hits["/api/ping"] == 1
    events = http.get("/ops/clients.json", headers=ACT).json()["clients"][0]["circuit_events"]
    assert [(e["state"], e["previous"]) for e in events] == [("closed", "open"), ("open", "open"), ("open", "closed")]


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/ops/clients/billing/circuit/open", {"X-Api-Key": KEY}, 403),  # no action header: a cross-site form
        ("/ops/clients/billing/circuit/open", {"X-Operator-Action": "x"}, 401),  # not an operator
        ("/ops/clients/nobody/circuit/close", ACT, 404),
        ("/ops/clients/search/circuit/close", ACT, 409),  # no breaker
        ("/ops/clients/billing/circuit/open?seconds=61", ACT, 422),  # over max_break_duration
        ("/ops/clients/billing/circuit/open?seconds=0", ACT, 422),
        ("/ops/clients/billing/circuit/open?seconds=inf", ACT, 422),
    ],
)
def test_refused_actions(http: TestClient, path: str, headers: dict[str, str], status: int) -> None:
    assert http.post(path, headers=headers).status_code == status
    state = http.get("/ops/clients.json", headers=ACT).json()["clients"][0]["strategies"]["circuit_breaker"]["state"]
    assert state == "closed"


class OrdersMachine(RuleBasedStateMachine):
    """
    The gate under attempts, time and operators' orders, against a model of what an order means:
    after `force_open(s)` it refuses until `s` has passed, then lets exactly one probe through;
    after `force_close()` it admits everything with an empty window; and it never stays
    open or half-open with no probe out once the break has passed.
    """

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0
        self.events: list[CircuitEvent] = []
        config = CircuitBreaker(failure_ratio=0.5, minimum_throughput=2, break_duration=5, max_break_duration=60)
        self.gate = BreakerGate(BreakerState(config), "billing", lambda: self.now, lambda: 0.0, self.events.append)
        self.out: list[Call] = []  # attempts admitted, not yet recorded

    def call(self) -> Call:
        return Call(httpx.Request("GET", "http://b/"), RetryPolicy(), "billing", None, True)

    @rule()
    def attempt(self) -> None:
        call = self.call()
        if self.gate.admit(call) is None:
            self.out.append(call)

    @rule(failed=st.booleans(), cancelled=st.booleans())
    def finish(self, failed: bool, cancelled: bool) -> None:
        if self.out:
            response = httpx.Response(503 if failed else 200)
            self.gate.record(self.out.pop(0), Outcome(response=response, cancelled=cancelled))

    @rule(seconds=st.floats(0.1, 30))
    def wait(self, seconds: float) -> None:
        self.now += seconds

    @rule(seconds=st.floats(0.5, 60))
    def force_open(self, seconds: float) -> None:
        self.gate.force_open(seconds)
        assert self.events[-1].state == "open"
        status = self.gate.status()
        assert status.state == "open"
        assert status.retry_after == pytest.approx(seconds)
        assert self.gate.admit(self.call()) is not None  # refused at once
        self.now += seconds
        probe = self.call()
        assert self.gate.admit(probe) is None  # the break has passed: one probe
        assert self.gate.admit(self.call()) is not None  # and only one
        self.out.append(probe)

    @rule()
    def force_close(self) -> None:
        self.gate.force_close()
        assert not self.events or self.events[-1].state == "closed"  # closed -> closed is no change
        status = self.gate.status()
        assert (status.state, status.attempts, status.retry_after) == ("closed", 0, 0.0)
        call = self.call()
        assert self.gate.admit(call) is None
        self.out.append(call)

    @invariant()
    def never_stuck(self) -> None:
        state = self.gate.state
        if not state.probe_out(self.now) and state.tripped and self.now >= state.open_until:
            call = self.call()
            assert self.gate.admit(call) is None  # no probe out and the break is over: this one probes
            self.out.append(call)


TestOrders = OrdersMachine.TestCase
