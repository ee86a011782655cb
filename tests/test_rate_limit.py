"""
Rate limits: every attempt takes a slot (GCRA, exact over any window, FIFO), a slot too late
is refused at once, a cancelled waiter gives its slot back, and the upstream's own word
(`Retry-After`, the IETF draft's `RateLimit`/`RateLimit-Policy`, `X-RateLimit-*`) moves the
slots. Against the loopback upstream, which counts what it receives; time is a fake clock
whose sleeps are recorded, never slept.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

import httpx
import pytest
from pydantic import ValidationError

from fastapi_retry_http import (
    AttemptEvent,
    Client,
    ClientSettings,
    HttpClientsSettings,
    RateLimit,
    RetryPolicy,
    RetryTransport,
    clients_lifespan,
)
from fastapi_retry_http.exceptions import ConfigurationError, RateLimitedError
from tests.servers import Reply, Upstream

pytestmark = pytest.mark.anyio

ONCE = RetryPolicy(attempts=1)


class FakeTime:
    """A clock that moves only when told; every sleep is recorded, and returns at once
    unless `hold` is set (then it waits until `release()`)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []
        self.hold = False
        self._go = asyncio.Event()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(round(seconds, 9))
        if self.hold:
            await self._go.wait()
        await asyncio.sleep(0)

    def release(self) -> None:
        self._go.set()


class Recorder:
    def __init__(self) -> None:
        self.events: list[AttemptEvent] = []

    def on_attempt(self, event: AttemptEvent) -> None:
        self.events.append(event)


def client_for(
    upstream: Upstream, limit: RateLimit, fake: FakeTime, policy: RetryPolicy = ONCE, recorder: Recorder | None = None
) -> httpx.AsyncClient:
    transport = RetryTransport(
        httpx.AsyncHTTPTransport(),
        policy,
        name="partner",
        sleep=fake.sleep,
        clock=fake.clock,
        rate_limit=limit,
        instrumentation=[recorder] if recorder else (),
    )
    return httpx.AsyncClient(base_url=upstream.url, transport=transport)


# -- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"rate": 0}, "rate"),
        ({"rate": -1}, "rate"),
        ({"rate": math.nan}, "rate"),
        ({"rate": math.inf}, "rate"),
        ({"rate": 1, "per": 0}, "per"),
        ({"rate": 1, "per": -2}, "per"),
        ({"rate": 1, "per": math.nan}, "per"),
        ({"rate": 1, "per": math.inf}, "per"),
        ({"rate": 1, "max_wait": 0}, "max_wait"),
        ({"rate": 1, "max_wait": -1}, "max_wait"),
        ({"rate": 1, "max_wait": math.nan}, "max_wait"),
        ({"rate": 1, "max_wait": math.inf}, "max_wait"),
        ({"rate": 1, "burst": -1}, "burst"),
        ({"rate": 1, "burst": 1.5}, "burst"),
        ({"follow_server": False}, "rate"),
    ],
)
def test_bad_input_fails_at_construction_naming_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"RateLimit\.{field} "):
        RateLimit(**kwargs)  # type: ignore[arg-type]


def test_bad_settings_fail_at_startup_naming_the_client_and_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_CLIENTS__PARTNER__BASE_URL", "http://127.0.0.1:1/")
    monkeypatch.setenv("HTTP_CLIENTS__PARTNER__RATE_LIMIT__RATE", "-5")
    with pytest.raises(ValidationError, match=r"http_clients\.partner\.rate_limit\n.*RateLimit\.rate"):
        HttpClientsSettings()
    config = {"partner": {"base_url": "http://127.0.0.1:1/", "rate_limit": {"rate": 1, "max_wait": "nan"}}}
    with pytest.raises(ConfigurationError, match=r"'partner'.*rate_limit.*RateLimit\.max_wait"):
        clients_lifespan(config)


