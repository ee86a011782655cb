"""
The adaptive throttle and the concurrency limit (issue 23), against a loopback server that
counts what it receives: the count at the server is the oracle for what was sent.

Clocks, random draws and waits are injected (`RetryTransport(clock=, random=, sleep=)`):
nothing here sleeps for real, and the throttle's window is walked through virtually.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import httpx
import pytest

from fastapi_retry_http import (
    AdaptiveThrottle,
    AttemptEvent,
    Client,
    ClientSettings,
    ConcurrencyLimit,
    HttpClientsSettings,
    OverloadStatus,
    RetryPolicy,
    RetryTransport,
    clients_lifespan,
)
from fastapi_retry_http._backends import default_transport
from fastapi_retry_http._pipeline.attempts import Outcome
from fastapi_retry_http._pipeline.strategy import Refusal
from fastapi_retry_http._strategies.concurrency import ConcurrencyGate
from fastapi_retry_http._strategies.overload import overload_status
from fastapi_retry_http._strategies.throttle import ThrottleGate, is_accepted, rejection
from fastapi_retry_http.exceptions import ConfigurationError, DeadlineExceeded, ThrottledError
from tests.servers import RawServer, Upstream, response_bytes

pytestmark = pytest.mark.anyio

ONCE = RetryPolicy(attempts=1)
REQUEST = httpx.Request("GET", "http://upstream.internal/x")


class Clock:
    """Virtual monotonic seconds, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    def __init__(self) -> None:
        self.events: list[AttemptEvent] = []

    def on_attempt(self, event: AttemptEvent) -> None:
        self.events.append(event)


class Draws:
    """Random draws given by the test, then `default`."""

    def __init__(self, *draws: float, default: float = 0.99) -> None:
        self.draws = list(draws)
        self.default = default

    def __call__(self) -> float:
        return self.draws.pop(0) if self.draws else self.default


@asynccontextmanager
async def pipeline(url: str, **options: Any) -> AsyncIterator[tuple[httpx.AsyncClient, RetryTransport]]:
    """An httpx client over a `RetryTransport` with injected clock, draws and waits."""
    options.setdefault("name", "billing")
    transport = RetryTransport(default_transport(), options.pop("policy", ONCE), **options)
    async with httpx.AsyncClient(base_url=url, transport=transport) as client:
        yield client, transport


def gate(transport: RetryTransport) -> ThrottleGate:
    throttle: ThrottleGate = transport.strategies.by_option["throttle"]
    return throttle


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


