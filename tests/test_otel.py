"""
OpenTelemetry: spans and the duration histogram read back from the SDK's in-memory exporter
and metric reader, against the loopback upstream on both backends.

No `from __future__ import annotations` here: FastAPI must evaluate the `Depends` in the
annotations of the routes defined below.
"""

import ast
import asyncio
import contextlib
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import fastapi_retry_http
from fastapi_retry_http import Client, ClientRegistry, clients_lifespan, get_client
from fastapi_retry_http.otel import DURATION_BUCKETS, OpenTelemetry, redacted_url, warn_if_httpx_instrumented
from tests.servers import Upstream
from tests.test_transport import Scripted


class Telemetry:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.instrument = OpenTelemetry(tracer_provider=self.tracer_provider, meter_provider=self.meter_provider)

    def spans(self, kind: SpanKind = SpanKind.CLIENT) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.kind == kind]

    def points(self) -> list[HistogramDataPoint]:
        data = self.reader.get_metrics_data()
        found: list[HistogramDataPoint] = []
        if data is None:  # nothing recorded yet
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                assert scope.scope.name == "fastapi_retry_http"
                for metric in scope.metrics:
                    assert (metric.name, metric.unit) == ("http.client.request.duration", "s")
                    found.extend(metric.data.data_points)  # type: ignore[arg-type]
        return found


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    telemetry = Telemetry()
    yield telemetry
    telemetry.tracer_provider.shutdown()
    telemetry.meter_provider.shutdown()


Billing = Annotated[Client, Depends(get_client("billing"))]


def traced_app(telemetry: Telemetry, upstream: Upstream) -> FastAPI:
    """An app whose requests run in a SERVER span (what opentelemetry-instrumentation-fastapi makes)."""
    tracer = telemetry.tracer_provider.get_tracer("server")
    configs = {"billing": {"base_url": upstream.url, "retry": {"jitter": False}}}
    app = FastAPI(lifespan=clients_lifespan(configs, registry=ClientRegistry(), instrumentation=[telemetry.instrument]))

    @app.middleware("http")
    async def server_span(request: Request, call_next: Any) -> Any:
        with tracer.start_as_current_span(f"{request.method} {request.url.path}", kind=SpanKind.SERVER):
            return await call_next(request)

    @app.get("/invoice")
    async def invoice(billing: Billing) -> int:
        return (await billing.get("flaky", params={"token": "secret"})).status_code

    return app


@pytest.mark.usefixtures("backend")
def test_a_retried_call_is_three_attempt_spans_under_the_request_span(telemetry: Telemetry, upstream: Upstream) -> None:
    upstream.script("/flaky", 503, 503, 200)
    with TestClient(traced_app(telemetry, upstream)) as test_client:
        assert test_client.get("/invoice").json() == 200

    (server,) = telemetry.spans(SpanKind.SERVER)
    attempts = telemetry.spans()
    assert [s.name for s in attempts] == ["GET", "GET", "GET"]
    assert server.context is not None
    for span in attempts:
        assert span.parent is not None
        assert (span.parent.span_id, span.context.trace_id) == (server.context.span_id, server.context.trace_id)
    base = {
        "http.request.method": "GET",
        "server.address": "127.0.0.1",
        "server.port": upstream.port,
        "url.full": f"{upstream.url}/flaky?token=REDACTED",
        "network.protocol.version": "1.1",
    }
    assert [dict(s.attributes or {}) for s in attempts] == [
        {**base, "http.response.status_code": 503, "error.type": "503"},
        {**base, "http.response.status_code": 503, "error.type": "503", "http.request.resend_count": 1},
        {**base, "http.response.status_code": 200, "http.request.resend_count": 2},
    ]
    assert [s.status.status_code for s in attempts] == [StatusCode.ERROR, StatusCode.ERROR, StatusCode.UNSET]

    # Each attempt carried its own span's traceparent: the upstream joins the same trace.
    sent = [headers["traceparent"].split("-")[:3] for headers, _ in upstream.seen["/flaky"]]
    assert sent == [["00", f"{s.context.trace_id:032x}", f"{s.context.span_id:016x}"] for s in attempts]

    points = {p.attributes["http.response.status_code"]: p for p in telemetry.points()}  # type: ignore[index]
    assert {code: p.count for code, p in points.items()} == {503: 2, 200: 1}
    assert all(list(p.explicit_bounds) == list(DURATION_BUCKETS) for p in points.values())
    assert dict(points[200].attributes or {}) == {
        "http.request.method": "GET",
        "server.address": "127.0.0.1",
        "server.port": upstream.port,
        "http.response.status_code": 200,
        "network.protocol.version": "1.1",
    }


