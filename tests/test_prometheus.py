"""Prometheus: metric values after scripted calls, read from a fresh `CollectorRegistry`."""

from __future__ import annotations

import contextvars
import dataclasses
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from fastapi_retry_http import AttemptEvent, Client, RetryBudget, RetryPolicy
from fastapi_retry_http._pipeline.events import CircuitEvent, Instruments
from fastapi_retry_http.prometheus import PrometheusMetrics
from tests.test_transport import Scripted

pytestmark = pytest.mark.anyio


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


async def scripted_calls(registry: CollectorRegistry) -> None:
    metrics = PrometheusMetrics(registry)
    handler = Scripted(503, 200, 200, httpx.ConnectError("a"), httpx.ConnectError("b"), httpx.ConnectError("c"), 404)
    client = Client(
        "http://upstream",
        name="billing",
        transport=httpx.MockTransport(handler),
        retry=RetryPolicy(jitter=False),
        instrumentation=[metrics],
    )
    async with client:
        assert (await client.get("/users/42?token=secret")).status_code == 200  # 503, then 200
        assert (await client.post("/users/43")).status_code == 200
        with pytest.raises(httpx.ConnectError):
            await client.get("/users/44")  # three connect errors: out of attempts
        assert (await client.request("PURGE", "/cache")).status_code == 404


async def test_counters_and_the_call_histogram_after_scripted_calls() -> None:
    registry = CollectorRegistry()
    await scripted_calls(registry)
    attempts = "fastapi_retry_http_attempts_total"
    assert value(registry, attempts, client="billing", method="GET", outcome="retry") == 3
    assert value(registry, attempts, client="billing", method="GET", outcome="success") == 1
    assert value(registry, attempts, client="billing", method="GET", outcome="returned") == 1
    assert value(registry, attempts, client="billing", method="POST", outcome="success") == 1
    assert value(registry, attempts, client="billing", method="_OTHER", outcome="success") == 1
    retries = "fastapi_retry_http_retries_total"
    assert value(registry, retries, client="billing", reason="503") == 1
    assert value(registry, retries, client="billing", reason="ConnectError") == 2
    assert value(registry, "fastapi_retry_http_gave_up_total", client="billing", reason="attempts") == 1
    calls = "fastapi_retry_http_request_duration_seconds_count"
    assert value(registry, calls, client="billing", method="GET") == 2
    assert value(registry, calls, client="billing", method="POST") == 1
    assert value(registry, calls, client="billing", method="_OTHER") == 1
    assert value(registry, "fastapi_retry_http_request_duration_seconds_sum", client="billing", method="GET") > 0


async def test_labels_are_bounded_no_path_or_query_anywhere() -> None:
    registry = CollectorRegistry()
    await scripted_calls(registry)
    allowed = {"client", "method", "outcome", "reason", "le"}
    for family in registry.collect():
        for sample in family.samples:
            assert set(sample.labels) <= allowed, sample
            assert not [v for v in sample.labels.values() if "/" in v or "secret" in v or "users" in v], sample


async def test_a_spent_budget_shows_as_gave_up_with_reason_budget() -> None:
    registry = CollectorRegistry()
    client = Client(
        "http://upstream",
        name="billing",
        transport=httpx.MockTransport(Scripted(503)),
        retry_budget=RetryBudget(ratio=0, min_retries=0),
        instrumentation=[PrometheusMetrics(registry)],
    )
    async with client:
        for _ in range(2):
            assert (await client.get("/x")).status_code == 503
    assert value(registry, "fastapi_retry_http_gave_up_total", client="billing", reason="budget") == 2
    assert value(registry, "fastapi_retry_http_retries_total", client="billing", reason="503") == 0


def test_the_circuit_gauge_follows_the_breaker() -> None:
    registry = CollectorRegistry()
    instruments = Instruments([PrometheusMetrics(registry)])
    gauge = "fastapi_retry_http_circuit_open"
    instruments.emit_circuit(CircuitEvent("billing", "open", "closed", retry_after=5))
    assert value(registry, gauge, client="billing") == 1
    instruments.emit_circuit(CircuitEvent("billing", "half_open", "open"))
    assert value(registry, gauge, client="billing") == 1
    instruments.emit_circuit(CircuitEvent("billing", "closed", "half_open"))
    assert registry.get_sample_value(gauge, {"client": "billing"}) == 0


WORKER = """
import asyncio, sys
import httpx
from fastapi_retry_http import Client, RetryPolicy
from fastapi_retry_http._pipeline.events import CircuitEvent, Instruments
from fastapi_retry_http.prometheus import PrometheusMetrics

metrics = PrometheusMetrics()  # the default registry: values go to PROMETHEUS_MULTIPROC_DIR

async def main():
    statuses = iter([503, 200])
    transport = httpx.MockTransport(lambda request: httpx.Response(next(statuses)))
    client = Client("http://upstream", name="billing", transport=transport, retry=RetryPolicy(jitter=False),
                    instrumentation=[metrics])
    async with client:
        await client.get("/x")

asyncio.run(main())
if sys.argv[1] == "open":
    Instruments([metrics]).emit_circuit(CircuitEvent("billing", "open", "closed"))
"""


def test_multiprocess_mode_adds_up_the_workers(tmp_path: Path) -> None:
    """Two worker processes write to PROMETHEUS_MULTIPROC_DIR; /metrics would read them together."""
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": ""}
    for state in ("open", "closed"):
        subprocess.run([sys.executable, "-c", WORKER, state], env=env, check=True, timeout=60)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))  # type: ignore[no-untyped-call]
    assert value(registry, "fastapi_retry_http_attempts_total", client="billing", method="GET", outcome="retry") == 2
    assert value(registry, "fastapi_retry_http_retries_total", client="billing", reason="503") == 2
    assert value(registry, "fastapi_retry_http_request_duration_seconds_count", client="billing", method="GET") == 2
    assert value(registry, "fastapi_retry_http_circuit_open", client="billing") == 1  # the max over workers
    assert b"pid=" not in generate_latest(registry)


def test_a_cancelled_call_is_counted_not_timed_and_an_event_without_a_start_is_not_timed() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    event = AttemptEvent("billing", "GET", "http://upstream/x", 1, None, None, 0.01, "cancelled")
    metrics.on_attempt(event)
    metrics.on_attempt(dataclasses.replace(event, outcome="hedge_lost", attempt=2))
    # Delivered outside any call (no start_attempt in this context): counted, not timed.
    contextvars.Context().run(metrics.on_attempt, dataclasses.replace(event, outcome="success", status_code=200))
    attempts = "fastapi_retry_http_attempts_total"
    assert value(registry, attempts, client="billing", method="GET", outcome="cancelled") == 1
    assert value(registry, attempts, client="billing", method="GET", outcome="hedge_lost") == 1
    assert value(registry, attempts, client="billing", method="GET", outcome="success") == 1
    assert value(registry, "fastapi_retry_http_request_duration_seconds_count", client="billing", method="GET") == 0
