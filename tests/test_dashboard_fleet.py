"""
The operators' orders and the dashboard's labels with a store shared through a real
redis-server: two `RedisStore`s in one process behave as two processes (see test_redis.py).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from fastapi_retry_http import CircuitBreaker, Client, ClientRegistry, RetryPolicy
from fastapi_retry_http._dashboard.snapshot import snapshot
from fastapi_retry_http.redis import RedisStore
from tests.redis_server import RedisServer, redis_server_path
from tests.servers import Upstream

pytestmark = pytest.mark.anyio

BREAKER = CircuitBreaker(failure_ratio=0.5, minimum_throughput=4, window=30, break_duration=10)
ONCE = RetryPolicy(attempts=1)


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    executable = redis_server_path()
    if executable is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server); CI installs it")
    running = RedisServer(executable)
    running.start()
    yield running
    running.stop()


@pytest.fixture
async def two(server: RedisServer, upstream: Upstream) -> AsyncIterator[tuple[Client, Client]]:
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    async with (
        RedisStore(server.url, prefix=prefix) as a,
        RedisStore(server.url, prefix=prefix) as b,
        Client(upstream.url, name="billing", retry=ONCE, circuit_breaker=BREAKER, store=a) as one,
        Client(upstream.url, name="billing", retry=ONCE, circuit_breaker=BREAKER, store=b) as other,
    ):
        yield one, other


async def eventually(check: object, within: float = 1.0) -> None:
    started = time.monotonic()
    while not check():  # type: ignore[operator]
        assert time.monotonic() - started < within, "not within the time allowed"
        await asyncio.sleep(0.01)


def state(client: Client) -> str | None:
    return None if client.circuit is None else client.circuit.state


async def test_an_order_given_in_one_process_reaches_the_other_within_a_second(two: tuple[Client, Client]) -> None:
    one, other = two
    gate = one.transport.breaker
    assert gate is not None
    gate.force_open(10)
    await eventually(lambda: state(other) == "open")
    gate.force_close()
    await eventually(lambda: state(other) == "closed")


async def test_the_dashboard_labels_the_fleets_state(two: tuple[Client, Client], upstream: Upstream) -> None:
    one, _ = two
    await one.get("/ok")
    registry = ClientRegistry()
    registry.add(one)

    def scopes() -> dict[str, str]:
        shown = snapshot(registry, {}, time.time())["clients"][0]["strategies"]
        return {option: status["scope"] for option, status in shown.items()}

    # Fleet once a flush has brought the fleet's view (within one flush interval).
    await eventually(lambda: scopes() == {"circuit_breaker": "fleet", "retry_budget": "fleet"})
