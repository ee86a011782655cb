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

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import httpx

from . import _clock
from ._fastapi.lifespan import STATE_KEY
from ._fastapi.registry import ClientRegistry, clients, normalise_name
from ._pipeline.transport import RetryTransport
from ._strategies.chaos import ChaosInterceptor
from .chaos import Chaos

__all__ = ["chaos_for", "no_sleep", "override_transport", "set_no_sleep"]


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


@contextmanager
def chaos_for(app: object = None, /, **chaos: Chaos | None) -> Iterator[None]:
    """
    Turn chaos on for named clients of an app under test, inside the block.

    Each keyword names a client and gives its [`Chaos`][fastapi_retry_http.chaos.Chaos]
    (`None` turns off chaos its settings have). Like
    [`override_transport`][fastapi_retry_http.testing.override_transport], it applies to the
    clients the lifespan builds inside the block and to those already running, and is undone
    on exit; `HTTP_CLIENTS_ALLOW_CHAOS` is not needed.

    ```python
    def test_checkout_survives_billing_failing(app):
        with chaos_for(app, billing=Chaos(fault_rate=0.3, seed=1)), TestClient(app) as http:
            assert http.post("/checkout").status_code == 200
    ```

    Args:
        app: The app (its running clients, or the default registry before it starts), a
            [`ClientRegistry`][fastapi_retry_http.ClientRegistry], or `None` for the default one.
        chaos: Client name to its chaos.
    """
    registry = _registry_of(app)
    with ExitStack() as undo:
        for name, config in chaos.items():
            key = normalise_name(name)
            overrides = registry.option_overrides
            previous = overrides.get(key)
            overrides[key] = {**(previous or {}), "chaos": config}
            undo.callback(_restore, overrides, key, previous)
            running = registry.get(key)
            if running is not None:
                undo.callback(_swap_chaos(running.transport, config))
        yield


def _registry_of(app: object) -> ClientRegistry:
    if isinstance(app, ClientRegistry):
        return app
    running = getattr(getattr(app, "state", None), STATE_KEY, None)
    return running if isinstance(running, ClientRegistry) else clients


def _restore(overrides: dict[str, dict[str, object]], key: str, previous: dict[str, object] | None) -> None:
    if previous is None:
        del overrides[key]
    else:
        overrides[key] = previous


def _swap_chaos(transport: RetryTransport, config: Chaos | None) -> Callable[[], None]:
    """Give a running client `config` as its chaos; returns what puts the previous one back."""
    sender, strategies = transport._sender, transport.strategies
    interceptors, send, by_option = sender.interceptors, list(strategies.send), dict(strategies.by_option)
    current = by_option.get("chaos")
    kept = [strategy for strategy in send if strategy is not current]
    if config is None:
        strategies.by_option.pop("chaos", None)
    else:
        # Built as the client would have built it: its name, its clock, its (no-)sleep.
        added = ChaosInterceptor(config, transport.name, transport._clock, transport._wait)
        strategies.by_option["chaos"] = added
        kept.append(added)
    strategies.send[:] = kept
    sender.interceptors = tuple(kept)

    def restore() -> None:
        strategies.send[:] = send
        strategies.by_option.clear()
        strategies.by_option.update(by_option)
        sender.interceptors = interceptors

    return restore