def test_settings_build_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_CLIENTS__PARTNER__BASE_URL", "http://127.0.0.1:1/")
    monkeypatch.setenv("HTTP_CLIENTS__PARTNER__RATE_LIMIT__RATE", "100")
    monkeypatch.setenv("HTTP_CLIENTS__PARTNER__RATE_LIMIT__PER", "60")
    settings = HttpClientsSettings().http_clients["partner"]
    assert settings.rate_limit == RateLimit(rate=100, per=60)
    assert settings.client_kwargs()["rate_limit"] == RateLimit(rate=100, per=60)
    assert ClientSettings(base_url="http://x/").rate_limit is None


def test_a_client_refuses_what_is_not_a_rate_limit() -> None:
    with pytest.raises(ConfigurationError, match=r"'partner'.*rate_limit"):
        Client("http://127.0.0.1:1/", name="partner", rate_limit=100)  # type: ignore[arg-type]


# -- the local limit ----------------------------------------------------------------------------


async def test_concurrent_calls_get_fifo_slots_and_the_late_ones_are_refused_at_once(upstream: Upstream) -> None:
    fake, recorder = FakeTime(), Recorder()
    async with client_for(upstream, RateLimit(rate=10, max_wait=1.0), fake, recorder=recorder) as client:
        results = await asyncio.gather(*(client.get(f"/q{i}") for i in range(15)), return_exceptions=True)
    sent = [r for r in results if isinstance(r, httpx.Response)]
    refused = [r for r in results if isinstance(r, RateLimitedError)]
    # Slots every 0.1 s from now: 0, 0.1, ..., 1.0 are within max_wait, in the order asked.
    assert [r.status_code for r in sent] == [200] * 11
    assert [type(r) for r in results[:11]] == [httpx.Response] * 11
    assert fake.waits == [pytest.approx(0.1 * i) for i in range(1, 11)]
    assert sum(upstream.hits.values()) == 11
    assert len(refused) == 4
    assert all(e.client == "partner" for e in refused)
    assert refused[0].retry_after == pytest.approx(1.1)
    refusals = [e for e in recorder.events if e.outcome == "refused"]
    assert len(refusals) == 4
    assert {(e.reason, e.attempt, e.status_code, e.error) for e in refusals} == {
        ("rate_limit", 1, None, "RateLimitedError")
    }


async def test_burst_lets_that_many_more_start_at_once(upstream: Upstream) -> None:
    fake = FakeTime()
    async with client_for(upstream, RateLimit(rate=2, per=1, burst=3), fake) as client:
        await asyncio.gather(*(client.get("/b") for _ in range(6)))
    # Four at once (1 + burst), then one every half second.
    assert fake.waits == [0.5, 1.0]
    assert upstream.hits["/b"] == 6


async def test_a_retry_takes_a_slot_and_a_retry_refused_returns_the_last_response(upstream: Upstream) -> None:
    fake, recorder = FakeTime(), Recorder()
    upstream.script("/r", 503, 200)
    policy = RetryPolicy(attempts=3, statuses=frozenset({503}))
    async with client_for(upstream, RateLimit(rate=10), fake, policy) as client:
        assert (await client.get("/r")).status_code == 200
    backoff = fake.waits[0]
    assert fake.waits == [backoff, pytest.approx(0.1)]  # the backoff, then the rest of the slot's wait
    upstream.reset()
    fake = FakeTime()
    upstream.script("/r", 503, 200)
    async with client_for(upstream, RateLimit(rate=1, per=10, max_wait=1), fake, policy, recorder) as client:
        response = await client.get("/r")
    assert response.status_code == 503
    assert upstream.hits["/r"] == 1
    assert recorder.events[-1].outcome == "returned"
    assert recorder.events[-1].reason == "rate_limit"


async def test_a_retry_whose_backoff_outlasts_its_slot_takes_a_new_one(upstream: Upstream) -> None:
    fake = FakeTime()
    upstream.script("/late", 503, 200)
    policy = RetryPolicy(attempts=2, statuses=frozenset({503}))
    async with client_for(upstream, RateLimit(rate=10), fake, policy) as client:
        transport = client._transport
        assert isinstance(transport, RetryTransport)

        async def backoff_then_move_on(seconds: float) -> None:
            fake.waits.append(seconds)
            fake.now += 0.5  # the backoff passes the slot (at +0.1)

        transport._sleep = backoff_then_move_on
        assert (await client.get("/late")).status_code == 200
    assert len(fake.waits) == 1  # no wait for a slot: a fresh one, now
    gate = transport.strategies.by_option["rate_limit"]
    assert gate.status()["next_slot_in"] == pytest.approx(0.1)


