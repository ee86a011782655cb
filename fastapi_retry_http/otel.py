"""
OpenTelemetry traces and metrics for every attempt (extra `[otel]`: `opentelemetry-api` only).

```python
from fastapi_retry_http.otel import OpenTelemetry

app = FastAPI(lifespan=clients_lifespan(settings.http_clients, instrumentation=[OpenTelemetry()]))
```

Each attempt is one CLIENT span, named by its method, with the stable HTTP client semantic
conventions; it is a child of the span current when the call was made (the FastAPI request's
span, with `opentelemetry-instrumentation-fastapi`), and its `traceparent` goes out on that
attempt's request, so the upstream's spans join the same trace. Each attempt also records
`http.client.request.duration` (seconds, the advised buckets) with the same attributes.

Without an SDK configured, the API's no-op tracer and meter make all of this next to free.

With `opentelemetry-instrumentation-httpx` on too, a client on the `httpx` backend would be
counted twice (that instrumentation wraps httpx's own transport, and sees every attempt):
`OpenTelemetry` logs a warning once when it finds httpx's transport wrapped. The default
`aiohttp` backend is not seen by it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from importlib.metadata import version
from typing import Final

import httpx
from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from ._pipeline.events import AttemptEvent
from ._pipeline.send import INJECTED_EXTENSION
from ._safety.redact import redacted_query, url_without_query

__all__ = ["DURATION_BUCKETS", "KNOWN_METHODS", "OpenTelemetry"]

logger: Final = logging.getLogger("fastapi_retry_http")

#: The buckets the semantic conventions advise for `http.client.request.duration`.
DURATION_BUCKETS: Final[Sequence[float]] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1,
    2.5,
    5,
    7.5,
    10,
)
#: Methods named as they are; any other is `_OTHER` (the semantic conventions' rule).
KNOWN_METHODS: Final = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"})
#: What a query value is replaced by in `url.full`.
REDACTED: Final = "REDACTED"
_SCHEMA_URL: Final = "https://opentelemetry.io/schemas/1.26.0"
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


class OpenTelemetry:
    """
    An instrument that makes one CLIENT span per attempt and records its duration.

    Span attributes: `http.request.method`, `server.address`, `server.port`, `url.full`
    (query values replaced by `REDACTED`, a bare token whole; no userinfo), `http.response.status_code`,
    `error.type` (the error's class, or the status code from 400 up),
    `network.protocol.version`, and `http.request.resend_count` on attempts after the first;
    `fastapi_retry_http.injected` (`true`, on the duration too) when chaos acted on the attempt
    ([`Chaos`][fastapi_retry_http.chaos.Chaos]), so a drill can be told from an outage.
    A span ends when its attempt ends: after the body is read, or at the headers for
    `Client.stream()`. A cancelled attempt's span ends unmarked (a caller going away is not
    an error) and records no duration.

    Args:
        tracer_provider: The provider of the tracer; the global one if `None`.
        meter_provider: The provider of the meter; the global one if `None`.
    """

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        own = version("fastapi-retry-http")
        self._tracer = trace.get_tracer(
            "fastapi_retry_http", own, tracer_provider=tracer_provider, schema_url=_SCHEMA_URL
        )
        meter = metrics.get_meter("fastapi_retry_http", own, meter_provider=meter_provider, schema_url=_SCHEMA_URL)
        self._duration = meter.create_histogram(
            "http.client.request.duration",
            unit="s",
            description="Duration of HTTP client requests.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._checked = False

    def start_attempt(self, request: httpx.Request, attempt: int, client: str) -> _AttemptSpan:
        """Start the attempt's span, a child of the current one, and set its `traceparent` on `request`."""
        if not self._checked:
            self._checked = True
            warn_if_httpx_instrumented()
        method = request.method if request.method in KNOWN_METHODS else "_OTHER"
        url = request.url
        attributes: dict[str, AttributeValue] = {
            "http.request.method": method,
            "server.address": url.host,
            "server.port": url.port or _DEFAULT_PORTS.get(url.scheme, 0),
        }
        span_attributes: dict[str, AttributeValue] = {**attributes, "url.full": redacted_url(url)}
        if method == "_OTHER":
            span_attributes["http.request.method_original"] = request.method
        if attempt > 1:
            span_attributes["http.request.resend_count"] = attempt - 1
        span = self._tracer.start_span(
            "HTTP" if method == "_OTHER" else method, kind=SpanKind.CLIENT, attributes=span_attributes
        )
        # Set, not added: the same request object goes out again on the next attempt.
        propagate.inject(request.headers, context=trace.set_span_in_context(span))
        return _AttemptSpan(span, attributes, self._duration, request, attempt)

    def on_attempt(self, event: AttemptEvent) -> None:
        """Nothing more to do: the attempt's span ended with it."""


class _AttemptSpan:
    __slots__ = ("_attempt", "_attributes", "_duration", "_request", "_span", "_started")

    def __init__(
        self,
        span: trace.Span,
        attributes: dict[str, AttributeValue],
        duration: metrics.Histogram,
        request: httpx.Request,
        attempt: int,
    ) -> None:
        self._span = span
        self._attributes = attributes
        self._duration = duration
        self._request = request
        self._attempt = attempt
        self._started = time.perf_counter()

    def end(self, response: httpx.Response | None, error: BaseException | None) -> None:
        seconds = time.perf_counter() - self._started
        span = self._span
        ended: dict[str, AttributeValue] = {}
        if response is not None:
            ended["http.response.status_code"] = response.status_code
            protocol = response.extensions.get("http_version", b"")
            if protocol.startswith(b"HTTP/"):
                ended["network.protocol.version"] = protocol[5:].decode("ascii")
            if response.status_code >= 400:
                ended["error.type"] = str(response.status_code)
        elif error is not None and not _is_cancellation(error):
            kind = type(error)
            ended["error.type"] = f"{kind.__module__}.{kind.__qualname__}"
        if self._attempt in self._request.extensions.get(INJECTED_EXTENSION, ()):
            ended["fastapi_retry_http.injected"] = True
        span.set_attributes(ended)
        if "error.type" in ended:
            span.set_status(Status(StatusCode.ERROR, str(ended["error.type"])))
        span.end()
        if error is None or not _is_cancellation(error):
            self._duration.record(seconds, {**self._attributes, **ended})


def _is_cancellation(error: BaseException) -> bool:
    return not isinstance(error, Exception)


def redacted_url(url: httpx.URL) -> str:
    """`url` for `url.full`: no userinfo, no fragment, every query value replaced by `REDACTED` (a bare token whole)."""
    where, query = url_without_query(url), redacted_query(url, REDACTED)
    return f"{where}?{query}" if query else where


def warn_if_httpx_instrumented() -> bool:
    """Warn once when `opentelemetry-instrumentation-httpx` wraps httpx's transport: attempts would show twice."""
    wrapped = hasattr(httpx.AsyncHTTPTransport.handle_async_request, "__wrapped__")
    if wrapped:
        logger.warning(
            "httpx's transport is instrumented (opentelemetry-instrumentation-httpx) as well as given the "
            "OpenTelemetry instrument: clients on the httpx backend record each attempt twice. Use one of the two "
            "(the default aiohttp backend is not seen by the httpx instrumentation)."
        )
    return wrapped
