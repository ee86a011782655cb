"""
The rate limit shared through a real redis-server (tests/redis_server.py): two stores in one
process behave as two processes. Slots are leased in batches on Redis's clock; the fleet's
slots never crowd a window; the server's word reaches the other process; with Redis down each
keeps to its share, nothing fails, one warning per outage. Waits are recorded, not slept.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as redis_asyncio

from fastapi_retry_http import RateLimit, RetryPolicy, RetryTransport, _clock
from fastapi_retry_http._stores.fleet_quota import FleetLimiter
from fastapi_retry_http.exceptions import RateLimitedError
from fastapi_retry_http.redis import RedisStore
from tests.redis_server import RedisServer, redis_server_path
from tests.servers import Reply, Upstream
from tests.test_rate_limit_model import most_in_any_window

pytestmark = pytest.mark.anyio

ONCE = RetryPolicy(attempts=1)


@pytest.fixture
async def stores(redis_server: RedisServer) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    # A generous timeout: on a loaded CI machine a lease may take more than the default 50 ms.
    async with (
        RedisStore(redis_server.url, prefix=prefix, timeout=1.0) as a,
        RedisStore(redis_server.url, prefix=prefix, timeout=1.0) as b,
    ):
        yield a, b


class Starts:
    """A sleep that records when each attempt would start (real clock + the wait), never sleeps."""

    def __init__(self) -> None:
        self.at: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.at.append(time.monotonic() + seconds)
        await asyncio.sleep(0)


def client_for(upstream: Upstream, store: RedisStore, limit: RateLimit, starts: Starts) -> httpx.AsyncClient:
    transport = RetryTransport(
        httpx.AsyncHTTPTransport(), ONCE, name="partner", store=store, rate_limit=limit, sleep=starts.sleep
    )
    return httpx.AsyncClient(base_url=upstream.url, transport=transport)


def limiter(client: httpx.AsyncClient) -> FleetLimiter:
    transport = client._transport
    assert isinstance(transport, RetryTransport)
    found = transport.strategies.by_option["rate_limit"].limiter
    assert isinstance(found, FleetLimiter)
    return found


def record_slots(fleet: FleetLimiter, slots: list[float]) -> None:
    """Keep every slot `fleet` hands out (on this process's clock)."""
    take = fleet.take

    def taking(now: float, latest: float) -> object:
        slot = take(now, latest)
        if isinstance(slot, float):
            slots.append(slot)
        return slot

    fleet.take = taking  # type: ignore[method-assign,assignment]


async def test_two_processes_share_one_quota_with_few_round_trips(
    stores: tuple[RedisStore, RedisStore], upstream: Upstream
) -> None:
    starts, slots = Starts(), list[float]()
    limit = RateLimit(rate=50, per=1, max_wait=5)
    async with client_for(upstream, stores[0], limit, starts) as a, client_for(upstream, stores[1], limit, starts) as b:
        record_slots(limiter(a), slots)
        record_slots(limiter(b), slots)
        for _ in range(3):  # demand builds up: batches grow
            await asyncio.gather(*(c.get("/f") for c in (a, b) for _ in range(20)))
        trips = limiter(a).round_trips + limiter(b).round_trips
        assert limiter(a).processes == 2
        placed = [limiter(c)._offset for c in (a, b)]
    assert upstream.hits["/f"] == 120
    # 120 slots of one fleet-wide schedule, 20 ms apart: they span about 2.4 s (never less; a
    # little more when slots of a batch go unused, such as the last batch of each process).
    ordered = sorted(slots)
    assert len(ordered) == 120
    assert 2.3 <= ordered[-1] - ordered[0] <= 3.2
    # No second holds more than the rate, give or take what each process's placement of Redis's
    # slots on its own clock may be off by: half its quickest round trip (on a quiet machine a
    # fraction of a millisecond: not one slot), at each edge of the window.
    error = max(offset[0] for offset in placed if offset is not None) / 2
    assert most_in_any_window(ordered, 1.0) <= 50 + 2 * math.ceil(error / 0.02)
    assert trips < 120 / 3


async def test_the_servers_pause_reaches_the_other_process(
    stores: tuple[RedisStore, RedisStore], upstream: Upstream
) -> None:
    starts = Starts()
    upstream.script("/p", Reply(status=429, headers={"Retry-After": "5"}))
    limit = RateLimit(rate=100, max_wait=1)
    async with client_for(upstream, stores[0], limit, starts) as a, client_for(upstream, stores[1], limit, starts) as b:
        assert (await a.get("/p")).status_code == 429
        for _ in range(100):  # the pause is published in the background, at once
            if limiter(a)._lease is None:
                break
            await asyncio.sleep(0.01)
        with pytest.raises(RateLimitedError) as refused:
            await b.get("/p")
    assert refused.value.retry_after == pytest.approx(5, abs=0.2)
    assert upstream.hits["/p"] == 1


async def test_every_key_expires(
    stores: tuple[RedisStore, RedisStore], upstream: Upstream, redis_server: RedisServer
) -> None:
    starts = Starts()
    async with client_for(upstream, stores[0], RateLimit(rate=10), starts) as a:
        await a.get("/k")
    connection = redis_asyncio.Redis.from_url(redis_server.url)
    try:
        keys = await connection.keys(f"{stores[0].prefix}:*quota*")
        assert len(keys) == 2
        for key in keys:
            assert await connection.pttl(key) > 0
    finally:
        await connection.aclose()


async def test_garbage_in_redis_is_not_obeyed(
    stores: tuple[RedisStore, RedisStore], upstream: Upstream, redis_server: RedisServer
) -> None:
    connection = redis_asyncio.Redis.from_url(redis_server.url)
    key = f"{stores[0].prefix}:{{partner}}:quota"
    await connection.hset(key, mapping={"tat": "9" * 30, "nb": "nan", "left": "-99999999999", "reset": "x"})
    await connection.aclose()
    starts, slots = Starts(), list[float]()
    async with client_for(upstream, stores[0], RateLimit(rate=10, max_wait=1), starts) as a:
        record_slots(limiter(a), slots)
        asked = _clock.monotonic()  # the clock the limiter places its slots on
        assert (await a.get("/g")).status_code == 200
    # The first slot is now (give or take the round trip): nothing from the garbage held it back.
    assert len(slots) == 1
    assert slots[0] - asked < 0.05


async def test_redis_down_each_keeps_to_its_share_and_nothing_fails(
    upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    executable = redis_server_path()
    if executable is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(executable)
    server.start()
    starts = Starts()
    limit = RateLimit(rate=20, max_wait=5)
    try:
        async with (
            RedisStore(server.url, prefix="down", timeout=1.0) as one,
            RedisStore(server.url, prefix="down", timeout=1.0) as two,
            client_for(upstream, one, limit, starts) as a,
            client_for(upstream, two, limit, starts) as b,
        ):
            for _ in range(2):  # the second lease of each sees both
                await asyncio.gather(a.get("/d"), b.get("/d"))
            assert limiter(a).processes == 2
            server.stop()
            slots = list[float]()
            record_slots(limiter(a), slots)
            with caplog.at_level(logging.INFO, logger="fastapi_retry_http"):
                results = await asyncio.gather(*(a.get("/d") for _ in range(6)), return_exceptions=True)
                assert limiter(a).down
                server.start()
                limiter(a)._retry_at = 0.0  # try Redis again now rather than in half a second
                await a.get("/d")
                for _ in range(100):  # Redis answers the probe (in the background)
                    if limiter(a)._back_at < math.inf:
                        break
                    await asyncio.sleep(0.01)
                assert limiter(a).down  # until the slots it took alone have passed:
                _clock.skipped += 10  # time moves on (as in no-sleep mode), then it shares again
                await a.get("/d")
    finally:
        server.stop()
    assert all(isinstance(r, httpx.Response) and r.status_code == 200 for r in results)
    # Half of 20/s: one slot every 0.1 s for this process.
    ordered = sorted(slots)
    gaps = [later - earlier for earlier, later in itertools.pairwise(ordered)]
    assert len(gaps) >= 5
    assert min(gaps[:5]) >= 0.1 - 1e-6
    outages = [r for r in caplog.records if "Redis unreachable for the rate limit" in r.getMessage()]
    assert len(outages) == 1
    assert "1/2 of the rate" in outages[0].getMessage()
    assert not limiter(a).down
    assert any("shared again" in r.getMessage() for r in caplog.records)