class TestConcurrency:
    async def test_at_most_limit_in_flight_and_waiters_get_slots_in_order(self) -> None:
        release = asyncio.Event()
        in_flight, most = 0, 0

        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            await release.wait()
            in_flight -= 1
            writer.write(response_bytes())
            await writer.drain()

        limit = ConcurrencyLimit(limit=2, max_wait=60)
        async with RawServer(hold) as server, pipeline(server.url, concurrency=limit, sleep=never) as (c, transport):
            calls = [asyncio.create_task(c.get("/x")) for _ in range(5)]
            await arrived(server, 2)
            await asyncio.sleep(0.05)  # the other three wait in the client, not at the server
            assert server.requests == 2
            assert overload_status(transport.strategies.by_option) == OverloadStatus(0.0, 2, 2)
            assert transport.strategies.by_option["concurrency"].status()["waiting"] == 3
            release.set()
            responses = await asyncio.gather(*calls)
        assert [r.status_code for r in responses] == [200] * 5
        assert (server.requests, most) == (5, 2)

    async def test_a_waiter_out_of_time_is_refused_and_never_sent(self, waits: list[float]) -> None:
        release = asyncio.Event()

        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            await release.wait()
            writer.write(response_bytes())
            await writer.drain()

        recorder = Recorder()
        limit = ConcurrencyLimit(limit=1, max_wait=0.3, adaptive=False)
        async with (
            RawServer(hold) as server,
            Client(server.url, name="billing", retry=ONCE, concurrency=limit, instrumentation=[recorder]) as c,
        ):
            first = asyncio.create_task(c.get("/x"))
            await arrived(server, 1)
            with pytest.raises(ThrottledError) as raised:
                await c.get("/x")  # waits 0.3 s (skipped, recorded), then refused
            deadline = RetryPolicy(attempts=1, deadline=0.1)
            with pytest.raises(ThrottledError):
                await c.get("/x", retry=deadline)  # never waits past its deadline
            release.set()
            assert (await first).status_code == 200
        assert waits[0] == pytest.approx(0.3)
        assert waits[1] <= 0.1
        assert server.requests == 1
        assert (raised.value.reason, raised.value.client) == ("concurrency", "billing")
        assert [(e.outcome, e.reason) for e in recorder.events[:2]] == [
            ("refused", "concurrency"),
            ("refused", "concurrency"),
        ]

    async def test_max_wait_zero_refuses_at_once(self, waits: list[float]) -> None:
        gate = ConcurrencyGate(ConcurrencyLimit(limit=1, max_wait=0), "billing", Clock(), never)
        first, second = call(), call()
        assert gate.admit(first) is None
        refusal = gate.admit(second)
        assert refusal is not None
        assert not asyncio.iscoroutine(refusal)
        gate.record(first, Outcome(response=httpx.Response(200)))
        assert (gate.in_flight, waits) == (0, [])

    async def test_a_cancelled_waiter_gives_its_place_back(self) -> None:
        release = asyncio.Event()

        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            await release.wait()
            writer.write(response_bytes())
            await writer.drain()

        async with RawServer(hold) as server:
            limit = ConcurrencyLimit(limit=1, max_wait=60, adaptive=False)
            async with pipeline(server.url, concurrency=limit, sleep=never) as (client, transport):
                concurrency: ConcurrencyGate = transport.strategies.by_option["concurrency"]
                first = asyncio.create_task(client.get("/x"))
                await arrived(server, 1)
                waiter = asyncio.create_task(client.get("/x"))
                await asyncio.sleep(0.02)
                assert concurrency.status()["waiting"] == 1
                waiter.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await waiter
                assert (concurrency.status()["waiting"], concurrency.in_flight) == (0, 1)
                release.set()
                assert (await first).status_code == 200
                assert (await client.get("/x")).status_code == 200
                assert concurrency.in_flight == 0
        assert server.requests == 2

    async def test_a_burst_of_503s_shrinks_the_limit_once_per_round(self, upstream: Upstream) -> None:
        upstream.script("/busy", *[503] * 10)
        async with Client(upstream.url, name="billing", retry=ONCE, concurrency=ConcurrencyLimit(limit=10)) as c:
            responses = await asyncio.gather(*(c.get("/busy") for _ in range(10)))
            assert [r.status_code for r in responses] == [503] * 10
            assert c.overload.limit == 9  # not 0.9**10 of it
            await c.get("/busy")  # a 200, with one in flight: the limit is not nearly used
            assert c.overload.limit == 9
            upstream.script("/busy", 503)
            await c.get("/busy")  # a new round: shrinks again
            assert c.overload.limit == 8
        assert upstream.hits["/busy"] == 12


async def arrived(server: RawServer, count: int) -> None:
    """Until the server has received `count` requests (real time, a few milliseconds)."""
    async with asyncio.timeout(5):
        while server.requests < count:  # noqa: ASYNC110 - the server counts; nothing to wait on
            await asyncio.sleep(0.005)


async def never(seconds: float) -> None:
    """A wait that ends only when cancelled: a slot must come first."""
    await asyncio.Event().wait()


def call(attempt: int = 0) -> Any:
    from fastapi_retry_http._pipeline.attempts import Call

    made = Call(REQUEST, ONCE, "billing", None, False)
    made.attempt = attempt
    return made


class TestConcurrencyGate:
    async def test_a_retry_takes_its_slot_after_its_backoff(self, upstream: Upstream, waits: list[float]) -> None:
        upstream.script("/flaky", 503)
        policy = RetryPolicy(attempts=2)
        async with pipeline(upstream.url, policy=policy, concurrency=ConcurrencyLimit(limit=1)) as (client, transport):
            assert (await client.get("/flaky")).status_code == 200
            concurrency: ConcurrencyGate = transport.strategies.by_option["concurrency"]
            assert (concurrency.in_flight, concurrency.status()["waiting"]) == (0, 0)
        assert upstream.hits["/flaky"] == 2
        assert len(waits) == 1  # the backoff, not a wait for a slot

    async def test_a_call_past_its_deadline_does_not_wait(self) -> None:
        clock = Clock()
        gate = ConcurrencyGate(ConcurrencyLimit(limit=1), "billing", clock, never)
        holder, late = call(), call()
        late.deadline_at = clock.now - 1
        assert gate.admit(holder) is None
        waiting = gate.admit(late)
        assert asyncio.iscoroutine(waiting)
        refusal = await waiting
        assert refusal is not None
        assert refusal.reason == "concurrency"
        assert gate.status()["waiting"] == 0

    async def test_a_retry_abandoned_before_its_wait_gives_nothing_back_twice(self) -> None:
        gate = ConcurrencyGate(ConcurrencyLimit(limit=1), "billing", Clock(), never)
        retry = call(attempt=1)
        waiting = gate.admit(retry)
        assert asyncio.iscoroutine(waiting)
        waiting.close()  # the call went away during its backoff
        gate.record(retry, Outcome(cancelled=True))
        gate.record(retry, Outcome(cancelled=True))  # nothing held: nothing to give back
        assert gate.in_flight == 0
        assert gate.admit(call()) is None


