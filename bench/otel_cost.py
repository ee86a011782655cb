"""
What the instruments cost per request, in-process: `uv run python -m bench.otel_cost`.

One `Client` per row, all on `httpx.MockTransport` (no network: what is left is the client's
own work), the same GET answered 200 at once. Rows run interleaved, several rounds; each
row's best and median round (µs/request) are printed, with the difference to the row without
instruments. The best round is the steadier figure on a busy machine: noise only adds time.

- `none`: no instrument (the path the seam must leave free).
- `OpenTelemetry (API only)`: the instrument with no SDK installed (no-op tracer and meter).
- `OpenTelemetry (SDK)`: an SDK `TracerProvider` (batch processor, an exporter that drops)
  and `MeterProvider` (spans and histogram points are really built and aggregated).
- `PrometheusMetrics`: a fresh `CollectorRegistry`.
- `a no-op instrument`: what any instrument costs the pipeline (events built, durations timed).
- `AttemptLog (dashboard)`: the operators' dashboard's ring buffer (`fastapi_retry_http.dashboard`).

`--quick` runs fewer requests and rounds, to check that it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable, Sequence

import httpx
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry

from fastapi_retry_http import Client
from fastapi_retry_http._pipeline.events import Instrument
from fastapi_retry_http.dashboard import AttemptLog
from fastapi_retry_http.otel import OpenTelemetry
from fastapi_retry_http.prometheus import PrometheusMetrics


class Dropping(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class NoOp:
    def on_attempt(self, event: object) -> None:
        pass


def sdk_instrument() -> OpenTelemetry:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(Dropping()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    return OpenTelemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)


ROWS: dict[str, Callable[[], list[Instrument]]] = {
    "none": list,
    "OpenTelemetry (API only)": lambda: [OpenTelemetry()],
    "OpenTelemetry (SDK)": lambda: [sdk_instrument()],
    "PrometheusMetrics": lambda: [PrometheusMetrics(CollectorRegistry())],
    "a no-op instrument": lambda: [NoOp()],
    "AttemptLog (dashboard)": lambda: [AttemptLog()],
}


async def per_request(client: Client, requests: int) -> float:
    """µs per request over `requests` sequential GETs."""
    started = time.perf_counter()
    for _ in range(requests):
        await client.get("/items?page=2")
    return (time.perf_counter() - started) / requests * 1e6


async def main(requests: int, rounds: int) -> None:
    ok = httpx.Response(200, content=b"ok")
    clients = {
        name: Client(
            "http://upstream",
            name="bench",
            transport=httpx.MockTransport(lambda request: ok),
            instrumentation=make(),
        )
        for name, make in ROWS.items()
    }
    for client in clients.values():
        await per_request(client, requests // 10)  # warm up
    results: dict[str, list[float]] = {name: [] for name in clients}
    for _ in range(rounds):
        for name, client in clients.items():
            results[name].append(await per_request(client, requests))
    for client in clients.values():
        await client.aclose()
    best_base, median_base = min(results["none"]), statistics.median(results["none"])
    print(f"{requests} requests x {rounds} rounds, µs/request (MockTransport, in-process)")
    print(f"{'instrument':<28}{'best':>8}{'extra':>8}{'median':>10}{'extra':>8}")
    for name, samples in results.items():
        best, median = min(samples), statistics.median(samples)
        print(f"{name:<28}{best:>8.1f}{best - best_base:>+8.1f}{median:>10.1f}{median - median_base:>+8.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--quick", action="store_true", help="500 requests x 5 rounds")
    args = parser.parse_args()
    asyncio.run(main(500, 5) if args.quick else main(args.requests, args.rounds))