async def test_a_cancelled_waiter_gives_its_slot_back(upstream: Upstream) -> None:
    fake = FakeTime()
    fake.hold = True
    async with client_for(upstream, RateLimit(rate=10), fake) as client:
        first = await client.get("/c")  # slot now
        waiter = asyncio.ensure_future(client.get("/c"))  # slot +0.1, waiting
        await asyncio.sleep(0.01)
        assert fake.waits == [pytest.approx(0.1)]
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        fake.hold = False
        await client.get("/c")  # gets the slot given back, not +0.2
    assert first.status_code == 200
    assert fake.waits == [pytest.approx(0.1), pytest.approx(0.1)]
    assert upstream.hits["/c"] == 2


async def test_hedges_take_slots(upstream: Upstream) -> None:
    fake = FakeTime()
    recorder = Recorder()
    policy = RetryPolicy(attempts=3, hedge_after=0.05)
    upstream.script("/h", Reply(status=503), Reply(status=503), Reply(status=200))
    async with client_for(upstream, RateLimit(rate=10), fake, policy, recorder) as client:
        transport = client._transport
        assert isinstance(transport, RetryTransport)
        response = await client.get("/h")
    assert response.status_code == 200
    assert upstream.hits["/h"] == 3
    # Hedges 2 and 3 waited for slots +0.1 and +0.2.
    assert fake.waits == [pytest.approx(0.1), pytest.approx(0.2)]
    assert transport.strategies.by_option["rate_limit"].status()["in_flight"] == 0


async def test_a_call_never_waits_past_its_deadline(upstream: Upstream) -> None:
    fake = FakeTime()
    policy = RetryPolicy(attempts=1, deadline=0.25)
    async with client_for(upstream, RateLimit(rate=10, max_wait=5), fake, policy) as client:
        results = await asyncio.gather(*(client.get("/d") for _ in range(5)), return_exceptions=True)
    assert [type(r).__name__ for r in results] == ["Response"] * 3 + ["RateLimitedError"] * 2
    assert upstream.hits["/d"] == 3


async def test_a_client_gets_a_limit_and_reports_it(upstream: Upstream, waits: list[float]) -> None:
    async with Client(upstream.url, name="partner", rate_limit=RateLimit(rate=2, burst=1)) as client:
        for _ in range(4):
            await client.get("/s")
        status = client.transport.strategies.by_option["rate_limit"].status()
    assert upstream.hits["/s"] == 4
    # Two at once (1 + burst), then one every half second (the waits are skipped, time moves on).
    assert len(waits) == 2
    assert all(0.4 < w <= 0.5 for w in waits)
    assert status["rate"] == 2
    assert status["burst"] == 1
    assert status["waiting"] == 0
    assert status["fleet"] is None
    assert status["paused_for"] == 0.0


# -- the server's word --------------------------------------------------------------------------


async def test_retry_after_on_a_429_pauses_every_call_of_the_client(upstream: Upstream) -> None:
    fake, recorder = FakeTime(), Recorder()
    upstream.script("/p", Reply(status=429, headers={"Retry-After": "2"}))
    async with client_for(upstream, RateLimit(rate=100, max_wait=1), fake, recorder=recorder) as client:
        assert (await client.get("/p")).status_code == 429
        with pytest.raises(RateLimitedError) as refused:
            await client.get("/other")  # another path, the same client: paused
        assert refused.value.retry_after == pytest.approx(2)
        fake.now += 1.5
        assert (await client.get("/other")).status_code == 200
    assert fake.waits == [pytest.approx(0.5)]
    assert upstream.hits["/other"] == 1


