"""
One meaning per call (issue 20): whatever path a call takes (lean or httpx's send loop), on
whatever backend, and however the client was configured (at construction or later through
`.httpx`), it sends the same thing and tells the same events. Each test was red before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest
from prometheus_client import CollectorRegistry

from fastapi_retry_http import AttemptEvent, CircuitBreaker, Client, ConcurrencyLimit, RetryPolicy, RetryTransport
from fastapi_retry_http._pipeline.attempts import Call, Outcome
from fastapi_retry_http._pipeline.events import Instrument
from fastapi_retry_http._pipeline.strategy import Refusal
from fastapi_retry_http._safety.size_cap import DEFAULT_MAX_RESPONSE_BYTES
from fastapi_retry_http.chaos import Chaos
from fastapi_retry_http.exceptions import CircuitOpenError
from fastapi_retry_http.prometheus import PrometheusMetrics
from tests.servers import RawServer, Reply, Upstream, response_bytes

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("backend", "request_path")]

Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter


class Recorder:
    def __init__(self) -> None:
        self.events: list[AttemptEvent] = []

    def on_attempt(self, event: AttemptEvent) -> None:
        self.events.append(event)


async def hook(request: httpx.Request) -> None:
    """A request hook that does nothing: it only sends the client down httpx's path."""


#: Client shapes that take httpx's send path on every call, beside the plain one.
SHAPES: dict[str, dict[str, object]] = {
    "plain": {},
    "event hook": {"event_hooks": {"request": [hook]}},
    "redirects": {"follow_redirects": True},
}


class TestCookies:
    @pytest.mark.parametrize("shape", SHAPES)
    async def test_a_set_cookie_never_reaches_the_next_callers_call(self, upstream: Upstream, shape: str) -> None:
        upstream.script("/login", Reply(200, headers={"Set-Cookie": "session=alice; Path=/"}))
        async with Client(upstream.url, **SHAPES[shape]) as c:  # type: ignore[arg-type]
            await c.get("/login")
            await c.get("/other")
        headers, _ = upstream.seen["/other"][0]
        assert "cookie" not in headers

    async def test_keep_cookies_keeps_them(self, upstream: Upstream) -> None:
        upstream.script("/login", Reply(200, headers={"Set-Cookie": "session=alice; Path=/"}))
        async with Client(upstream.url, keep_cookies=True) as c:
            await c.get("/login")
            await c.get("/other")
        assert upstream.seen["/other"][0][0]["cookie"] == "session=alice"

    async def test_cookies_put_on_the_client_are_sent_and_no_more(self, upstream: Upstream) -> None:
        upstream.script("/login", Reply(200, headers={"Set-Cookie": "session=alice; Path=/"}))
        async with Client(upstream.url) as c:
            c.httpx.cookies = {"tenant": "acme"}  # replaced: the new jar keeps none either
            await c.get("/login")
            await c.get("/other")
        assert upstream.seen["/other"][0][0]["cookie"] == "tenant=acme"


class TestRedirectsTurnedOnLater:
    async def test_the_guard_holds_when_redirects_are_turned_on_through_httpx(self, upstream: Upstream) -> None:
        elsewhere = upstream.url.replace("127.0.0.1", "localhost") + "/landing"
        upstream.script("/moved", Reply(302, headers={"Location": elsewhere}))
        async with Client(upstream.url, headers={"X-Api-Key": "key", "Authorization": "Bearer t"}) as c:
            c.httpx.follow_redirects = True
            response = await c.get("/moved", headers={"X-Call-Secret": "s"})
        assert response.status_code == 200
        headers, _ = upstream.seen["/landing"][0]
        assert not {"x-api-key", "authorization", "x-call-secret", "cookie"} & set(headers)

    async def test_a_request_built_on_httpx_directly_is_guarded_too(self, upstream: Upstream) -> None:
        elsewhere = upstream.url.replace("127.0.0.1", "localhost") + "/landing"
        upstream.script("/moved", Reply(302, headers={"Location": elsewhere}))
        async with Client(upstream.url, headers={"X-Api-Key": "key"}, follow_redirects=True) as c:
            await c.httpx.get("/moved")
        assert "x-api-key" not in upstream.seen["/landing"][0][0]


def answers(*statuses: int, slow: int = 0) -> Callable[[Reader, Writer, int], Awaitable[None]]:
    """Request n gets statuses[n-1] at once, except request `slow`, which hangs."""

    async def handler(reader: Reader, writer: Writer, n: int) -> None:
        if n == slow:
            await asyncio.sleep(30)
        writer.write(response_bytes(statuses[n - 1] if n <= len(statuses) else 200))
        await writer.drain()

    return handler


