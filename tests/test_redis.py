"""
`RedisStore` against a real redis-server (tests/redis_server.py): two stores in one process
behave as two processes, several OS processes share one budget, Redis killed and restarted
mid-run costs no request, and a wrong URL never stops an app from starting.

Skipped only when redis-server is not installed (CI installs it: .ci/run).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
import uuid

import httpx
import pytest
import redis.asyncio as redis_asyncio
from fastapi import FastAPI

from fastapi_retry_http import (
    CircuitBreaker,
    Client,
    HttpClientsSettings,
    MemoryStore,
    RetryBudget,
    RetryPolicy,
    clients_lifespan,
)
from fastapi_retry_http.exceptions import CircuitOpenError
from fastapi_retry_http.redis import RedisStore, redacted
from tests import fleet_worker
from tests.redis_server import RedisServer, free_port, redis_server_path
from tests.servers import Upstream

pytestmark = pytest.mark.anyio

BREAKER = CircuitBreaker(failure_ratio=0.5, minimum_throughput=4, window=30, break_duration=0.4, max_break_duration=1)
#: A break long enough to outlast an outage.
LONG = CircuitBreaker(failure_ratio=0.5, minimum_throughput=4, window=30, break_duration=10)
ONCE = RetryPolicy(attempts=1)


async def eventually(check: object, within: float = 1.0) -> float:
    """Wait (for real) until `check()` is true; the seconds it took."""
    started = time.monotonic()
    while not check():  # type: ignore[operator]
        assert time.monotonic() - started < within, "not within the time allowed"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


def state(client: Client) -> str | None:
    """The breaker's state, as health checks see it."""
    return None if client.circuit is None else client.circuit.state


async def keys(server: RedisServer, prefix: str) -> dict[str, int]:
    """Every key of `prefix`, with its PTTL."""
    async with redis_asyncio.Redis.from_url(server.url) as r:
        return {k.decode(): await r.pttl(k) async for k in r.scan_iter(f"{prefix}:*")}


class TestTwoStoresActAsTwoProcesses:
    async def test_a_breaker_opened_in_one_is_open_in_the_other_within_a_second(
        self, stores: tuple[RedisStore, RedisStore], upstream: Upstream
    ) -> None:
        a, b = stores
        async with (
            Client(upstream.url, name="billing", retry=ONCE, circuit_breaker=BREAKER, store=a) as one,
            Client(upstream.url, name="billing", retry=ONCE, circuit_breaker=BREAKER, store=b) as two,
        ):
            upstream.script("/fail", *[503] * 4)
            for _ in range(4):
                await one.get("/fail")
            assert state(one) == "open"
            took = await eventually(lambda: state(two) == "open")
            assert took < 1.0
            with pytest.raises(CircuitOpenError):
                await two.get("/ok")
            assert upstream.hits["/ok"] == 0

    async def test_the_counts_add_up_to_open_it(
        self, stores: tuple[RedisStore, RedisStore], upstream: Upstream
    ) -> None:
        """Two failures in each process: four fleet-wide, the minimum throughput."""
        a, b = stores
        async with (
            Client(upstream.url, name="billing", retry=ONCE, circuit_breaker=BREAKER, store=a) as one,
            Client(upstream.url, name="billing", retry=ONCE, circuit_breaker=BREAKER, store=b) as two,
        ):
            upstream.script("/fail", *[503] * 4)
            await one.get("/fail")
            await one.get("/fail")
            await two.get("/fail")
            await a.flush()
            await b.flush()
            await two.get("/fail")
            assert state(two) == "open"
            assert two.circuit is not None
            assert two.circuit.attempts == 4

    async def test_one_probe_fleet_wide_and_its_success_closes_everywhere(
        self, stores: tuple[RedisStore, RedisStore], upstream: Upstream
    ) -> None:
        a, b = stores
        async with (
            Client(upstream.url, name="billing", retry=ONCE, circuit_breaker=BREAKER, store=a) as one,
            Client(upstream.url, name="billing", retry=ONCE, circuit_breaker=BREAKER, store=b) as two,
        ):
            upstream.script("/fail", *[503] * 4)
            for _ in range(4):
                await one.get("/fail")
            await eventually(lambda: state(two) == "open")
            # After the break, a call refused for want of the fleet's probe lease asks for it;
            # the lease goes to one of them at the next flush: the other keeps refusing.
            await asyncio.sleep(0.6)
            for c in (one, two):
                with pytest.raises(CircuitOpenError):
                    await c.get("/ok")
            # The lease reaches one of them within a flush or two (later on a busy machine):
            # whenever it does, exactly one probe goes fleet-wide, never two.
            for _ in range(40):
                await a.flush()
                await b.flush()
                outcomes = await asyncio.gather(one.get("/ok"), two.get("/ok"), return_exceptions=True)
                if upstream.hits["/ok"]:
                    break
                await asyncio.sleep(0.05)
            assert upstream.hits["/ok"] == 1
            assert sum(isinstance(o, CircuitOpenError) for o in outcomes) == 1
            # The probe succeeded: both close (the other at its next refresh).
            await eventually(lambda: all(state(c) == "closed" for c in (one, two)))
            assert (await two.get("/ok")).status_code == 200

    async def test_budgets_add_up(self, stores: tuple[RedisStore, RedisStore], upstream: Upstream) -> None:
        """A floor of 6 retries and no ratio: 6 fleet-wide, not 6 in each."""
        a, b = stores
        budget = RetryBudget(ratio=0.0, min_retries=6, window=10)
        upstream.script("/fail", *[503] * 100)
        async with (
            Client(upstream.url, name="billing", retry_budget=budget, store=a) as one,
            Client(upstream.url, name="billing", retry_budget=budget, store=b) as two,
        ):
            for _ in range(5):
                await one.get("/fail")
                await a.flush()
                await b.flush()
                await two.get("/fail")
                await a.flush()
                await b.flush()
        assert upstream.hits["/fail"] == 10 + 6

    async def test_every_key_expires(self, stores: tuple[RedisStore, RedisStore], upstream: Upstream) -> None:
        a, _ = stores
        upstream.script("/fail", *[503] * 4)
        async with Client(upstream.url, name="billing", retry=ONCE, circuit_breaker=BREAKER, store=a) as one:
            for _ in range(4):
                await one.get("/fail")
            await a.flush()
        found = await keys(a_server(a), a.prefix)
        assert set(found) == {
            f"{a.prefix}:{{billing}}:budget:10000",
            f"{a.prefix}:{{billing}}:breaker:30000",
            f"{a.prefix}:{{billing}}:open",
            f"{a.prefix}:{{billing}}:tripped",
        }
        assert all(0 < ttl <= 2 * 60_000 + 2 * 30_000 for ttl in found.values())


