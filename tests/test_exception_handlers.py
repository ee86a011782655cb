"""
`exception_handlers()`: upstream failures escaping a route become 502/503/504 problem details.

No `from __future__ import annotations` here: FastAPI must evaluate the `Depends` in the
annotations of routes defined inside test functions.
"""

import logging
import socket
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from fastapi_retry_http import (
    CircuitBreaker,
    Client,
    ClientRegistry,
    RetryPolicy,
    clients_lifespan,
    exception_handlers,
    exceptions,
    get_client,
)
from fastapi_retry_http._fastapi.errors import REFUSALS
from tests.servers import Upstream

PROBLEM = "application/problem+json"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def app_for(configs: dict[str, Any]) -> FastAPI:
    app = FastAPI(
        lifespan=clients_lifespan(configs, registry=ClientRegistry()), exception_handlers=exception_handlers()
    )

    @app.get("/call")
    async def call(billing: Annotated[Client, Depends(get_client("billing"))]) -> int:
        return (await billing.get("fail?token=s3cr3t")).status_code

    return app


def test_an_open_breaker_is_a_503_with_retry_after_naming_the_client(upstream: Upstream) -> None:
    upstream.script("/fail", *[503] * 4)
    breaker = CircuitBreaker(failure_ratio=0.5, minimum_throughput=2, break_duration=30)
    configs = {"billing": {"base_url": upstream.url, "circuit_breaker": breaker, "retry": {"attempts": 2}}}
    with TestClient(app_for(configs)) as http:
        assert http.get("/call").json() == 503  # two attempts, both failed: the breaker opens
        answer = http.get("/call")
    assert upstream.hits["/fail"] == 2  # the second call sent nothing
    assert answer.status_code == 503
    assert answer.headers["content-type"] == PROBLEM
    problem = answer.json()
    assert problem["client"] == "billing"
    assert problem["reason"] == "breaker"
    assert (problem["status"], problem["title"], problem["type"]) == (503, "Service Unavailable", "about:blank")
    # A break of 30 s, up to a quarter less (jitter), a little of it already gone: rounded up.
    assert 23 <= int(answer.headers["retry-after"]) <= 30
    assert str(upstream.port) not in answer.text
    assert "s3cr3t" not in answer.text


def test_an_unreachable_upstream_is_a_502_without_its_address(caplog: pytest.LogCaptureFixture) -> None:
    port = closed_port()
    configs = {"billing": {"base_url": f"http://127.0.0.1:{port}/api/", "retry": {"attempts": 1}}}
    with TestClient(app_for(configs)) as http, caplog.at_level(logging.INFO, "fastapi_retry_http"):
        answer = http.get("/call")
    assert answer.status_code == 502
    assert answer.headers["content-type"] == PROBLEM
    assert "retry-after" not in answer.headers
    assert answer.json()["client"] == "billing"
    assert answer.json()["reason"] == "upstream_error"
    assert str(port) not in answer.text
    assert "127.0.0.1" not in answer.text
    assert "billing: GET /call answered 502 (ConnectError)" in caplog.messages


REQUEST = httpx.Request("GET", "http://billing.internal/api/invoices?token=s3cr3t")


@pytest.mark.parametrize(
    ("error", "status", "reason"),
    [
        (httpx.ReadTimeout("read timed out at billing.internal", request=REQUEST), 504, "timeout"),
        (exceptions.DeadlineExceeded("deadline", request=REQUEST), 504, "timeout"),
        (exceptions.AttemptTimeout("attempt", request=REQUEST), 504, "timeout"),
        (httpx.RemoteProtocolError("peer closed billing.internal", request=REQUEST), 502, "upstream_error"),
        (exceptions.ResponseTooLargeError("too large", request=REQUEST), 502, "upstream_error"),
    ],
)
def test_timeouts_are_504_other_transport_errors_502(error: Exception, status: int, reason: str) -> None:
    answer = raising(error, base_url="http://billing.internal/api/")
    assert answer.status_code == status
    assert answer.json() == {
        "type": "about:blank",
        "title": "Gateway Timeout" if status == 504 else "Bad Gateway",
        "status": status,
        "detail": answer.json()["detail"],
        "client": "billing",
        "reason": reason,
    }
    assert "billing.internal" not in answer.text
    assert "s3cr3t" not in answer.text


@pytest.mark.parametrize(
    ("retry_after", "header"), [(2.1, "3"), (2.0, "2"), (0.0, "1"), (0.2, "1"), (float("inf"), "1")]
)
def test_retry_after_is_whole_seconds_rounded_up(retry_after: float, header: str) -> None:
    error = exceptions.CircuitOpenError("open", client="billing", retry_after=retry_after)
    answer = raising(error)
    assert (answer.status_code, answer.headers["retry-after"]) == (503, header)
    assert answer.json()["client"] == "billing"


@pytest.mark.parametrize("name", [n for n in REFUSALS if hasattr(exceptions, n)])
def test_every_refusal_is_a_503(name: str) -> None:
    refusal = getattr(exceptions, name)
    error = refusal.__new__(refusal)
    httpx.TransportError.__init__(error, "refused")
    error.client, error.retry_after = "billing", 4.5
    answer = raising(error)
    assert (answer.status_code, answer.headers["retry-after"]) == (503, "5")
    assert answer.json()["reason"] != "refused"


def test_a_refusal_named_later_says_its_own_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    class Shed(httpx.TransportError):
        reason = "shed"
        client = "billing"
        retry_after = 1.5

    monkeypatch.setattr(exceptions, "Shed", Shed, raising=False)
    monkeypatch.setattr("fastapi_retry_http._fastapi.errors.REFUSALS", ("Shed",))
    answer = raising(Shed("shed"))
    assert (answer.status_code, answer.json()["reason"], answer.headers["retry-after"]) == (503, "shed", "2")


def test_the_client_is_null_when_it_cannot_be_told() -> None:
    assert raising(httpx.ConnectError("no request attached")).json()["client"] is None
    other = httpx.ConnectError("x", request=httpx.Request("GET", "http://elsewhere.internal/"))
    assert raising(other, base_url="http://billing.internal/api/").json()["client"] is None
    assert raising(other).json()["client"] is None  # no lifespan, no registry


def test_errors_that_are_not_upstream_failures_stay_500() -> None:
    answer = raising(exceptions.UnsafeRedirectError("https to http", request=REQUEST))
    assert answer.status_code == 500


def raising(error: Exception, base_url: str | None = None) -> Any:  # TestClient's response (httpx2's when installed)
    """What the app answers when a route raises `error` (with a client `billing` at `base_url`)."""
    configs = {} if base_url is None else {"billing": {"base_url": base_url, "retry": RetryPolicy(attempts=1)}}
    app = FastAPI(
        lifespan=clients_lifespan(configs, registry=ClientRegistry()), exception_handlers=exception_handlers()
    )

    @app.get("/raise")
    async def route() -> None:
        raise error

    with TestClient(app, raise_server_exceptions=False) as http:
        return http.get("/raise")
