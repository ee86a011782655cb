"""
`RedisStore` cannot get the fleet stuck (issue 21), against a real redis-server: an idle
lease holder lets go and does not take the lease back while others wait; changes adopted
from other processes reach `on_circuit`; hostile or corrupt values are bounded or dropped
(one warning), never obeyed; an outage leaves local breaks exactly as `MemoryStore`'s and
loses no counts; credentials never show, whatever the URL's shape; apps are kept apart by
`http_clients_redis_prefix`.

Flushes are driven by hand (a store `interval` of 10 s never fires during a test), so every
step is deterministic; only Redis's own TTLs need real time (a 0.4 s break).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis_asyncio

from fastapi_retry_http import CircuitBreaker, Client, HttpClientsSettings, RetryBudget, RetryPolicy, _clock
from fastapi_retry_http.exceptions import CircuitOpenError
from fastapi_retry_http.redis import RedisStore
from tests.redis_server import RedisServer, free_port, redis_server_path
from tests.servers import Upstream
from tests.test_breaker_recovery import Recorder

pytestmark = pytest.mark.anyio


BREAKER = CircuitBreaker(failure_ratio=0.5, minimum_throughput=4, window=30, break_duration=0.4, max_break_duration=1)
ONCE = RetryPolicy(attempts=1)
MANUAL = 10.0  # a flush interval that never comes during a test


@pytest.fixture
def prefix() -> str:
    return f"trust-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def manual(redis_server: RedisServer, prefix: str) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    """Two stores (two processes, as far as the state goes) flushed only by the test."""
    async with (
        RedisStore(redis_server.url, prefix=prefix, interval=MANUAL, timeout=1.0) as a,
        RedisStore(redis_server.url, prefix=prefix, interval=MANUAL, timeout=1.0) as b,
    ):
        yield a, b


def state(client: Client) -> str:
    assert client.circuit is not None
    return client.circuit.state


async def test_an_idle_lease_holder_lets_go_and_does_not_take_it_back(
    manual: tuple[RedisStore, RedisStore], upstream: Upstream, redis_server: RedisServer, prefix: str
) -> None:
    a, b = manual
    r = redis_asyncio.Redis.from_url(redis_server.url)

    async def lease_holder() -> bytes | None:
        holder = await r.get(f"{prefix}:{{billing}}:probe")
        assert holder is None or isinstance(holder, bytes)
        return holder

    heard_one, heard_two = Recorder(), Recorder()
    async with (
        Client(
            upstream.url, name="billing", retry=ONCE, circuit_breaker=BREAKER, store=a, instrumentation=[heard_one]
        ) as one,
        Client(
            upstream.url, name="billing", retry=ONCE, circuit_breaker=BREAKER, store=b, instrumentation=[heard_two]
        ) as two,
    ):
        upstream.script("/fail", *[503] * 4)
        for _ in range(4):
            await one.get("/fail")
        await a.flush()
        await b.flush()
        assert state(two) == "open"  # adopted, and heard
        await asyncio.sleep(0.5)  # the break is over in Redis too
        with pytest.raises(CircuitOpenError):
            await one.get("/ok")  # no lease yet: asks for it
        await a.flush()
        token_one = a.breaker_state("billing", BREAKER).token.encode()
        assert await lease_holder() == token_one  # one holds the fleet's lease
        with pytest.raises(CircuitOpenError):
            await two.get("/ok")
        await b.flush()  # two asks, one holds it: refused
        await a.flush()  # one got no call within a flush: it lets go ...
        assert await lease_holder() is None
        with pytest.raises(CircuitOpenError):
            await two.get("/ok")
        await b.flush()  # ... and two, which waits, takes it
        for _ in range(3):
            await a.flush()  # one does not take it back
            assert await lease_holder() == b.breaker_state("billing", BREAKER).token.encode()
        assert (await two.get("/ok")).status_code == 200
        assert upstream.hits["/ok"] == 1
        await b.flush()
        await a.flush()
        assert (state(one), state(two)) == ("closed", "closed")
    await r.aclose()
    assert heard_one.changes == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    assert heard_two.changes == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


async def test_apps_with_their_own_prefix_never_share_a_breaker(
    redis_server: RedisServer, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_CLIENTS_REDIS_URL", redis_server.url)
    monkeypatch.setenv("HTTP_CLIENTS_REDIS_PREFIX", "app-a")
    first = HttpClientsSettings().http_clients_store()
    monkeypatch.setenv("HTTP_CLIENTS_REDIS_PREFIX", "app-b")
    second = HttpClientsSettings().http_clients_store()
    assert isinstance(first, RedisStore)
    assert isinstance(second, RedisStore)
    assert (first.prefix, second.prefix) == ("app-a", "app-b")
    async with (
        first,
        second,
        Client(upstream.url, name="billing", retry=ONCE, circuit_breaker=BREAKER, store=first) as one,
        Client(upstream.url, name="billing", retry=ONCE, circuit_breaker=BREAKER, store=second) as two,
    ):
        upstream.script("/fail", *[503] * 4)
        for _ in range(4):
            await one.get("/fail")
        await first.flush()
        await second.flush()
        assert (state(one), state(two)) == ("open", "closed")


@pytest.mark.parametrize("prefix", ["", "a b", "{x}"])
def test_a_bad_prefix_fails_at_startup(monkeypatch: pytest.MonkeyPatch, prefix: str) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("HTTP_CLIENTS_REDIS_PREFIX", prefix)
    with pytest.raises(ValidationError, match="http_clients_redis_prefix"):
        HttpClientsSettings()


@pytest.mark.parametrize(
    "url",
    [
        "redis//:s3cretpw@127.0.0.1:6379/0",
        "redis:/:s3cretpw@127.0.0.1:6379/0",
        "default:s3cretpw@127.0.0.1:6379",
        "redis://default:s3cretpw@127.0.0.1:notaport/0",
        "redis://:s3cretpw@127.0.0.1:1/0?password=s3cretpw",
    ],
)
async def test_credentials_never_show_whatever_the_url(url: str, caplog: pytest.LogCaptureFixture) -> None:
    store = RedisStore(url, timeout=0.05)
    async with store:
        store.breaker_state("billing", BREAKER)
        assert not await store.flush()
    assert caplog.records  # it did say something
    assert "s3cretpw" not in caplog.text
    assert "s3cretpw" not in repr(store)
    assert "s3cretpw" not in str([r.__dict__ for r in caplog.records])


async def test_a_break_from_redis_is_capped_and_bad_values_are_dropped_with_one_warning(
    manual: tuple[RedisStore, RedisStore], redis_server: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    a, _ = manual
    base = f"{prefix}:{{billing}}"
    ten_years = 10 * 365 * 86400 * 1000
    async with redis_asyncio.Redis.from_url(redis_server.url) as r:
        await r.set(f"{base}:open", "1", px=ten_years)
        await r.set(f"{base}:tripped", "not a number")
        await r.set(f"{base}:probe", "a stranger")
        await r.hset(f"{base}:breaker:30000", mapping={"a1": "lots", "x7": "1", "f99999999999999": "5"})
        await r.set(f"{base}:budget:10000", "not a hash")
        breaker = a.breaker_state("billing", BREAKER)
        a.budget_counter("billing", RetryBudget())
        for _ in range(3):
            assert await a.flush()  # one bad field never makes a flush fail
        assert a.connected
        assert breaker.tripped
        assert breaker.open_until - _clock.monotonic() <= BREAKER.max_break_duration
        assert 0 < await r.pttl(f"{base}:open") <= 1000
        assert await r.pttl(f"{base}:tripped") > 0
        assert await r.hgetall(f"{base}:breaker:30000") == {}
        assert await r.type(f"{base}:budget:10000") in (b"none", b"hash")
    warnings = [rec for rec in caplog.records if rec.levelno == logging.WARNING and "did not write" in rec.message]
    assert len(warnings) == 1


@pytest.mark.parametrize("retries", ["1000000000", "-1000000000", "1e999", "nan"])
async def test_budget_counts_dated_in_the_future_or_out_of_bounds_are_ignored(
    manual: tuple[RedisStore, RedisStore], redis_server: RedisServer, prefix: str, retries: str
) -> None:
    a, _ = manual
    key = f"{prefix}:{{billing}}:budget:10000"
    budget = a.budget_counter("billing", RetryBudget())
    async with redis_asyncio.Redis.from_url(redis_server.url) as r:
        now_ms = int(time.time() * 1000)
        await r.hset(key, mapping={f"t{now_ms // 1000 + 10**6}": "3", f"t{now_ms // 1000}": retries})
        await r.persist(key)
        budget.sent(0.0)
        assert await a.flush()
        assert budget.fleet == (1, 0)
        assert await r.hlen(key) == 1  # only this process's request
        assert 0 < await r.pttl(key) <= 2 * 10_000


async def test_an_outage_leaves_local_breaks_as_memory_store_and_loses_no_count(upstream: Upstream) -> None:
    executable = redis_server_path()
    if executable is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(executable, free_port())  # not started: Redis is down
    try:
        async with (
            RedisStore(server.url, interval=MANUAL, timeout=0.05) as store,
            Client(upstream.url, name="billing", retry=ONCE, circuit_breaker=BREAKER, store=store) as c,
        ):
            upstream.script("/fail", *[503] * 4)
            for _ in range(4):
                await c.get("/fail")
            state_ = store.breaker_state("billing", BREAKER)
            until = state_.open_until
            for _ in range(5):
                assert not await store.flush()
            assert state_.open_until == until  # no failed flush stretches the break
            assert (state_.pending_attempts, state_.pending_failures) == (4, 4)
            server.start()
            assert await store.flush()
            assert state_.fleet == (4, 4)
    finally:
        server.stop()