def a_server(store: RedisStore) -> RedisServer:
    port = int(store._url.rsplit(":", 1)[1].split("/")[0])
    return RedisServer("redis-server", port)


class TestFailures:
    async def test_redis_killed_and_restarted_mid_run(
        self, upstream: Upstream, caplog: pytest.LogCaptureFixture, prefix: str
    ) -> None:
        """No request fails because of Redis; one WARNING, one INFO; shared again within seconds."""
        executable = redis_server_path()
        if executable is None:
            pytest.skip("redis-server is not installed")
        server = RedisServer(executable)
        server.start()
        caplog.set_level(logging.INFO, logger="fastapi_retry_http")
        failed = 0
        try:
            async with (
                RedisStore(server.url, prefix=prefix) as store,
                Client(upstream.url, name="billing", circuit_breaker=BREAKER, store=store) as c,
            ):
                started = time.monotonic()
                killed = restarted = False
                while time.monotonic() - started < 3.0:
                    elapsed = time.monotonic() - started
                    if elapsed > 0.5 and not killed:
                        server.stop()
                        killed = True
                    if elapsed > 1.5 and not restarted:
                        server.start()
                        restarted = True
                    try:
                        response = await c.get("/ok")
                        failed += response.status_code != 200
                    except httpx.HTTPError:
                        failed += 1
                    await asyncio.sleep(0.005)
                await eventually(lambda: store.connected, within=3.0)
                await eventually(lambda: store.budget_counter("billing", RetryBudget()).fleet is not None)
            assert failed == 0
            warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "unreachable" in r.message]
            infos = [r for r in caplog.records if "reachable again" in r.message]
            assert len(warnings) == 1
            assert len(infos) == 1
            assert await keys(server, prefix)  # the fleet's counts are back in Redis
        finally:
            server.stop()

    async def test_an_unreachable_redis_never_stops_the_app_from_starting(
        self, upstream: Upstream, caplog: pytest.LogCaptureFixture
    ) -> None:
        store = RedisStore(f"redis://:s3cret@127.0.0.1:{free_port()}/0")
        lifespan = clients_lifespan({"billing": {"base_url": upstream.url}}, store=store)
        app = FastAPI()
        async with lifespan(app) as state:
            registry = state["fastapi_retry_http_clients"]
            assert (await registry["billing"].get("/ok")).status_code == 200
            assert not store.connected
        assert store._task is None  # closed at shutdown
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "unreachable" in warnings[0]
        assert "s3cret" not in caplog.text
        assert "s3cret" not in repr(store)

    async def test_a_malformed_url_is_a_warning(self, upstream: Upstream, caplog: pytest.LogCaptureFixture) -> None:
        async with RedisStore("http://user:s3cret@nowhere/0") as store:
            async with Client(upstream.url, name="billing", store=store) as c:
                assert (await c.get("/ok")).status_code == 200
            assert not await store.flush()
        assert "cannot be used" in caplog.text
        assert "s3cret" not in caplog.text

    async def test_a_breaker_opened_during_an_outage_is_published_on_recovery(
        self, upstream: Upstream, prefix: str
    ) -> None:
        executable = redis_server_path()
        if executable is None:
            pytest.skip("redis-server is not installed")
        server = RedisServer(executable)
        server.start()
        try:
            async with (
                RedisStore(server.url, prefix=prefix) as a,
                RedisStore(server.url, prefix=prefix) as b,
                Client(upstream.url, name="billing", retry=ONCE, circuit_breaker=LONG, store=a) as one,
                Client(upstream.url, name="billing", retry=ONCE, circuit_breaker=LONG, store=b) as two,
            ):
                server.stop()
                upstream.script("/fail", *[503] * 4)
                for _ in range(4):
                    await one.get("/fail")  # the local breaker works alone
                assert state(one) == "open"
                server.start()
                await eventually(lambda: state(two) == "open", within=3.0)
        finally:
            server.stop()


