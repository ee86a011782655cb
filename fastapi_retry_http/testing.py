"""
Helpers for testing code that uses fastapi-retry-http.

Retries stay in play in tests (that is what you want to test), but nobody should wait for
real backoff. [`no_sleep`][fastapi_retry_http.testing.no_sleep] turns every backoff wait into
a recorded no-op:

```python
from fastapi_retry_http.testing import no_sleep

async def test_retries_then_succeeds():
    with no_sleep() as waits:
        response = await client.get("/flaky")
    assert response.status_code == 200
    assert len(waits) == 2
```
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from . import _clock
from ._fastapi.registry import ClientRegistry, clients, normalise_name

__all__ = ["no_sleep", "override_transport", "set_no_sleep"]


@contextmanager
def no_sleep() -> Iterator[list[float]]:
    """
    Skip every backoff wait inside the block, and record how long each would have been.

    Time moves on virtually: a skipped wait still counts against the retry policy's
    `deadline`, so deadline rules behave as they would for real. The previous mode is
    restored on exit, so blocks nest.

    Yields:
        The list the skipped waits are appended to, in seconds, in order.
    """
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)
        _clock.skipped += seconds

    previous = _clock.sleep
    _clock.sleep = record
    try:
        yield waits
    finally:
        _clock.sleep = previous


def set_no_sleep(enabled: bool) -> None:
    """
    Turn the no-sleep mode on or off for the whole process, for example in a `conftest.py`.

    Prefer [`no_sleep`][fastapi_retry_http.testing.no_sleep] where a block will do: it also
    records the waits and restores the previous mode.
    """

    async def skip(seconds: float) -> None:
        _clock.skipped += seconds

    _clock.sleep = skip if enabled else None


@contextmanager
def override_transport(
    name: str, transport: httpx.AsyncBaseTransport, *, registry: ClientRegistry = clients
) -> Iterator[None]:
    """
    Send the requests of client `name` to `transport` (an `httpx.MockTransport`, say).

    Only the network is replaced: the client keeps its base URL, headers and retry policy, so
    your test sees the retries your production code would make. It applies to the client
    the lifespan builds inside the block, or to the one already running.

    ```python
    def test_invoice_retries(app):
        upstream = httpx.MockTransport(lambda request: httpx.Response(200, json={"id": 1}))
        with override_transport("billing", upstream), TestClient(app) as client:
            assert client.get("/invoices/1").json() == {"id": 1}
    ```
    """
    key = normalise_name(name)
    overrides = registry.transport_overrides
    previous = overrides.get(key)
    overrides[key] = transport
    running = registry.get(key)
    original = running.transport.inner if running is not None else None
    if running is not None:
        running.transport.inner = transport
    try:
        yield
    finally:
        if previous is None:
            del overrides[key]
        else:
            overrides[key] = previous
        if running is not None and original is not None:
            running.transport.inner = original
