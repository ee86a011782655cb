"""
Prometheus metrics for every client (extra `[prometheus]`: `prometheus-client`).

```python
from fastapi_retry_http.prometheus import PrometheusMetrics

app = FastAPI(lifespan=clients_lifespan(settings.http_clients, instrumentation=[PrometheusMetrics()]))
```

| metric | type | labels |
|---|---|---|
| `fastapi_retry_http_attempts_total` | counter | `client`, `method`, `outcome` |
| `fastapi_retry_http_retries_total` | counter | `client`, `reason` (status code or error class) |
| `fastapi_retry_http_gave_up_total` | counter | `client`, `reason` (why retries stopped) |
| `fastapi_retry_http_injected_total` | counter, attempts chaos acted on (a drill) | `client`, `outcome` |
| `fastapi_retry_http_request_duration_seconds` | histogram, per call (waits included) | `client`, `method` |
| `fastapi_retry_http_circuit_open` | gauge, 0 or 1 | `client` |

Labels are bounded: the client's configured name, never a URL, path or query; a method
outside the standard ones is `_OTHER`. Works in `prometheus_client`'s multiprocess mode
(`PROMETHEUS_MULTIPROC_DIR`, several uvicorn or gunicorn workers): the gauge is the maximum
over live workers (`multiprocess_mode="livemax"`).
"""

from __future__ import annotations

from typing import Final

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from ._pipeline.events import AttemptEvent, CircuitEvent

__all__ = ["DURATION_BUCKETS", "PrometheusMetrics"]

#: Buckets of the call duration: OpenTelemetry's advised HTTP buckets, plus 30 s and 60 s
#: for calls that retry.
DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 30, 60)
#: Methods used as labels as they are; any other is `_OTHER`.
KNOWN_METHODS: Final = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"})
#: The outcomes that end a call (`"retry"`, `"hedge_lost"` and `"cancelled"` do not).
_FINAL: Final = frozenset({"success", "returned", "failed", "refused"})


class PrometheusMetrics:
    """
    An instrument that counts attempts, retries and give-ups, times calls, and shows open
    circuits, in `prometheus_client` metrics.

    Create one per process and give it to every client (`clients_lifespan(...,
    instrumentation=[metrics])`): a second one on the same registry would register the same
    names again, which `prometheus_client` refuses.

    Args:
        registry: Where the metrics are registered; `prometheus_client.REGISTRY` if `None`.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry if registry is not None else REGISTRY
        counters = {
            "attempts": ("Attempts sent, by how each ended.", ("client", "method", "outcome")),
            "retries": ("Retries, by what the attempt before gave (status code or error class).", ("client", "reason")),
            "gave_up": (
                "Calls that stopped retrying a retryable failure, or were refused before any attempt, by why.",
                ("client", "reason"),
            ),
            "injected": ("Attempts chaos acted on (a drill), by how each ended.", ("client", "outcome")),
        }
        self.attempts, self.retries, self.gave_up, self.injected = (
            Counter(f"fastapi_retry_http_{name}", doc, labels, registry=registry)
            for name, (doc, labels) in counters.items()
        )
        self.duration = Histogram(
            "fastapi_retry_http_request_duration_seconds",
            "Wall time of calls, from the call to its answer, waits and hedges included.",
            ("client", "method"),
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.circuit_open = Gauge(
            "fastapi_retry_http_circuit_open",
            "1 while the client's circuit breaker refuses attempts (open or half-open), else 0.",
            ("client",),
            registry=registry,
            multiprocess_mode="livemax",
        )

    def on_attempt(self, event: AttemptEvent) -> None:
        """Count the attempt; count a retry or a give-up; time the call once it ends."""
        method = event.method if event.method in KNOWN_METHODS else "_OTHER"
        self.attempts.labels(event.client, method, event.outcome).inc()
        if event.injected:
            self.injected.labels(event.client, event.outcome).inc()
        if event.outcome == "retry":
            reason = str(event.status_code) if event.error is None else event.error
            self.retries.labels(event.client, reason).inc()
        elif event.outcome in _FINAL:
            if event.reason is not None:
                self.gave_up.labels(event.client, event.reason).inc()
            if event.call_duration is not None:
                self.duration.labels(event.client, method).observe(event.call_duration)

    def on_circuit(self, event: CircuitEvent) -> None:
        """Set the client's gauge: 1 while open or half-open, 0 once closed."""
        self.circuit_open.labels(event.client).set(0 if event.state == "closed" else 1)
