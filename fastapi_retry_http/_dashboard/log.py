"""
`AttemptLog`: the instrument that remembers each client's recent attempts for the dashboard.

Per client: the last `size` attempts (a ring buffer of the events themselves, nothing copied),
counts per outcome in sixty one-second buckets, and the last breaker state changes. On the
request path it does one clock read, one append and one dict increment per attempt; the
sorting and formatting happen when the dashboard asks.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Final

from .._pipeline.events import AttemptEvent, CircuitEvent

__all__ = ["AttemptLog", "ClientLog"]

#: Attempts kept per client.
DEFAULT_SIZE: Final = 100
#: Breaker state changes kept per client.
CIRCUIT_EVENTS: Final = 20
#: Seconds the outcome counts cover.
WINDOW: Final = 60


class ClientLog:
    """One client's recent attempts, outcome counts and breaker changes."""

    __slots__ = ("_buckets", "_second", "attempts", "circuit")

    def __init__(self, size: int) -> None:
        #: (wall-clock time, event), oldest first.
        self.attempts: deque[tuple[float, AttemptEvent]] = deque(maxlen=size)
        #: (wall-clock time, event), oldest first.
        self.circuit: deque[tuple[float, CircuitEvent]] = deque(maxlen=CIRCUIT_EVENTS)
        self._buckets: list[dict[str, int]] = [{} for _ in range(WINDOW)]
        self._second = 0

    def add(self, now: float, event: AttemptEvent) -> None:
        """Keep `event`, seen at `now`, and count its outcome."""
        self.attempts.append((now, event))
        second = int(now)
        # Within the same second (the common case under load), no call to roll the buckets.
        bucket = self._buckets[second % WINDOW] if second == self._second else self._bucket(second)
        bucket[event.outcome] = bucket.get(event.outcome, 0) + 1

    def counts(self, now: float) -> dict[str, int]:
        """Attempts per outcome over the last minute."""
        self._bucket(int(now))
        totals: dict[str, int] = {}
        for bucket in self._buckets:
            for outcome, count in bucket.items():
                totals[outcome] = totals.get(outcome, 0) + count
        return totals

    def _bucket(self, second: int) -> dict[str, int]:
        # Empty the buckets time has passed over since the last attempt (at most all of them).
        if second > self._second:
            for stale in range(max(self._second + 1, second - WINDOW + 1), second + 1):
                self._buckets[stale % WINDOW] = {}
            self._second = second
        return self._buckets[min(second, self._second) % WINDOW]


class AttemptLog:
    """
    An instrument that keeps each client's recent attempts for the operators' dashboard.

    Give it to the clients, and the dashboard
    ([`clients_router`][fastapi_retry_http.dashboard.clients_router]) finds it there:

    ```python
    log = AttemptLog()
    app = FastAPI(lifespan=clients_lifespan(configs, instrumentation=[log]))
    app.include_router(clients_router(dependencies=[Depends(operators_only)]), prefix="/ops/clients")
    ```

    Per client it keeps the last `size` attempts (time, method, URL without query, status,
    outcome, duration, whether chaos injected it), the counts per outcome over the last
    minute, and the last breaker state changes. What it keeps is this process's own, even
    when a shared store shares the breaker and the budget.

    Args:
        size: Attempts kept per client.
        clock: Wall-clock seconds (`time.time`), for the times shown.
    """

    def __init__(self, size: int = DEFAULT_SIZE, *, clock: Callable[[], float] = time.time) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError("AttemptLog size must be a positive integer")
        self._size = size
        self._clock = clock
        self._clients: dict[str, ClientLog] = {}

    def on_attempt(self, event: AttemptEvent) -> None:
        """Keep `event` (called by the client after each attempt)."""
        try:
            log = self._clients[event.client]
        except KeyError:
            log = self._clients[event.client] = ClientLog(self._size)
        log.add(self._clock(), event)

    def on_circuit(self, event: CircuitEvent) -> None:
        """Keep a breaker state change."""
        log = self._clients.get(event.client)
        if log is None:
            log = self._clients[event.client] = ClientLog(self._size)
        log.circuit.append((self._clock(), event))

    def of(self, client: str) -> ClientLog | None:
        """What was kept for `client`, or `None` before its first attempt."""
        return self._clients.get(client)

    def now(self) -> float:
        """The log's wall clock now."""
        return self._clock()