@pytest.mark.anyio
async def test_an_error_is_named_by_its_class_and_each_attempt_without_a_parent_starts_a_trace(
    telemetry: Telemetry,
) -> None:
    handler = Scripted(httpx.ConnectError("refused"), 200)
    client = Client("http://upstream", transport=httpx.MockTransport(handler), instrumentation=[telemetry.instrument])
    async with client:
        assert (await client.get("/x")).status_code == 200
    first, second = telemetry.spans()[-2:]
    assert first.parent is None
    assert second.parent is None
    assert first.context.trace_id != second.context.trace_id
    # The package the error class comes from: `httpx`, or `httpx2` when it stands in for httpx.
    package = httpx.ConnectError.__module__.split(".")[0]
    assert dict(first.attributes or {})["error.type"] == f"{package}.ConnectError"
    assert first.status.status_code == StatusCode.ERROR
    assert dict(second.attributes or {})["server.port"] == 80


@pytest.mark.anyio
async def test_an_unknown_method_is_other(telemetry: Telemetry) -> None:
    client = Client(
        "https://upstream", transport=httpx.MockTransport(Scripted(200)), instrumentation=[telemetry.instrument]
    )
    async with client:
        await client.request("PURGE", "/x")
    (span,) = telemetry.spans()
    assert span.name == "HTTP"
    attributes = dict(span.attributes or {})
    assert (attributes["http.request.method"], attributes["http.request.method_original"]) == ("_OTHER", "PURGE")
    assert attributes["server.port"] == 443


@pytest.mark.anyio
async def test_a_cancelled_attempt_ends_its_span_unmarked_and_records_no_duration(telemetry: Telemetry) -> None:
    started = asyncio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("cancelled first")

    client = Client("http://upstream", transport=httpx.MockTransport(hang), instrumentation=[telemetry.instrument])
    async with client:
        call = asyncio.create_task(client.get("/x"))
        await started.wait()
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await call
    (span,) = telemetry.spans()
    assert span.status.status_code == StatusCode.UNSET
    assert "error.type" not in (span.attributes or {})
    assert telemetry.points() == []


def test_url_full_has_no_userinfo_and_no_query_values() -> None:
    url = httpx.URL("https://user:pw@h.example:8443/p/a?key=secret&key=again&x=")
    assert redacted_url(url) == "https://h.example:8443/p/a?key=REDACTED&key=REDACTED&x=REDACTED"
    assert redacted_url(httpx.URL("http://h/p")) == "http://h/p"


@pytest.mark.anyio
async def test_without_an_sdk_nothing_is_sent_and_nothing_breaks() -> None:
    handler = Scripted(200)
    client = Client("http://upstream", transport=httpx.MockTransport(handler), instrumentation=[OpenTelemetry()])
    async with client:
        assert (await client.get("/x")).status_code == 200
    assert "traceparent" not in handler.requests[0].headers


def test_httpx_instrumented_as_well_is_warned_about_once(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert warn_if_httpx_instrumented() is False
    original = httpx.AsyncHTTPTransport.handle_async_request

    async def wrapped(self: httpx.AsyncHTTPTransport, request: httpx.Request) -> httpx.Response:
        return await original(self, request)

    wrapped.__wrapped__ = original  # type: ignore[attr-defined]  # what wrapt's wrappers carry
    monkeypatch.setattr(httpx.AsyncHTTPTransport, "handle_async_request", wrapped)
    request = httpx.Request("GET", "http://upstream/x")
    for attempt in (1, 2):
        telemetry.instrument.start_attempt(request, attempt, "up").end(None, httpx.ConnectError("x"))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "record each attempt twice" in warnings[0]


def test_the_core_imports_without_the_extras() -> None:
    """
    Only `otel` and `prometheus` import the extras. (FastAPI itself imports some of
    `opentelemetry-api` nowadays: it is imported first, then forgotten and refused.)
    """
    script = """
import sys
import fastapi, fastapi.testclient

class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("opentelemetry", "prometheus_client"):
            raise ImportError(f"blocked: {name}")

sys.meta_path.insert(0, Blocked())
for loaded in [m for m in sys.modules if m.startswith("opentelemetry")]:
    del sys.modules[loaded]  # FastAPI keeps its references; any new import is refused
import fastapi_retry_http
from fastapi_retry_http import Client, clients_lifespan
for extra in ("otel", "prometheus"):
    try:
        __import__(f"fastapi_retry_http.{extra}")
    except ImportError as error:
        print(extra, error)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert [line.split(".")[0] for line in done.stdout.splitlines()] == [
        "otel blocked: opentelemetry",
        "prometheus blocked: prometheus_client",
    ]
    package = Path(fastapi_retry_http.__file__).parent
    for module in package.rglob("*.py"):
        if module.name in ("otel.py", "prometheus.py"):
            continue
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not [n for n in names if n.startswith(("opentelemetry", "prometheus_client"))], module


def test_spans_nest_under_the_current_span_of_the_caller(telemetry: Telemetry) -> None:
    tracer = telemetry.tracer_provider.get_tracer("test")
    request = httpx.Request("GET", "http://upstream/x")
    with tracer.start_as_current_span("caller") as caller:
        telemetry.instrument.start_attempt(request, 1, "up").end(httpx.Response(200), None)
    (span,) = telemetry.spans()
    assert span.parent is not None
    assert span.parent.span_id == caller.get_span_context().span_id
    assert request.headers["traceparent"].split("-")[2] == f"{span.context.span_id:016x}"
    assert trace.get_current_span() is trace.INVALID_SPAN
