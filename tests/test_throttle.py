"""
The adaptive throttle (issue 23), against a loopback server that counts what it receives:
the count at the server is the oracle for what was sent. Clocks and draws are injected; the
throttle's window is walked through virtually.
"""

from __future__ import annotations

import asyncio
import random
from contextlib import suppress

import httpx
import pytest

from fastapi_retry_http import (
    AdaptiveThrottle,
    Client,
    ClientSettings,
    ConcurrencyLimit,
    HttpClientsSettings,
    MemoryStore,
    OverloadStatus,
    RetryPolicy,
    clients_lifespan,
)
from fastapi_retry_http._pipeline.attempts import Outcome
from fastapi_retry_http._strategies.throttle import is_accepted, rejection
from fastapi_retry_http.exceptions import ConfigurationError, DeadlineExceeded, ThrottledError
from tests.overload_helpers import ONCE, Clock, Draws, Recorder, gate, pipeline
from tests.servers import RawServer, Upstream, response_bytes

pytestmark = pytest.mark.anyio


class TestRejection:
    @pytest.mark.parametrize(
        ("requests", "accepts", "expected"),
        [
            (0, 0, 0.0),
            (100, 100, 0.0),
            (100, 50, 0.0),  # k=2: twice what is accepted may go
            (100, 40, 20 / 101),
            (3, 0, 0.75),
            (100, 0, 0.8),  # capped: probes always go
        ],
    )
    def test_the_sre_formula_capped(self, requests: int, accepts: int, expected: float) -> None:
        assert rejection(requests, accepts, AdaptiveThrottle()) == pytest.approx(expected)

    def test_k_moves_the_threshold(self) -> None:
        assert rejection(100, 60, AdaptiveThrottle(k=1.5)) == pytest.approx(10 / 101)

    @pytest.mark.parametrize(
        ("outcome", "accepted"),
        [
            (Outcome(response=httpx.Response(200)), True),
            (Outcome(response=httpx.Response(404)), True),
            (Outcome(response=httpx.Response(500)), True),  # an answer, not a rejection
            (Outcome(response=httpx.Response(429)), False),
            (Outcome(response=httpx.Response(503)), False),
            (Outcome(error=httpx.ConnectError("refused")), False),
            (Outcome(error=httpx.ReadTimeout("slow")), False),
            (Outcome(error=DeadlineExceeded("late")), False),
            (Outcome(error=httpx.LocalProtocolError("bad header")), None),  # nothing reached it
            (Outcome(error=httpx.PoolTimeout("pool")), None),
            (Outcome(cancelled=True), None),
        ],
    )
    def test_what_counts_as_accepted(self, outcome: Outcome, accepted: bool | None) -> None:
        assert is_accepted(outcome) is accepted


class TestThrottle:
    async def test_refuses_a_first_attempt_without_sending_it(self, upstream: Upstream) -> None:
        upstream.script("/busy", *[503] * 10)
        recorder = Recorder()
        draws = Draws(default=0.99)
        async with pipeline(upstream.url, throttle=AdaptiveThrottle(), random=draws, instrumentation=[recorder]) as (
            client,
            transport,
        ):
            for _ in range(10):
                assert (await client.get("/busy")).status_code == 503
            assert gate(transport).probability() == pytest.approx(0.8)
            draws.default = 0.5  # under the probability: refused
            with pytest.raises(ThrottledError) as raised:
                await client.get("/busy")
        assert upstream.hits["/busy"] == 10
        error = raised.value
        assert (error.client, error.reason, error.retry_after) == ("billing", "throttle", 0.0)
        assert isinstance(error, httpx.TransportError)
        last = recorder.events[-1]
        assert (last.outcome, last.reason, last.attempt, last.status_code, last.error) == (
            "refused",
            "throttle",
            1,
            None,
            "ThrottledError",
        )

    async def test_a_refused_retry_ends_the_call_with_its_last_outcome(self, upstream: Upstream) -> None:
        upstream.script("/busy", *[503] * 7)
        recorder = Recorder()
        draws = Draws(default=0.99)
        policy = RetryPolicy(attempts=3)
        async with pipeline(upstream.url, throttle=AdaptiveThrottle(), policy=policy, instrumentation=[recorder]) as (
            client,
            transport,
        ):
            gate(transport)._random = draws  # the throttle's draws only (the jitter has its own)
            for _ in range(2):  # 3 attempts each, none refused
                assert (await client.get("/busy")).status_code == 503
            draws.draws = [0.99, 0.1]  # the next first attempt goes, its retry is refused
            response = await client.get("/busy")
        assert response.status_code == 503
        assert upstream.hits["/busy"] == 7
        assert (recorder.events[-1].outcome, recorder.events[-1].reason) == ("returned", "throttle")

    async def test_probes_keep_going_through_a_full_outage_and_it_recovers_within_the_window(self) -> None:
        # 20 attempts a virtual second; 10 s of outage (all 503), then the upstream is back.
        clock, throttle, answer = Clock(), AdaptiveThrottle(window=10), Answer(503)
        async with (
            RawServer(answer.serve) as server,
            pipeline(server.url, throttle=throttle, clock=clock, random=random.Random(7).random) as (client, transport),
        ):
            outage = await offered(client, clock, seconds=10, rate=20)
            assert gate(transport).probability() == pytest.approx(0.8)
            # The last 5 s of the outage: the cap lets about a fifth through, never none.
            assert 0.1 <= outage.sent_share_late <= 0.35
            assert server.requests >= 40
            answer.status = 200
            recovery = await offered(client, clock, seconds=20, rate=20)
        # Back to no refusal within 1.6 windows (1.3 typically: the docs' figures), and it stays there.
        assert recovery.last_refusal_at is not None
        assert recovery.last_refusal_at <= 16.0
        assert gate(transport).probability() == 0.0

    async def test_after_an_overload_the_probability_falls_within_one_window(self) -> None:
        clock = Clock()
        answer = Answer(200, capacity=10, clock=clock)
        async with (
            RawServer(answer.serve) as server,
            pipeline(server.url, throttle=AdaptiveThrottle(window=10), clock=clock, random=random.Random(3).random) as (
                client,
                transport,
            ),
        ):
            # Offered 30 calls a virtual second, the upstream takes 10 a second and rejects the rest.
            during = await offered(client, clock, seconds=10, rate=30)
            assert 0.2 <= gate(transport).probability() <= 0.45  # about 1/3
            # The upstream saw about twice what it accepted (k=2), not three times.
            assert 0.55 <= during.sent_share_late <= 0.8
            answer.capacity = None
            recovery = await offered(client, clock, seconds=10, rate=20)
        assert recovery.last_refusal_at is not None
        assert recovery.last_refusal_at < 5.0
        assert gate(transport).probability() == 0.0

    async def test_client_overload_reports_the_probability(self, upstream: Upstream) -> None:
        upstream.script("/busy", *[503] * 40)
        async with Client(upstream.url, name="billing", retry=ONCE, throttle=AdaptiveThrottle()) as c:
            assert c.overload == OverloadStatus(0.0, None, 0)
            for _ in range(40):
                with suppress(ThrottledError):
                    await c.get("/busy")
            assert c.overload == OverloadStatus(0.8, None, 0)
            status = c.transport.strategies.by_option["throttle"].status()
        assert status["probability"] == 0.8
        assert status["requests"] == 40
        assert status["accepts"] == 0
        assert upstream.hits["/busy"] < 40  # some were refused without being sent


