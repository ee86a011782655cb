"""
Draw docs/observability-trace.png from real spans: `uv run --group bench python -m bench.trace_picture`.

A FastAPI route (its request in a SERVER span, as opentelemetry-instrumentation-fastapi makes
it) calls a client whose upstream answers 503, 503, then 200, each after 30 ms. The spans come
from the SDK's in-memory exporter; the picture is a timeline of them, waits included.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from fastapi_retry_http import ClientRegistry, RetryPolicy, clients_lifespan
from fastapi_retry_http.otel import OpenTelemetry
from fastapi_retry_http.testing import override_transport

OUT = Path(__file__).resolve().parent.parent / "docs" / "observability-trace.png"


def capture() -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    statuses = iter([503, 503, 200])

    async def upstream(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.03)
        return httpx.Response(next(statuses), content=b"{}")

    registry = ClientRegistry()
    configs = {"billing": {"base_url": "https://billing.internal", "retry": RetryPolicy(jitter=False)}}
    app = FastAPI(lifespan=clients_lifespan(configs, registry=registry, instrumentation=[OpenTelemetry(provider)]))
    tracer = provider.get_tracer("server")

    @app.middleware("http")
    async def server_span(request: Request, call_next: Any) -> Any:
        with tracer.start_as_current_span(f"{request.method} {request.url.path}", kind=SpanKind.SERVER):
            return await call_next(request)

    @app.get("/invoices/{number}")
    async def invoice(number: int) -> int:
        return (await registry["billing"].get(f"invoices/{number}")).status_code

    with override_transport("billing", httpx.MockTransport(upstream), registry=registry), TestClient(app) as client:
        assert client.get("/invoices/7").json() == 200
    return sorted(exporter.get_finished_spans(), key=lambda s: s.start_time or 0)


def draw(spans: list[ReadableSpan]) -> None:
    start = min(s.start_time or 0 for s in spans)
    fig, ax = plt.subplots(figsize=(9, 2.6), dpi=110)
    for row, span in enumerate(spans):
        left = ((span.start_time or 0) - start) / 1e6
        width = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
        attributes = dict(span.attributes or {})
        if span.kind == SpanKind.SERVER:
            label, color = f"{span.name}  (FastAPI request, SERVER)", "#4c72b0"
        else:
            status = attributes.get("http.response.status_code")
            resend = attributes.get("http.request.resend_count")
            label = f"{span.name} {status}" + (f"  resend_count={resend}" if resend else "")
            color = "#c44e52" if span.status.status_code == StatusCode.ERROR else "#55a868"
        ax.barh(row, width, left=left, color=color, height=0.6)
        ax.text(left + 2, row, label, va="center", ha="left", fontsize=8, color="black")
    ax.set_yticks(range(len(spans)), ["request span", *[f"attempt {i}" for i in range(1, len(spans))]])
    ax.invert_yaxis()
    ax.set_xlabel("ms since the request began (gaps between attempts: the backoff waits)")
    ax.set_title("One retried call: a FastAPI request span and three CLIENT attempt spans, one trace", fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(OUT)
    trace_id = spans[0].get_span_context().trace_id  # type: ignore[union-attr]
    print(f"wrote {OUT.relative_to(OUT.parent.parent)} from {len(spans)} spans of trace {trace_id:032x}")


if __name__ == "__main__":
    draw(capture())