class TestHedgingEvents:
    async def test_every_attempt_sent_has_one_event(self) -> None:
        recorder = Recorder()
        policy = RetryPolicy(hedge_after=0.05, attempts=3, jitter=False)
        async with (
            RawServer(answers(200, 503, 200, slow=1)) as server,
            Client(server.url, retry=policy, instrumentation=[recorder]) as c,
        ):
            response = await c.get("/x")
        assert (response.status_code, server.requests) == (200, 3)
        assert sorted((e.attempt, e.outcome) for e in recorder.events) == [
            (1, "hedge_lost"),
            (2, "retry"),
            (3, "success"),
        ]

    async def test_prometheus_times_the_hedged_call_not_the_previous_one(self) -> None:
        registry = CollectorRegistry()
        policy = RetryPolicy(hedge_after=0.05, jitter=False)
        async with (
            RawServer(answers(200, 200, 200, slow=1)) as server,
            Client(server.url, retry=policy, instrumentation=[PrometheusMetrics(registry)]) as c,
        ):
            await c.get("/x")
            await asyncio.sleep(0)  # a second call in a fresh task
            await asyncio.create_task(c.get("/x"))
        labels = {"client": "127.0.0.1", "method": "GET"}
        assert registry.get_sample_value("fastapi_retry_http_request_duration_seconds_count", labels) == 2
        total = registry.get_sample_value("fastapi_retry_http_request_duration_seconds_sum", labels)
        assert total is not None
        assert total < 2  # each call took about hedge_after, not 30 s


class TestElapsed:
    """A read response's `elapsed` is its attempt's duration, as the instruments see it."""

    async def test_elapsed_is_the_attempts_duration(self, upstream: Upstream) -> None:
        recorder = Recorder()
        async with Client(upstream.url, instrumentation=[recorder]) as c:
            response = await c.get("/x")
        (told,) = recorder.events
        assert response.elapsed.total_seconds() == pytest.approx(told.duration, abs=1e-6)
        assert told.duration > 0

    async def test_a_response_made_up_by_chaos_has_its_attempts_time(self) -> None:
        recorder = Recorder()
        chaos = Chaos(status_rate=1.0, status=503, seed=0)
        async with Client(
            "http://upstream.invalid", retry=RetryPolicy(attempts=1), chaos=chaos, instrumentation=[recorder]
        ) as c:
            response = await c.get("/x")
        (told,) = recorder.events
        assert response.status_code == 503
        assert response.elapsed.total_seconds() == pytest.approx(told.duration, abs=1e-6)
        assert told.injected


class TestRefusals:
    async def test_a_call_refused_by_the_breaker_is_one_event_and_counted(self, upstream: Upstream) -> None:
        upstream.script("/x", *[503] * 10)
        recorder, registry = Recorder(), CollectorRegistry()
        breaker = CircuitBreaker(minimum_throughput=2, failure_ratio=0.5)
        instruments: list[Instrument] = [recorder, PrometheusMetrics(registry)]
        async with Client(upstream.url, circuit_breaker=breaker, instrumentation=instruments) as c:
            for _ in range(2):
                await c.get("/x", retry=RetryPolicy(attempts=1))
            for _ in range(3):
                with pytest.raises(CircuitOpenError):
                    await c.get("/x")
        refused = [e for e in recorder.events if e.outcome == "refused"]
        assert [(e.attempt, e.status_code, e.error, e.reason) for e in refused] == [
            (1, None, "CircuitOpenError", "breaker")
        ] * 3
        assert upstream.hits["/x"] == 2
        sample = registry.get_sample_value
        assert (
            sample("fastapi_retry_http_attempts_total", {"client": "127.0.0.1", "method": "GET", "outcome": "refused"})
            == 3
        )
        assert sample("fastapi_retry_http_gave_up_total", {"client": "127.0.0.1", "reason": "breaker"}) == 3


class TestBareTransport:
    async def test_a_bare_retry_transport_has_a_clients_defaults(self) -> None:
        transport = RetryTransport()
        client = Client("http://upstream/")
        try:
            assert type(transport.inner) is type(client.transport.inner)
            assert transport._sender.max_response_bytes == DEFAULT_MAX_RESPONSE_BYTES
        finally:
            await transport.aclose()
            await client.aclose()