class TestReleasedOnEveryPath:
    async def test_a_retry_refused_after_its_wait_gives_its_slot_back(self, upstream: Upstream) -> None:
        """A gate that changes its mind during the backoff (as the breaker does): slots go back."""

        class ChangesItsMind:
            def __init__(self) -> None:
                self.recorded: list[Outcome] = []

            def admit(self, call: Any) -> None:
                return None

            def ready(self, call: Any) -> Refusal:
                return Refusal("breaker", httpx.ConnectError("opened meanwhile"))

            def record(self, call: Any, outcome: Outcome) -> None:
                self.recorded.append(outcome)

        upstream.script("/flaky", 503)
        mind = ChangesItsMind()
        options: dict[str, Any] = {"throttle": AdaptiveThrottle(), "concurrency": ConcurrencyLimit(limit=1)}
        options["random"] = lambda: 0.99  # the throttle lets the retry go
        async with pipeline(upstream.url, policy=RetryPolicy(attempts=2), gates=[mind], **options) as (client, t):
            with pytest.raises(httpx.ConnectError):
                await client.get("/flaky")
            assert gate(t).in_flight == 0
            assert t.strategies.by_option["concurrency"].in_flight == 0
        assert upstream.hits["/flaky"] == 1
        assert [o.refusal is not None for o in mind.recorded] == [False, True]


class TestHedges:
    async def test_a_hedge_takes_a_slot_of_its_own_or_is_not_sent(self, waits: list[float]) -> None:
        slow = asyncio.Event()

        async def first_slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            if n == 1:
                await slow.wait()
            writer.write(response_bytes())
            await writer.drain()

        policy = RetryPolicy(attempts=2, hedge_after=0.02)
        limit = ConcurrencyLimit(limit=1, max_wait=0.5)
        async with RawServer(first_slow) as server, pipeline(server.url, policy=policy, concurrency=limit) as (c, t):
            call = asyncio.create_task(c.get("/x"))
            await arrived(server, 1)
            async with asyncio.timeout(5):
                while not waits:  # noqa: ASYNC110 - the hedge's wait for a slot is recorded here
                    await asyncio.sleep(0.005)
            slow.set()
            assert (await call).status_code == 200
            assert t.strategies.by_option["concurrency"].in_flight == 0
        assert server.requests == 1  # the hedge found no slot within max_wait: never sent
        assert waits == [0.5]


class TestAimd:
    def test_grows_by_one_slot_per_limit_of_successes_while_nearly_used(self) -> None:
        gate = ConcurrencyGate(ConcurrencyLimit(limit=4, max_limit=5), "billing", Clock(), never)
        calls = [call() for _ in range(4)]
        for made in calls:
            assert gate.admit(made) is None
        for made in calls:  # 4 then 3 in flight of 4 are "nearly used" (>= 3/4 of it); 2 and 1 are not
            gate.record(made, Outcome(response=httpx.Response(200)))
        assert gate.limit == pytest.approx(4.25 + 1 / 4.25)
        for _ in range(40):
            batch = [call() for _ in range(gate.current)]
            for made in batch:
                gate.admit(made)
            for made in batch:
                gate.record(made, Outcome(response=httpx.Response(200)))
        assert gate.current == 5  # max_limit

    def test_a_small_fractional_limit_fully_used_still_grows(self) -> None:
        gate = ConcurrencyGate(ConcurrencyLimit(limit=2), "billing", Clock(), never)
        gate.limit = 1.9  # after a few decreases: one attempt at a time
        made = call()
        assert gate.admit(made) is None
        gate.record(made, Outcome(response=httpx.Response(200)))
        assert gate.current == 2

    def test_never_below_min_limit_and_fixed_when_not_adaptive(self) -> None:
        gate = ConcurrencyGate(ConcurrencyLimit(limit=3, min_limit=2), "billing", Clock(), never)
        fixed = ConcurrencyGate(ConcurrencyLimit(limit=3, adaptive=False), "billing", Clock(), never)
        for _ in range(20):
            for g in (gate, fixed):
                made = call()
                g.admit(made)
                g.record(made, Outcome(error=httpx.ReadTimeout("slow")))
        assert (gate.current, fixed.current) == (2, 3)


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
