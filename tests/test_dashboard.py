"""
The operators' dashboard: `clients_router` and `AttemptLog`, through a real lifespan, a real
loopback upstream and `TestClient`. The page itself is driven in a browser by
tests/test_dashboard_browser.py.

No `from __future__ import annotations` here: FastAPI must evaluate the `Depends` in the
annotations of routes defined inside test functions.
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.testclient import TestClient

from fastapi_retry_http import (
    AttemptEvent,
    CircuitBreaker,
    CircuitEvent,
    Client,
    ClientRegistry,
    MemoryStore,
    RetryBudget,
    clients_lifespan,
    get_client,
)
from fastapi_retry_http._stores.fleet import FleetBreakerState, FleetBudgetCounter
from fastapi_retry_http._strategies.breaker import BreakerState
from fastapi_retry_http._strategies.budget import BudgetCounter
from fastapi_retry_http.dashboard import AttemptLog, clients_router
from fastapi_retry_http.exceptions import CircuitOpenError, ConfigurationError, LifespanNotRunError
from tests.servers import Upstream

KEY = "operator-key"


async def operators_only(x_api_key: Annotated[str | None, Header()] = None) -> None:
    if x_api_key != KEY:
        raise HTTPException(401, "operators only")


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def dashboard_app(configs: dict[str, Any], log: AttemptLog | None = None, **router: Any) -> FastAPI:
    instruments = [log] if log is not None else []
    app = FastAPI(lifespan=clients_lifespan(configs, registry=ClientRegistry(), instrumentation=instruments))
    app.include_router(clients_router(**(router or {"dependencies": [Depends(operators_only)]})), prefix="/ops")

    @app.get("/call/{name}/{path:path}")
    async def call(
        name: str, path: str, billing: Annotated[Client, Depends(get_client("billing"))], q: str = ""
    ) -> int:
        return (await billing.get(f"{path}?q={q}")).status_code

    return app


@pytest.fixture
def http(upstream: Upstream) -> Iterator[TestClient]:
    log = AttemptLog(clock=Clock())
    breaker = CircuitBreaker(failure_ratio=0.75, minimum_throughput=2, break_duration=30)
    configs = {
        "billing": {"base_url": upstream.url + "/api/", "circuit_breaker": breaker, "retry": {"attempts": 2}},
        "shipping": {"base_url": ["http://shipping.internal:8080/v1/", "x=1"][0], "retry_budget": None},
    }
    with TestClient(dashboard_app(configs, log), headers={"X-Api-Key": KEY}) as client:
        yield client


class TestAccess:
    def test_without_dependencies_it_refuses_to_be_built(self) -> None:
        with pytest.raises(ConfigurationError, match=r"dependencies=\[Depends\(\.\.\.\)\].*public=True"):
            clients_router()
        with pytest.raises(ConfigurationError):
            clients_router(dependencies=[])

    def test_the_dependency_guards_page_and_json(self, upstream: Upstream) -> None:
        with TestClient(dashboard_app({"billing": {"base_url": upstream.url}})) as http:
            assert http.get("/ops/").status_code == 401
            assert http.get("/ops/clients.json").status_code == 401
            assert http.get("/ops/clients.json", headers={"X-Api-Key": KEY}).status_code == 200

    def test_public_on_purpose(self, upstream: Upstream) -> None:
        with TestClient(dashboard_app({"billing": {"base_url": upstream.url}}, public=True)) as http:
            assert http.get("/ops/clients.json").json()["clients"][0]["name"] == "billing"

    def test_without_the_lifespan_it_says_so(self) -> None:
        app = FastAPI()
        app.include_router(clients_router(public=True))
        with TestClient(app) as http, pytest.raises(LifespanNotRunError):
            http.get("/clients.json")


class TestClientsJson:
    def test_every_client_with_its_strategies(self, http: TestClient) -> None:
        data = http.get("/ops/clients.json").json()
        assert data["time"] == 1_800_000_000.0
        billing, shipping = data["clients"]
        assert (billing["name"], shipping["name"]) == ("billing", "shipping")
        assert shipping["base_url"] == "http://shipping.internal:8080/v1/"
        assert billing["strategies"]["circuit_breaker"] == {
            "state": "closed",
            "failure_ratio": 0.0,
            "attempts": 0,
            "retry_after": 0.0,
            "next_probe_at": None,
            "scope": "process",
        }
        assert billing["strategies"]["retry_budget"] == {
            "window": 10.0,
            "requests": 0,
            "retries": 0,
            "retries_left": 100,
            "scope": "process",
        }
        assert shipping["strategies"] == {}
        assert (billing["recorded"], billing["attempts"], billing["outcomes"]) == (True, [], {})

    def test_attempts_newest_first_without_query_with_outcome_counts(
        self, http: TestClient, upstream: Upstream
    ) -> None:
        upstream.script("/api/invoices/7", 503)
        assert http.get("/call/billing/invoices/7", params={"q": "secret-query"}).json() == 200
        billing = http.get("/ops/clients.json").json()["clients"][0]
        assert "secret-query" not in str(billing)
        assert [(a["path"], a["attempt"], a["status"], a["outcome"]) for a in billing["attempts"]] == [
            ("/api/invoices/7", 2, 200, "success"),
            ("/api/invoices/7", 1, 503, "retry"),
        ]
        newest = billing["attempts"][0]
        assert (newest["method"], newest["error"], newest["reason"], newest["injected"]) == ("GET", None, None, False)
        assert newest["time"] == 1_800_000_000.0
        assert 0 < newest["duration"] < 5
        assert billing["outcomes"] == {"success": 1, "retry": 1}
        budget = billing["strategies"]["retry_budget"]
        assert (budget["requests"], budget["retries"], budget["retries_left"]) == (
            1,
            1,
            100,
        )  # 100 + 0.5 - 1, rounded up

    def test_an_opening_breaker_shows_with_its_next_probe(self, http: TestClient, upstream: Upstream) -> None:
        upstream.script("/api/down", 503, 503)
        assert http.get("/call/billing/down").json() == 503
        billing = http.get("/ops/clients.json").json()["clients"][0]
        breaker = billing["strategies"]["circuit_breaker"]
        assert (breaker["state"], breaker["failure_ratio"], breaker["attempts"]) == ("open", 1.0, 2)
        assert 22 < breaker["retry_after"] <= 30
        assert breaker["next_probe_at"] == pytest.approx(1_800_000_000.0 + breaker["retry_after"])
        assert billing["circuit_events"] == [
            {"time": 1_800_000_000.0, "state": "open", "previous": "closed", "retry_after": pytest.approx(29, abs=7)}
        ]
        assert billing["attempts"][0]["reason"] == "attempts"
        with pytest.raises(CircuitOpenError):
            http.get("/call/billing/down")
        refused = http.get("/ops/clients.json").json()["clients"][0]["attempts"][0]
        assert (refused["outcome"], refused["reason"], refused["error"]) == ("refused", "breaker", "CircuitOpenError")

    def test_any_strategy_with_a_status_is_shown_generically(self, http: TestClient) -> None:
        @dataclass
        class Inner:
            paused_until: float
            rates: tuple[int, ...]

        class Quota:
            def status(self) -> dict[str, object]:
                return {"remaining": 3, "reset": float("inf"), "inner": Inner(1.5, (1, 2)), "odd": object}

        class Silent:
            pass

        registry = http.app.state.fastapi_retry_http_clients  # type: ignore[attr-defined]
        by_option = registry["billing"].transport.strategies.by_option
        by_option["rate_limit"], by_option["odd"], by_option["silent"] = Quota(), OddStatus(), Silent()
        shown = http.get("/ops/clients.json").json()["clients"][0]["strategies"]
        assert shown["rate_limit"] == {
            "remaining": 3,
            "reset": None,
            "inner": {"paused_until": 1.5, "rates": [1, 2]},
            "odd": "<class 'object'>",
            "scope": "process",
        }
        assert shown["odd"] == {"value": [0.25], "scope": "fleet"}
        assert "silent" not in shown

    def test_without_an_attempt_log_attempts_are_not_recorded(self, upstream: Upstream) -> None:
        with TestClient(dashboard_app({"billing": {"base_url": upstream.url}}), headers={"X-Api-Key": KEY}) as http:
            http.get("/call/billing/ping")
            billing = http.get("/ops/clients.json").json()["clients"][0]
        assert (billing["recorded"], billing["attempts"], billing["outcomes"]) == (False, [], {})

    def test_a_shared_store_labels_the_fleets_state(self, upstream: Upstream) -> None:
        class FleetStore(MemoryStore):
            def budget_counter(self, client: str, budget: RetryBudget) -> BudgetCounter:
                counter = FleetBudgetCounter(budget)
                counter.fleet = (40, 3)  # the fleet's requests and retries at the last flush
                return counter

            def breaker_state(self, client: str, breaker: CircuitBreaker) -> BreakerState:
                state = FleetBreakerState(breaker)
                state.fleet = (10, 1)
                return state

        configs = {"billing": {"base_url": upstream.url, "circuit_breaker": {}}}
        app = FastAPI(lifespan=clients_lifespan(configs, registry=ClientRegistry(), store=FleetStore()))
        app.include_router(clients_router(public=True))
        with TestClient(app) as http:
            strategies = http.get("/clients.json").json()["clients"][0]["strategies"]
        assert strategies["retry_budget"]["scope"] == "fleet"
        assert (strategies["retry_budget"]["requests"], strategies["retry_budget"]["retries"]) == (40, 3)
        assert (strategies["circuit_breaker"]["scope"], strategies["circuit_breaker"]["attempts"]) == ("fleet", 10)


class OddStatus:
    state = FleetBreakerState(CircuitBreaker())
    state.fleet = (0, 0)

    def status(self) -> list[float]:
        return [0.25]


class TestPage:
    def test_one_self_contained_page_under_a_nonce(self, http: TestClient) -> None:
        page = http.get("/ops/")
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["cache-control"] == "no-store"
        csp = page.headers["content-security-policy"]
        nonce = re.search(r"'nonce-([\w-]+)'", csp)
        assert nonce is not None
        assert f'<script nonce="{nonce.group(1)}">' in page.text
        assert f'<style nonce="{nonce.group(1)}">' in page.text
        assert "default-src 'none'" in csp
        assert "connect-src 'self'" in csp
        assert "{{" not in page.text
        assert "const POLL_MS = 1000;" in page.text
        # Nothing from elsewhere: no CDN, no external script, style or font.
        assert re.search(r"(src|href)=\"(https?:)?//", page.text) is None
        assert http.get("/ops/").headers["content-security-policy"] != csp  # a fresh nonce each time
        assert "innerHTML" not in page.text  # paths come from users: nodes with text, never markup


class TestAttemptLog:
    def event(self, outcome: str = "success", client: str = "billing") -> AttemptEvent:
        return AttemptEvent(client, "GET", "http://b/x", 1, 200, None, 0.01, outcome)  # type: ignore[arg-type]

    def test_keeps_the_last_attempts_per_client(self) -> None:
        log = AttemptLog(size=3, clock=Clock())
        for _ in range(5):
            log.on_attempt(self.event())
        log.on_attempt(self.event(client="shipping"))
        billing = log.of("billing")
        assert billing is not None
        assert len(billing.attempts) == 3
        assert log.of("shipping") is not None
        assert log.of("other") is None

    def test_counts_cover_the_last_minute(self) -> None:
        clock = Clock(1000.0)
        log = AttemptLog(clock=clock)
        log.on_attempt(self.event("retry"))
        clock.now = 1030.5
        log.on_attempt(self.event("success"))
        log.on_attempt(self.event("success"))
        billing = log.of("billing")
        assert billing is not None
        assert billing.counts(clock.now) == {"retry": 1, "success": 2}
        clock.now = 1060.2  # the retry's second has left the minute
        assert billing.counts(clock.now) == {"success": 2}
        clock.now = 1500.0
        assert billing.counts(clock.now) == {}
        clock.now = 1400.0  # a clock that steps back counts into the newest second, never elsewhere
        log.on_attempt(self.event("failed"))
        assert billing.counts(clock.now) == {"failed": 1}

    def test_keeps_breaker_changes(self) -> None:
        log = AttemptLog(clock=Clock())
        log.on_circuit(CircuitEvent("billing", "open", "closed", 5.0))
        log.on_circuit(CircuitEvent("billing", "half_open", "open"))
        billing = log.of("billing")
        assert billing is not None
        assert [e.state for _, e in billing.circuit] == ["open", "half_open"]

    @pytest.mark.parametrize("size", [0, -1, True, 2.5])
    def test_a_bad_size_is_refused(self, size: Any) -> None:
        with pytest.raises(ValueError, match="positive integer"):
            AttemptLog(size=size)
