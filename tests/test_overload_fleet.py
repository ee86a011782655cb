"""
The adaptive throttle shared through `RedisStore`, against a real redis-server: two stores in
one process behave as two processes; what is read back from Redis is checked, never obeyed
blindly; keys expire; with Redis down the throttle works on local counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis_asyncio

from fastapi_retry_http import AdaptiveThrottle, Client, RetryPolicy
from fastapi_retry_http._stores.fleet_throttle import REDIS_BUCKETS, FleetThrottleCounter, _valid
from fastapi_retry_http.exceptions import ThrottledError
from fastapi_retry_http.redis import RedisStore
from tests.redis_server import RedisServer, free_port
from tests.servers import RawServer, response_bytes

pytestmark = pytest.mark.anyio

ONCE = RetryPolicy(attempts=1)
THROTTLE = AdaptiveThrottle(window=10)


@pytest.fixture
async def overloaded() -> AsyncIterator[RawServer]:
    """A loopback upstream that answers every request with 503, counting them."""

    async def busy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(response_bytes(503))
        await writer.drain()

    async with RawServer(busy) as server:
        yield server


def counter(client: Client) -> FleetThrottleCounter:
    found: FleetThrottleCounter = client.transport.strategies.by_option["throttle"].counter
    return found


async def eventually(check: object, within: float = 1.0) -> float:
    started = time.monotonic()
    while not check():  # type: ignore[operator]
        assert time.monotonic() - started < within, "not within the time allowed"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def test_one_process_overload_throttles_the_other_within_a_second(
    stores: tuple[RedisStore, RedisStore], overloaded: RawServer
) -> None:
    a, b = stores
    async with (
        Client(overloaded.url, name="billing", retry=ONCE, throttle=THROTTLE, store=a) as one,
        Client(overloaded.url, name="billing", retry=ONCE, throttle=THROTTLE, store=b) as two,
    ):
        for _ in range(20):
            with contextlib.suppress(ThrottledError):
                await one.get("/x")
        sent = overloaded.requests
        assert one.overload.throttle_probability == pytest.approx(0.8)
        took = await eventually(lambda: two.overload.throttle_probability == pytest.approx(0.8))
        assert took < 1.0
        assert counter(two).requests == 0  # it has sent nothing itself: the fleet's counts
        refused = 0
        for _ in range(50):
            try:
                await two.get("/x")
            except ThrottledError:
                refused += 1
        assert 25 <= refused <= 49  # about 80%, and probes still go
        assert overloaded.requests - sent == 50 - refused


async def test_counts_read_back_are_checked(
    stores: tuple[RedisStore, RedisStore], redis_server: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    a, _ = stores
    key = f"{prefix}:{{billing}}:throttle:10000"
    async with (
        redis_asyncio.Redis.from_url(redis_server.url) as r,
        Client("http://127.0.0.1:1/", name="billing", throttle=THROTTLE, store=a) as one,
    ):
        seconds, micros = await r.time()
        bucket = (seconds * 1000 + micros // 1000) // (10_000 // REDIS_BUCKETS)
        # Not numbers, a bucket from the future: dropped by the script.
        await r.hset(key, mapping={"rxyz": "5", f"r{bucket}": "many", f"r{bucket + 50}": "7"})
        assert await a.flush()
        assert counter(one).fleet == (0, 0)
        assert await r.hkeys(key) == []
        # More accepts than requests: not believed; local counts, one warning.
        caplog.set_level(logging.WARNING, logger="fastapi_retry_http")
        await r.hset(key, mapping={f"a{bucket}": "1000", f"r{bucket}": "1"})
        assert await a.flush()
        assert await a.flush()
        assert counter(one).fleet is None
        warnings = [rec for rec in caplog.records if "make no sense" in rec.getMessage()]
        assert len(warnings) == 1


async def test_keys_expire_within_two_windows(
    stores: tuple[RedisStore, RedisStore], redis_server: RedisServer, prefix: str, overloaded: RawServer
) -> None:
    a, _ = stores
    async with Client(overloaded.url, name="billing", retry=ONCE, throttle=THROTTLE, store=a) as one:
        await one.get("/x")
        assert await a.flush()
    async with redis_asyncio.Redis.from_url(redis_server.url) as r:
        ttl = await r.pttl(f"{prefix}:{{billing}}:throttle:10000")
    assert 0 < ttl <= 20_000


async def test_with_redis_down_the_throttle_works_on_local_counts(
    overloaded: RawServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fastapi_retry_http")
    async with (
        RedisStore(f"redis://127.0.0.1:{free_port()}/0") as store,
        Client(overloaded.url, name="billing", retry=ONCE, throttle=THROTTLE, store=store) as c,
    ):
        for _ in range(10):
            with contextlib.suppress(ThrottledError):
                await c.get("/x")
        assert counter(c).fleet is None
        assert c.overload.throttle_probability == pytest.approx(0.8)
        assert not await store.flush()
        assert counter(c).pending_requests == 10  # kept for when Redis is back


@pytest.mark.parametrize("reply", [None, [1], [1, "2"], [True, 0], [5, -1], [-3, -5], [10**13, 0]])
def test_replies_that_make_no_sense_are_refused(reply: object) -> None:
    assert _valid(reply) is None


def test_a_sane_reply_is_taken() -> None:
    assert _valid([10, 4]) == (10, 4)


async def test_a_failed_flush_keeps_the_counts_for_the_next(
    stores: tuple[RedisStore, RedisStore], overloaded: RawServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = stores

    async def broken(**kwargs: object) -> object:
        raise ConnectionError("gone")

    async with Client(overloaded.url, name="billing", retry=ONCE, throttle=THROTTLE, store=a) as one:
        monkeypatch.setattr(a, "_throttle_script", broken)
        await one.get("/x")
        assert not await a.flush()
        assert (counter(one).pending_requests, counter(one).pending_accepts) == (1, 0)
        monkeypatch.undo()
        assert await a.flush()
        assert counter(one).fleet == (1, 0)