def test_several_processes_share_one_budget(redis_server: RedisServer, upstream: Upstream) -> None:
    """
    Three OS processes against an all-503 upstream: fleet-wide retries stay within the budget
    computed on fleet-wide traffic (plus what one flush interval lets each process overrun).
    """
    ratio, floor, processes, calls, pace = 0.1, 60, 3, 120, 0.01
    upstream.script("/fail", *[503] * 2000)
    prefix = f"procs-{uuid.uuid4().hex[:8]}"
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    args = (results, upstream.url, redis_server.url, prefix, calls, pace, (ratio, floor, 10.0))
    workers = [context.Process(target=fleet_worker.report, args=args, daemon=True) for _ in range(processes)]
    for worker in workers:
        worker.start()
    try:
        requests = sum(results.get(timeout=60) for _ in workers)
    finally:
        for worker in workers:
            worker.join(10)
            if worker.is_alive():
                worker.kill()
    retries = upstream.hits["/fail"] - requests
    assert requests == processes * calls
    # One flush interval (0.1 s = 10 calls at this pace, 2 retries each) per other process.
    slack = (processes - 1) * 10 * 2
    assert retries <= floor + ratio * requests + slack
    assert retries >= floor  # the budget was used, not refused
    # Per-process budgets would have allowed each its own floor.
    assert floor + ratio * requests + slack < processes * floor + ratio * requests


class TestSettingsAndLifecycle:
    def test_the_url_comes_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("HTTP_CLIENTS_REDIS_URL", "redis://:s3cret@redis.internal:6379/2")
        settings = HttpClientsSettings()
        store = settings.http_clients_store()
        assert isinstance(store, RedisStore)
        assert "s3cret" not in repr(settings)
        assert "s3cret" not in repr(store)
        assert isinstance(HttpClientsSettings().http_clients_store(), RedisStore)
        monkeypatch.delenv("HTTP_CLIENTS_REDIS_URL")
        assert isinstance(HttpClientsSettings().http_clients_store(), MemoryStore)

    async def test_memory_store_lifecycle_is_a_no_op(self) -> None:
        async with MemoryStore() as store:
            await store.start()
        await store.aclose()

    async def test_starting_twice_and_closing_twice_are_harmless(self, redis_server: RedisServer) -> None:
        store = RedisStore(redis_server.url)
        await store.start()
        await store.start()
        assert store.connected
        await store.aclose()
        await store.aclose()
        assert not store.connected

    async def test_closing_during_a_flush_never_hangs(self, redis_server: RedisServer) -> None:
        """
        The store stops its loop by a flag, not by cancelling it: redis-py can swallow a
        cancellation that lands inside a command, and a cancelled loop then flushed forever.
        """
        for n in range(40):
            store = RedisStore(redis_server.url, interval=0.005)
            await store.start()
            store.budget_counter("billing", RetryBudget())
            await asyncio.sleep(0.001 * (n % 10))
            await asyncio.wait_for(store.aclose(), 1.0)

    @pytest.mark.parametrize("field", ["interval", "timeout", "probe_lease"])
    def test_bad_numbers_are_refused(self, field: str) -> None:
        with pytest.raises(ValueError, match=field):
            RedisStore("redis://127.0.0.1/0", **{field: 0})  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            ("redis://user:pw@host:6380/1", "redis://***@host:6380/1"),
            ("redis://host/0", "redis://host/0"),
            ("rediss://:pw@host", "rediss://***@host"),
            ("redis://host:99999999/0", "<unparsable Redis URL>"),
        ],
    )
    def test_urls_are_logged_without_secrets(self, url: str, shown: str) -> None:
        assert redacted(url) == shown