async def test_retry_after_on_a_503_pauses_too_and_takes_precedence(upstream: Upstream) -> None:
    fake = FakeTime()
    headers = {"Retry-After": "3", "RateLimit": '"default";r=50;t=60'}
    upstream.script("/p", Reply(status=503, headers=headers))
    async with client_for(upstream, RateLimit(), fake) as client:
        await client.get("/p")
        await client.get("/p")
    assert fake.waits == [pytest.approx(3)]


@pytest.mark.parametrize(
    "headers",
    [
        {"RateLimit": '"default";r=0;t=4', "RateLimit-Policy": '"default";q=100;w=60'},
        {"RateLimit": '"burst";r=5;t=1, "daily";r=0;t=4'},
        {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "4"},
        {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "EPOCH"},
        {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "EPOCH_MS"},
        {"RateLimit-Remaining": "0", "RateLimit-Reset": "4"},
    ],
    ids=["draft", "draft-two-policies", "x-seconds", "x-epoch", "x-epoch-ms", "early-draft"],
)
async def test_no_quota_left_holds_the_client_until_the_reset(upstream: Upstream, headers: dict[str, str]) -> None:
    fake = FakeTime()
    epoch = time.time() + 4
    stamps = {"EPOCH_MS": str(int(epoch * 1000)), "EPOCH": f"{epoch:.3f}"}
    headers = {k: stamps.get(v, v) for k, v in headers.items()}
    upstream.script("/q", Reply(headers=headers))
    async with client_for(upstream, RateLimit(), fake) as client:
        await client.get("/q")
        await client.get("/q")
    assert fake.waits == [pytest.approx(4, abs=0.2)]


async def test_the_remaining_quota_counts_the_attempts_in_flight(upstream: Upstream) -> None:
    fake = FakeTime()
    fake.hold = True
    upstream.script("/f", Reply(headers={"RateLimit": '"default";r=3;t=10'}))
    async with client_for(upstream, RateLimit(rate=10, max_wait=20), fake) as client:
        first = asyncio.ensure_future(client.get("/f"))  # its slot is now: sent at once
        waiting = [asyncio.ensure_future(client.get("/f")) for _ in range(2)]  # slots +0.1, +0.2
        await first  # r=3, but two more are on their way: 1 left before the reset
        fake.hold = False
        fake.release()
        await asyncio.gather(*waiting)
        results = [await client.get("/f") for _ in range(2)]
    assert [r.status_code for r in results] == [200, 200]
    assert fake.waits == [pytest.approx(0.1), pytest.approx(0.2), pytest.approx(0.3), pytest.approx(10)]
    assert upstream.hits["/f"] == 5


async def test_a_server_policy_paces_a_client_without_a_rate(upstream: Upstream) -> None:
    fake = FakeTime()
    upstream.script("/pace", Reply(headers={"RateLimit-Policy": '"default";q=2;w=1'}))
    async with client_for(upstream, RateLimit(), fake) as client:
        await asyncio.gather(*(client.get("/pace") for _ in range(1)))
        await asyncio.gather(*(client.get("/pace") for _ in range(3)))
    assert fake.waits == [pytest.approx(0.5), pytest.approx(1.0)]


async def test_follow_server_off_ignores_the_headers(upstream: Upstream) -> None:
    fake = FakeTime()
    upstream.script("/n", Reply(status=429, headers={"Retry-After": "30"}))
    async with client_for(upstream, RateLimit(rate=1, burst=5, follow_server=False), fake) as client:
        await client.get("/n")
        await client.get("/n")
    assert fake.waits == []
    assert upstream.hits["/n"] == 2


async def test_malformed_fields_are_ignored_with_one_warning_per_client(
    upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeTime()
    bad = Reply(headers={"RateLimit": "r=;;t", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "soon"})
    upstream.script("/m", bad, bad, bad)
    with caplog.at_level(logging.WARNING, logger="fastapi_retry_http"):
        async with client_for(upstream, RateLimit(), fake) as client:
            for _ in range(3):
                assert (await client.get("/m")).status_code == 200
    warnings = [r for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(warnings) == 1
    assert "partner" in warnings[0].getMessage()
    assert fake.waits == []