class Offered:
    """What a stretch of offered calls saw: the share sent late in it, the last refusal."""

    def __init__(self) -> None:
        self.sent_late = 0
        self.offered_late = 0
        self.last_refusal_at: float | None = None

    @property
    def sent_share_late(self) -> float:
        return self.sent_late / self.offered_late


class Answer:
    """A loopback upstream's answer: `status`, or with `capacity`, 200 to so many a virtual second."""

    def __init__(self, status: int, capacity: int | None = None, clock: Clock | None = None) -> None:
        self.status = status
        self.capacity = capacity
        self._clock = clock
        self._taken: dict[int, int] = {}

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        status = self.status
        if self.capacity is not None and self._clock is not None:
            second = int(self._clock())
            taken = self._taken.get(second, 0)
            status = 200 if taken < self.capacity else 503
            self._taken[second] = taken + 1
        writer.write(response_bytes(status))
        await writer.drain()


async def offered(client: httpx.AsyncClient, clock: Clock, *, seconds: int, rate: int) -> Offered:
    """Offer `rate` calls a virtual second for `seconds`, one after the other."""
    result = Offered()
    for n in range(seconds * rate):
        clock.now += 1 / rate
        elapsed = (n + 1) / rate
        try:
            await client.get("/x")
            sent = 1
        except ThrottledError:
            result.last_refusal_at, sent = elapsed, 0
        if elapsed > seconds / 2:
            result.offered_late += 1
            result.sent_late += sent
    return result


async def test_clients_of_one_name_sharing_a_store_share_the_counts(upstream: Upstream) -> None:
    store = MemoryStore()
    upstream.script("/busy", *[503] * 4)
    async with (
        Client(upstream.url, name="billing", retry=ONCE, throttle=AdaptiveThrottle(), store=store) as one,
        Client(upstream.url, name="billing", retry=ONCE, throttle=AdaptiveThrottle(), store=store) as two,
    ):
        for _ in range(4):
            with suppress(ThrottledError):
                await one.get("/busy")
        assert two.overload.throttle_probability == one.overload.throttle_probability == pytest.approx(0.8)


class TestConfiguration:
    def test_off_by_default(self) -> None:
        settings = ClientSettings(base_url="http://x.internal/")
        assert (settings.throttle, settings.concurrency) == (None, None)
        assert Client("http://127.0.0.1:1/").overload == OverloadStatus(0.0, None, 0)

    @pytest.mark.parametrize(
        ("option", "field", "value"),
        [
            ("throttle", "k", 0.5),
            ("throttle", "window", 0),
            ("throttle", "window", 1e9),
            ("throttle", "max_rejection", 1.0),
            ("concurrency", "limit", 0),
            ("concurrency", "max_wait", -1),
            ("concurrency", "min_limit", 0),
            ("concurrency", "max_limit", 5),
        ],
    )
    def test_bad_settings_fail_at_startup_naming_client_and_field(self, option: str, field: str, value: object) -> None:
        config = {"base_url": "http://x.internal/", option: {field: value}}
        with pytest.raises(ConfigurationError, match=rf"'billing'.*{option}.*{field}"):
            clients_lifespan({"billing": config})

    def test_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__BASE_URL", "http://x.internal/")
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__THROTTLE__K", "1.5")
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__CONCURRENCY__LIMIT", "8")
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__CONCURRENCY__ADAPTIVE", "false")
        settings = HttpClientsSettings().http_clients["billing"]
        assert settings.throttle == AdaptiveThrottle(k=1.5)
        assert settings.concurrency == ConcurrencyLimit(limit=8, adaptive=False)
        client = Client.from_settings("billing", settings)
        assert client.overload == OverloadStatus(0.0, 8, 0)
