"""
Chaos from settings (validated, and refused at startup without `HTTP_CLIENTS_ALLOW_CHAOS=1`),
`testing.chaos_for` on an app under test, and the marks the instruments put on injected attempts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from fastapi_retry_http import (
    Client,
    ClientRegistry,
    ClientSettings,
    HttpClientsSettings,
    RetryPolicy,
    clients_lifespan,
    get_client,
)
from fastapi_retry_http._cli import main
from fastapi_retry_http._pipeline.events import Instrument
from fastapi_retry_http._strategies.chaos import ChaosInterceptor
from fastapi_retry_http.chaos import ALLOW_CHAOS_ENV, Chaos
from fastapi_retry_http.exceptions import ConfigurationError, InjectedFault
from fastapi_retry_http.otel import OpenTelemetry
from fastapi_retry_http.prometheus import PrometheusMetrics
from fastapi_retry_http.testing import chaos_for, override_transport
from tests.servers import Upstream
from tests.test_transport import Scripted

CHAOS = {"fault_rate": 0.3, "seed": 1}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("HTTP_CLIENTS"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def app_with(config: dict[str, object], registry: ClientRegistry) -> FastAPI:
    app = FastAPI(lifespan=clients_lifespan({"billing": config}, registry=registry))

    @app.post("/checkout")
    async def checkout(billing: Client = Depends(get_client("billing"))) -> dict[str, int]:  # noqa: B008
        return {"status": (await billing.post("charges")).status_code}

    return app


class TestFromSettings:
    def test_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(ALLOW_CHAOS_ENV, "1")
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__BASE_URL", "http://billing.internal/")
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__CHAOS__STATUS_RATE", "0.25")
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__CHAOS__STATUS", "502")
        settings = HttpClientsSettings()
        assert settings.http_clients["billing"].chaos == Chaos(status_rate=0.25, status=502)

    def test_from_the_environment_without_the_guard(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__BASE_URL", "http://billing.internal/")
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__CHAOS__FAULT_RATE", "0.25")
        with pytest.raises(ValidationError) as caught:
            HttpClientsSettings()
        message = str(caught.value)
        assert "http_clients.billing.chaos" in message
        assert f"set {ALLOW_CHAOS_ENV}=1 in the environment to allow it" in message

    @pytest.mark.parametrize(("field", "value"), [("FAULT_RATE", "1.5"), ("STATUS", "200"), ("LATENCY", "-1")])
    def test_bad_values_name_the_client_and_the_field(
        self, monkeypatch: pytest.MonkeyPatch, field: str, value: str
    ) -> None:
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__BASE_URL", "http://billing.internal/")
        monkeypatch.setenv(f"HTTP_CLIENTS__BILLING__CHAOS__{field}", value)
        with pytest.raises(ValidationError) as caught:
            HttpClientsSettings()
        message = str(caught.value)
        assert "http_clients.billing.chaos" in message
        assert f"Chaos.{field.lower()} " in message

    def test_bad_values_fail_the_lifespan_naming_the_client(self) -> None:
        with pytest.raises(
            ConfigurationError, match=r"Client 'billing' has invalid settings: chaos: .*Chaos\.latency_"
        ):
            clients_lifespan({"billing": {"base_url": "http://billing.internal/", "chaos": {"latency_rate": 2}}})

    def test_refused_at_startup_without_the_guard(self, upstream: Upstream) -> None:
        with pytest.raises(ConfigurationError) as caught:
            app_with({"base_url": upstream.url, "chaos": CHAOS}, ClientRegistry())
        message = str(caught.value)
        assert message.startswith("Client 'billing' has invalid settings: chaos: ")
        assert f"set {ALLOW_CHAOS_ENV}=1 in the environment to allow it" in message

    @pytest.mark.parametrize("value", ["0", "true", ""])
    def test_only_1_allows_it(self, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
        monkeypatch.setenv(ALLOW_CHAOS_ENV, value)
        with pytest.raises(ValidationError, match=ALLOW_CHAOS_ENV):
            ClientSettings(base_url="http://b/", chaos=Chaos(fault_rate=0.3))
        monkeypatch.setenv(ALLOW_CHAOS_ENV, " 1 ")
        assert ClientSettings(base_url="http://b/", chaos=Chaos(fault_rate=0.3)).chaos == Chaos(fault_rate=0.3)

    def test_allowed_it_starts_and_injects(self, monkeypatch: pytest.MonkeyPatch, upstream: Upstream) -> None:
        monkeypatch.setenv(ALLOW_CHAOS_ENV, "1")
        registry = ClientRegistry()
        app = app_with({"base_url": upstream.url, "chaos": {"status_rate": 1.0, "status": 500}}, registry)
        with TestClient(app) as http:
            assert http.post("/checkout").json() == {"status": 500}
            assert isinstance(registry["billing"].transport.strategies.by_option["chaos"], ChaosInterceptor)
        assert upstream.hits["/charges"] == 0

    def test_the_cli_check_refuses_it_too(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__BASE_URL", "http://billing.internal/")
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__CHAOS__FAULT_RATE", "0.1")
        assert main(["check"]) != 0
        assert ALLOW_CHAOS_ENV in capsys.readouterr().err
        monkeypatch.setenv(ALLOW_CHAOS_ENV, "1")
        assert main(["check"]) == 0
        shown = " ".join(capsys.readouterr().out.split())
        assert (
            "chaos ON: fault_rate=0.1, status_rate=0.0, status=503, latency_rate=0.0, latency=0.0, seed=None" in shown
        )


class TestChaosFor:
    def test_clients_built_in_the_block_get_it_and_later_ones_do_not(self, upstream: Upstream) -> None:
        registry = ClientRegistry()
        app = app_with({"base_url": upstream.url}, registry)
        with chaos_for(registry, billing=Chaos(status_rate=1.0, status=500)), TestClient(app) as http:
            assert http.post("/checkout").json() == {"status": 500}
        assert registry.option_overrides == {}
        with TestClient(app) as http:
            assert http.post("/checkout").json() == {"status": 200}
        assert upstream.hits["/charges"] == 1

    def test_a_running_client_gets_it_and_gets_its_own_back(self, upstream: Upstream) -> None:
        registry = ClientRegistry()
        app = app_with({"base_url": upstream.url}, registry)
        with TestClient(app) as http:
            transport = registry["billing"].transport
            with chaos_for(app, Billing=Chaos(status_rate=1.0, status=502)):
                assert http.post("/checkout").json() == {"status": 502}
                assert transport._sender.interceptors == (transport.strategies.by_option["chaos"],)
            assert http.post("/checkout").json() == {"status": 200}
            assert not transport._sender.interceptors
            assert transport.strategies.send == []
            assert "chaos" not in transport.strategies.by_option
        assert upstream.hits["/charges"] == 1

    def test_none_turns_off_the_settings_chaos_and_blocks_nest(
        self, monkeypatch: pytest.MonkeyPatch, upstream: Upstream
    ) -> None:
        monkeypatch.setenv(ALLOW_CHAOS_ENV, "1")
        registry = ClientRegistry()
        app = app_with({"base_url": upstream.url, "chaos": {"status_rate": 1.0, "status": 500}}, registry)
        with chaos_for(registry, billing=None), TestClient(app) as http:
            assert http.post("/checkout").json() == {"status": 200}
            with chaos_for(app, billing=Chaos(status_rate=1.0, status=504)):
                assert http.post("/checkout").json() == {"status": 504}
                with chaos_for(app, billing=None):
                    assert http.post("/checkout").json() == {"status": 200}
                assert http.post("/checkout").json() == {"status": 504}
            assert http.post("/checkout").json() == {"status": 200}
            assert registry.option_overrides == {"billing": {"chaos": None}}
        assert registry.option_overrides == {}
        with TestClient(app) as http:
            assert http.post("/checkout").json() == {"status": 500}  # its own chaos again

    def test_with_the_default_registry_and_an_override_transport(self) -> None:
        handler = Scripted(200)
        app = FastAPI(lifespan=clients_lifespan({"billing": {"base_url": "http://billing.internal/"}}))

        @app.get("/charge")
        async def charge(billing: Client = Depends(get_client("billing"))) -> int:  # noqa: B008
            try:
                return (await billing.get("charges", retry=RetryPolicy(attempts=1))).status_code
            except InjectedFault:
                return 0

        chaos = Chaos(fault_rate=0.5, seed=3)
        upstream = httpx.MockTransport(handler)
        with override_transport("billing", upstream), chaos_for(app, billing=chaos), TestClient(app) as http:
            answers = [http.get("/charge").json() for _ in range(100)]
        assert (answers.count(0), answers.count(200), handler.attempts) == (50, 50, 50)


@pytest.fixture
def exporter() -> Iterator[tuple[InMemorySpanExporter, TracerProvider]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter, provider
    provider.shutdown()


@pytest.mark.anyio
async def test_injected_attempts_carry_a_span_attribute_and_a_counter(
    exporter: tuple[InMemorySpanExporter, TracerProvider],
) -> None:
    spans, provider = exporter
    registry = CollectorRegistry()
    instruments: list[Instrument] = [OpenTelemetry(tracer_provider=provider), PrometheusMetrics(registry)]
    chaos = Chaos(status_rate=0.5, status=503, seed=4)
    transport = httpx.MockTransport(Scripted(200))
    async with Client(
        "http://upstream", name="billing", transport=transport, chaos=chaos, instrumentation=instruments
    ) as c:
        for _ in range(10):
            await c.get("/x")
    finished = spans.get_finished_spans()
    injected = [s for s in finished if (s.attributes or {}).get("fastapi_retry_http.injected")]
    assert {(s.attributes or {})["http.response.status_code"] for s in injected} == {503}
    assert all("fastapi_retry_http.injected" not in (s.attributes or {}) for s in finished if s not in injected)
    counted = sum(
        registry.get_sample_value("fastapi_retry_http_injected_total", {"client": "billing", "outcome": outcome}) or 0
        for outcome in ("retry", "returned")
    )
    assert counted == len(injected) > 0