class EveryOtherCall:
    """A strategy added from outside: refuses every other first attempt, waits before the rest."""

    def __init__(self) -> None:
        self.calls = 0
        self.recorded: list[str] = []

    def admit(self, call: Call) -> Refusal | Awaitable[Refusal | None] | None:
        if call.attempt > 0:
            return None
        self.calls += 1
        if self.calls % 2 == 0:
            return Refusal("every_other", RuntimeError("refused"))
        return self._wait()

    async def _wait(self) -> Refusal | None:
        await asyncio.sleep(0)
        return None

    def record(self, call: Call, outcome: Outcome) -> None:
        self.recorded.append("cancelled" if outcome.cancelled else outcome.reason)


class TestAddingAStrategy:
    async def test_a_strategy_joins_without_a_change_to_the_executor(self, upstream: Upstream) -> None:
        strategy, recorder = EveryOtherCall(), Recorder()
        transport = RetryTransport(httpx.AsyncHTTPTransport(), gates=[strategy], instrumentation=[recorder], name="up")
        async with httpx.AsyncClient(transport=transport, base_url=upstream.url) as c:
            assert (await c.get("/a")).status_code == 200
            with pytest.raises(RuntimeError):
                await c.get("/b")
            assert (await c.get("/c")).status_code == 200
        assert (upstream.hits["/a"], upstream.hits["/b"], upstream.hits["/c"]) == (1, 0, 1)
        assert strategy.recorded == ["200", "200"]
        assert [e.outcome for e in recorder.events] == ["success", "refused", "success"]


class Holding:
    """A strategy that takes a slot when it admits an attempt and gives it back when told."""

    def __init__(self) -> None:
        self.held = 0

    def admit(self, call: Call) -> None:
        self.held += 1

    def record(self, call: Call, outcome: Outcome) -> None:
        self.held -= 1


class TestSlotsComeBack:
    async def test_a_call_cancelled_in_its_backoff_wait_gives_back_what_its_retry_took(self) -> None:
        waiting = asyncio.Event()

        async def blocked(seconds: float) -> None:
            waiting.set()
            await asyncio.Event().wait()  # the backoff wait never ends: the caller goes away in it

        holding = Holding()
        inner = httpx.MockTransport(lambda request: httpx.Response(503))
        transport = RetryTransport(inner, RetryPolicy(jitter=False), sleep=blocked, gates=[holding], name="up")
        async with httpx.AsyncClient(transport=transport, base_url="http://upstream") as c:
            call = asyncio.create_task(c.get("/x"))
            await waiting.wait()  # the retry was admitted: it holds a slot
            assert holding.held == 1
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
        assert holding.held == 0

    async def test_a_hedge_cancelled_before_its_task_starts_gives_back_what_it_was_admitted(self) -> None:
        holding, inner = Holding(), AnswersOnceTheHedgeExists()
        transport = RetryTransport(inner, RetryPolicy(hedge_after=0.01), gates=[holding], name="up")
        async with httpx.AsyncClient(transport=transport, base_url="http://upstream") as c:
            assert (await c.get("/x")).status_code == 200
        assert (inner.sent, holding.held) == (1, 0)  # the hedge was admitted, never sent, given back

    async def test_so_the_concurrency_limit_never_leaks_a_slot_to_hedging(self) -> None:
        limit = ConcurrencyLimit(limit=2, max_wait=0, adaptive=False)
        inner = AnswersOnceTheHedgeExists()
        async with Client(
            "http://upstream", retry=RetryPolicy(hedge_after=0.01), concurrency=limit, transport=inner
        ) as c:
            for _ in range(3):  # each would have kept a slot: the limit is 2
                assert (await c.get("/x")).status_code == 200
            assert (inner.sent, c.overload.in_flight) == (3, 0)
            assert (await c.get("/x")).status_code == 200


class AnswersOnceTheHedgeExists(httpx.AsyncBaseTransport):
    """
    Answers a call's first attempt in the loop turn after its hedge's task is made, ahead of
    that task's first step (as when the answer comes in the turn the hedge timer fires): the
    race is won, and the hedge is cancelled before it ran.
    """

    def __init__(self) -> None:
        self.sent = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += 1
        tasks = len(asyncio.all_tasks())
        # A turn of the loop at a time, so the answer comes in the very next one: no event to wait on.
        while len(asyncio.all_tasks()) == tasks:  # noqa: ASYNC110
            await asyncio.sleep(0)
        return httpx.Response(200, request=request)
