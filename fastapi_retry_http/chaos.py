"""
Chaos: inject faults, bad statuses and latency into a client, to see your service survive them.

```python
from fastapi_retry_http import Client
from fastapi_retry_http.chaos import Chaos

billing = Client("https://billing.internal/api/", chaos=Chaos(fault_rate=0.3, seed=1))
```

Chaos stands last in the pipeline, inside the attempt, after every gate: the retry rules, the
circuit breaker, the retry budget and the instruments see an injected outcome exactly as they
would see the upstream's. An injected fault
([`InjectedFault`][fastapi_retry_http.exceptions.InjectedFault], an `httpx.ConnectError`) and an
injected status send nothing; injected latency delays the attempt, which is then sent for real,
and is cut by the attempt timeout and the deadline like real latency.

The shares are exact, not just likely: attempts are drawn from shuffled decks of 100 (a
seeded generator per client: the same seed gives the same sequence), so each injected share
is within 0.01 of its rate from the first 100 attempts on, and closer with every hundred.

Every attempt chaos touched is marked, so a drill does not page anyone:
`AttemptEvent.injected`, the OpenTelemetry span attribute `fastapi_retry_http.injected`, the
Prometheus counter `fastapi_retry_http_injected_total`, and on the request
`request.extensions["fastapi_retry_http.injected"]` (attempt number to `"fault"`, `"status"`
or `"latency"`); an injected response also carries `response.extensions[INJECTED_EXTENSION]`.

Off (`chaos=None`, the default), nothing is built and an attempt pays nothing for it. From
settings (`ClientSettings.chaos`), a client with chaos is refused at startup unless the
environment has `HTTP_CLIENTS_ALLOW_CHAOS=1`, so a stray variable cannot break production.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ._pipeline.checks import first_problem, is_ratio, is_seconds
from ._pipeline.send import INJECTED_EXTENSION

__all__ = ["ALLOW_CHAOS_ENV", "INJECTED_EXTENSION", "Chaos"]

#: The environment variable that must be `1` for chaos configured in settings to start.
ALLOW_CHAOS_ENV: Final = "HTTP_CLIENTS_ALLOW_CHAOS"


@dataclass(frozen=True, slots=True)
class Chaos:
    """
    What to inject into a client's attempts, and how often.

    Off unless given (`Client(chaos=Chaos(...))`, `ClientSettings.chaos`, or in tests
    [`chaos_for`][fastapi_retry_http.testing.chaos_for]). Rates are shares of attempts
    (first attempts, retries and hedges alike). A fault and a status never fall on the same
    attempt; latency is drawn apart and comes first, so a slow attempt may then fail too.

    Attributes:
        fault_rate: Share of attempts that raise
            [`InjectedFault`][fastapi_retry_http.exceptions.InjectedFault] without sending
            anything (retried like a refused connection, whatever the method).
        status_rate: Share of attempts answered with `status` without sending anything.
            `fault_rate + status_rate` is at most 1.
        status: The injected status, 400 to 599 (503 by default).
        latency_rate: Share of attempts delayed by `latency` before they are sent.
        latency: Seconds of injected latency.
        seed: Seeds the client's generator: the same seed, the same sequence of injections.
            `None` (the default) draws a different sequence each time.
    """

    fault_rate: float = 0.0
    status_rate: float = 0.0
    status: int = 503
    latency_rate: float = 0.0
    latency: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        rate = "must be between 0 and 1"
        problem = first_problem(
            [
                ("fault_rate", is_ratio(self.fault_rate), rate),
                ("status_rate", is_ratio(self.status_rate), rate),
                ("status_rate", self.fault_rate + self.status_rate <= 1, "plus fault_rate must not exceed 1"),
                ("status", _is_error_status(self.status), "must be an error status, 400 to 599"),
                ("latency_rate", is_ratio(self.latency_rate), rate),
                ("latency", is_seconds(self.latency, zero=True), "must be a finite number of seconds, zero or more"),
                ("seed", self.seed is None or _is_integer(self.seed), "must be an integer, or None"),
            ]
        )
        if problem is not None:
            raise ValueError(f"Chaos.{problem}")


def _is_error_status(value: object) -> bool:
    return _is_integer(value) and 400 <= value <= 599  # type: ignore[operator]


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
