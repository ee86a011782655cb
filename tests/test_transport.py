"""
The attempt loop, through `httpx.MockTransport` tables: how many attempts each outcome gets,
which waits are taken, and what the caller finally sees. Real servers prove the same rules in
test_client.py and test_faults.py; these tables are the fast, exhaustive part.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from fastapi_retry_http import Client, RetryBudget, RetryPolicy, RetryTransport, _clock
from fastapi_retry_http._backends.aiohttp_pool import AiohttpTransport
from fastapi_retry_http._pipeline.attempts import OPTIONS_EXTENSION, CallOptions
from fastapi_retry_http.exceptions import DeadlineExceeded

pytestmark = pytest.mark.anyio

Script = list[int | Exception | Callable[[httpx.Request], httpx.Response]]


class Scripted:
    """A MockTransport handler that answers attempt n with script[n] and counts attempts."""

    def __init__(self, *script: int | Exception | Callable[[httpx.Request], httpx.Response]) -> None:
        self.script = list(script)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.script[min(len(self.requests), len(self.script)) - 1]
        if isinstance(step, Exception):
            raise step
        if isinstance(step, int):
            return httpx.Response(step, content=b"body")
        return step(request)

    @property
    def attempts(self) -> int:
        return len(self.requests)


def client(handler: Scripted, policy: RetryPolicy | None = None, **kwargs: Any) -> Client:
    return Client("http://upstream", transport=httpx.MockTransport(handler), retry=policy, **kwargs)


def fault(kind: type[httpx.TransportError], message: str = "boom") -> httpx.TransportError:
    return kind(message)


CONNECT_FAULTS = [httpx.ConnectError("refused"), httpx.ConnectTimeout("slow connect")]
SENT_FAULTS = [
    httpx.ReadTimeout("slow read"),
    httpx.WriteTimeout("slow write"),
    httpx.ReadError("reset"),
    httpx.WriteError("broken pipe"),
    httpx.RemoteProtocolError("Server disconnected without sending a response."),
]
NEVER_FAULTS = [
    httpx.PoolTimeout("pool full"),
    httpx.RemoteProtocolError("illegal status line: bytearray(b'garbage')"),
    httpx.UnsupportedProtocol("ftp"),
    httpx.LocalProtocolError("bad header"),
]


class TestAttemptsByOutcome:
    @pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "POST", "PATCH"])
    @pytest.mark.parametrize("error", CONNECT_FAULTS, ids=lambda e: type(e).__name__)
    async def test_connect_failures_are_retried_for_every_method(self, method: str, error: Exception) -> None:
        handler = Scripted(error, 200)
        async with client(handler) as c:
            response = await c.request(method, "/x")
        assert (response.status_code, handler.attempts) == (200, 2)

    @pytest.mark.parametrize("error", SENT_FAULTS, ids=lambda e: type(e).__name__)
    @pytest.mark.parametrize(("method", "headers", "attempts"), [
        ("GET", {}, 2),
        ("PUT", {}, 2),
        ("DELETE", {}, 2),
        ("POST", {}, 1),
        ("PATCH", {}, 1),
        ("POST", {"Idempotency-Key": "k1"}, 2),
    ])  # fmt: skip
    async def test_failures_after_sending_are_retried_only_when_resending_is_safe(
        self, error: Exception, method: str, headers: dict[str, str], attempts: int
    ) -> None:
        handler = Scripted(error, 200)
        async with client(handler) as c:
            if attempts == 1:
                with pytest.raises(type(error)):
                    await c.request(method, "/x", headers=headers)
            else:
                assert (await c.request(method, "/x", headers=headers)).status_code == 200
        assert handler.attempts == attempts

    async def test_policy_methods_opt_a_method_in(self) -> None:
        handler = Scripted(httpx.ReadError("reset"), 503, 200)
        async with client(handler, RetryPolicy(methods=frozenset({"post"}))) as c:
            assert (await c.post("/x", content=b"payload")).status_code == 200
        assert handler.attempts == 3
        assert [r.content for r in handler.requests] == [b"payload"] * 3

    @pytest.mark.parametrize("error", NEVER_FAULTS, ids=lambda e: type(e).__name__)
    async def test_never_retried_errors(self, error: Exception) -> None:
        handler = Scripted(error, 200)
        async with client(handler) as c:
            with pytest.raises(type(error)):
                await c.get("/x")
        assert handler.attempts == 1

    async def test_non_httpx_errors_propagate_untouched(self) -> None:
        handler = Scripted(KeyError("bug"), 200)
        async with client(handler) as c:
            with pytest.raises(KeyError):
                await c.get("/x")
        assert handler.attempts == 1

    @pytest.mark.parametrize(("status", "attempts"), [
        (408, 3), (429, 3), (502, 3), (503, 3), (504, 3),
        (400, 1), (401, 1), (403, 1), (404, 1), (409, 1), (500, 1), (501, 1), (200, 1), (204, 1), (301, 1),
    ])  # fmt: skip
    async def test_statuses(self, status: int, attempts: int) -> None:
        handler = Scripted(status)
        async with client(handler) as c:
            response = await c.get("/x")
        assert (response.status_code, handler.attempts) == (status, attempts)

    async def test_listed_500_is_retried(self) -> None:
        handler = Scripted(500, 200)
        async with client(handler, RetryPolicy(statuses=frozenset({500}))) as c:
            assert (await c.get("/x")).status_code == 200
        assert handler.attempts == 2

    @pytest.mark.parametrize("method", ["POST", "PATCH"])
    async def test_retryable_status_is_not_retried_for_unsafe_methods(self, method: str) -> None:
        handler = Scripted(503, 200)
        async with client(handler) as c:
            assert (await c.request(method, "/x", content=b"x")).status_code == 503
        assert handler.attempts == 1

    async def test_retries_spent_on_status_returns_the_last_response(self) -> None:
        bodies = iter([b"first", b"second", b"third"])
        handler = Scripted(lambda r: httpx.Response(503, content=next(bodies)))
        async with client(handler) as c:
            response = await c.get("/x")
        assert (response.status_code, response.content, handler.attempts) == (503, b"third", 3)

    async def test_retries_spent_on_errors_raise_the_original_httpx_error(self) -> None:
        last = httpx.ConnectError("third")
        handler = Scripted(httpx.ConnectError("first"), httpx.ConnectError("second"), last)
        async with client(handler) as c:
            with pytest.raises(httpx.ConnectError) as caught:
                await c.get("/x")
        assert caught.value is last
        assert caught.value.__notes__ == ["fastapi_retry_http: raised by attempt 3 of at most 3."]
        assert handler.attempts == 3

    async def test_a_later_unretryable_error_says_which_attempt_raised_it(self) -> None:
        handler = Scripted(503, httpx.PoolTimeout("pool full"), 200)
        async with client(handler, RetryPolicy(attempts=5)) as c:
            with pytest.raises(httpx.PoolTimeout) as caught:
                await c.get("/x")
        assert caught.value.__notes__ == ["fastapi_retry_http: raised by attempt 2 of at most 5."]

    async def test_the_response_tells_how_many_attempts_it_took(self) -> None:
        async with client(Scripted(503, 502, 200)) as c:
            retried = await c.get("/x")
        async with client(Scripted(200)) as c:
            first_time = await c.get("/x")
        assert retried.extensions["fastapi_retry_http.attempts"] == 3
        assert "fastapi_retry_http.attempts" not in first_time.extensions

    async def test_attempts_one_disables_retries(self) -> None:
        handler = Scripted(503, 200)
        async with client(handler, RetryPolicy(attempts=1)) as c:
            assert (await c.get("/x")).status_code == 503
        assert handler.attempts == 1

    async def test_per_call_policy_wins_over_the_clients(self) -> None:
        handler = Scripted(503)
        async with client(handler, RetryPolicy(attempts=2)) as c:
            await c.get("/x", retry=RetryPolicy(attempts=5))
            assert handler.attempts == 5
            await c.get("/x")
        assert handler.attempts == 7

    async def test_non_replayable_body_is_not_retried(self) -> None:
        async def body() -> AsyncIterator[bytes]:
            yield b"chunk"

        handler = Scripted(httpx.ConnectError("refused"), 200)
        async with client(handler) as c:
            with pytest.raises(httpx.ConnectError):
                await c.put("/x", content=body())
        assert handler.attempts == 1

    async def test_multipart_bodies_are_resent_whole(self) -> None:
        handler = Scripted(503, 200)
        async with client(handler) as c:
            await c.put("/x", files={"f": ("a.txt", b"file-content")}, data={"k": "v"})
        assert handler.attempts == 2
        first, second = (r.content for r in handler.requests)
        assert b"file-content" in second
        assert first == second


class TestWaits:
    async def test_backoff_is_exponential_with_full_jitter(self) -> None:
        draws = iter([0.5, 0.25, 1.0 - 1e-9])
        waits: list[float] = []

        async def sleep(seconds: float) -> None:
            waits.append(seconds)

        handler = Scripted(503)
        policy = RetryPolicy(attempts=4, wait_initial=1.0, wait_exp_base=3.0, wait_max=100.0)
        transport = RetryTransport(httpx.MockTransport(handler), policy, sleep=sleep, random=lambda: next(draws))
        async with httpx.AsyncClient(transport=transport) as c:
            assert (await c.get("http://upstream/x")).status_code == 503
        assert waits == pytest.approx([0.5, 0.75, 9.0])

    async def test_without_jitter_waits_grow_to_the_cap(self, waits: list[float]) -> None:
        policy = RetryPolicy(attempts=6, wait_initial=1.0, wait_max=5.0, jitter=False, deadline=None)
        async with client(Scripted(503), policy) as c:
            await c.get("/x")
        assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]

    @pytest.mark.parametrize("status", [429, 503])
    async def test_retry_after_seconds_wins_over_backoff(self, status: int, waits: list[float]) -> None:
        handler = Scripted(lambda r: httpx.Response(status, headers={"Retry-After": "7"}), 200)
        async with client(handler) as c:
            assert (await c.get("/x")).status_code == 200
        assert waits == [7.0]

    async def test_retry_after_is_ignored_on_other_statuses(self, waits: list[float]) -> None:
        policy = RetryPolicy(jitter=False)
        handler = Scripted(lambda r: httpx.Response(502, headers={"Retry-After": "7"}), 200)
        async with client(handler, policy) as c:
            await c.get("/x")
        assert waits == [0.1]

    @pytest.mark.parametrize("value", ["soon", "-1", "1.5", "+3", ""])
    async def test_unusable_retry_after_falls_back_to_backoff(self, value: str, waits: list[float]) -> None:
        handler = Scripted(lambda r: httpx.Response(503, headers={"Retry-After": value}), 200)
        async with client(handler, RetryPolicy(jitter=False)) as c:
            assert (await c.get("/x")).status_code == 200
        assert waits == [0.1]

    @pytest.mark.parametrize(("value", "expected"), [("60", (200, 2, [60.0])), ("61", (429, 1, []))])
    async def test_retry_after_beyond_the_cap_returns_the_response_at_once(
        self, value: str, expected: tuple[int, int, list[float]], waits: list[float]
    ) -> None:
        # No deadline, so that only the cap (60 s by default) decides.
        handler = Scripted(lambda r: httpx.Response(429, headers={"Retry-After": value}), 200)
        async with client(handler, RetryPolicy(deadline=None)) as c:
            response = await c.get("/x")
        assert (response.status_code, handler.attempts, waits) == expected

    @pytest.mark.parametrize(
        ("value", "shown"),
        [
            ("soon", "'soon'"),
            ("Wed, 21 Oct 2026 07:28:00", "'Wed, 21 Oct 2026 07:28:00'"),
            ("1\x1b[31m" + "9" * 100, "'1\\x1b[31m" + "9" * 34 + "'..."),
        ],
    )
    async def test_an_unusable_retry_after_is_named_in_one_warning(
        self, value: str, shown: str, waits: list[float], caplog: pytest.LogCaptureFixture
    ) -> None:
        handler = Scripted(lambda r: httpx.Response(503, headers={"Retry-After": value}), 200)
        async with client(handler, RetryPolicy(jitter=False)) as c:
            assert (await c.get("/x")).status_code == 200
        assert waits == [0.1]
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert [r.getMessage() for r in warnings] == [
            f"upstream: unusable Retry-After {shown} on a 503 response; using the backoff instead."
        ]
        assert warnings[0].client == "upstream"  # type: ignore[attr-defined]

    async def test_retry_after_beyond_the_deadline_returns_the_response_at_once(self, waits: list[float]) -> None:
        handler = Scripted(lambda r: httpx.Response(503, headers={"Retry-After": "20"}), 200)
        async with client(handler, RetryPolicy(deadline=10.0)) as c:
            response = await c.get("/x")
        assert (response.status_code, handler.attempts, waits) == (503, 1, [])

    async def test_deadline_stops_the_retries(self, waits: list[float]) -> None:
        policy = RetryPolicy(attempts=100, wait_initial=1.0, wait_max=1.0, jitter=False, deadline=5.5)
        handler = Scripted(503)
        async with client(handler, policy) as c:
            assert (await c.get("/x")).status_code == 503
        # Waits are virtual but count against the deadline: five 1 s waits fit in 5.5 s.
        assert (handler.attempts, waits) == (6, [1.0] * 5)

    async def test_deadline_cuts_an_attempt_in_flight(self) -> None:
        async def hang(request: httpx.Request) -> httpx.Response:
            await asyncio.sleep(3600)
            raise AssertionError("unreachable")

        policy = RetryPolicy(deadline=0.05)
        async with Client("http://upstream", transport=httpx.MockTransport(hang), retry=policy) as c:
            with pytest.raises(DeadlineExceeded) as caught:
                await c.get("/x")
        assert isinstance(caught.value, httpx.TimeoutException)

    async def test_concurrent_attempts_each_end_at_their_own_deadline(self) -> None:
        async def hang(request: httpx.Request) -> httpx.Response:
            await asyncio.sleep(3600)
            raise AssertionError("unreachable")

        ended: dict[float, float] = {}

        async def call(c: Client, deadline: float) -> None:
            started = asyncio.get_running_loop().time()
            with pytest.raises(DeadlineExceeded):
                await c.get("/x", retry=RetryPolicy(deadline=deadline))
            ended[deadline] = asyncio.get_running_loop().time() - started

        async with Client("http://upstream", transport=httpx.MockTransport(hang)) as c:
            # The later, shorter deadline must move the shared timer forward.
            await asyncio.gather(call(c, 0.3), call(c, 0.05), call(c, 0.15))
        for deadline, elapsed in ended.items():
            assert deadline - 0.01 <= elapsed < deadline + 0.1


class TestCancellation:
    async def test_cancellation_stops_a_backoff_wait_at_once_and_is_not_retried(self) -> None:
        sleeping = asyncio.Event()

        async def sleep(seconds: float) -> None:
            sleeping.set()
            await asyncio.sleep(3600)

        handler = Scripted(503, 200)
        transport = RetryTransport(httpx.MockTransport(handler), RetryPolicy(), sleep=sleep)
        async with httpx.AsyncClient(transport=transport) as c:
            task = asyncio.create_task(c.get("http://upstream/x"))
            await asyncio.wait_for(sleeping.wait(), 5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, 5)
        assert handler.attempts == 1

    async def test_cancellation_during_an_attempt_is_not_retried(self) -> None:
        started = asyncio.Event()
        calls = 0

        async def hang(request: httpx.Request) -> httpx.Response:
            nonlocal calls
            calls += 1
            started.set()
            await asyncio.sleep(3600)
            raise AssertionError("unreachable")

        async with Client("http://upstream", transport=httpx.MockTransport(hang)) as c:
            task = asyncio.create_task(c.get("/x"))
            await started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert calls == 1

    async def test_an_outer_timeout_ends_a_call_with_many_attempts_on_time(self) -> None:
        async def slow_sleep(seconds: float) -> None:
            await asyncio.sleep(3600)

        handler = Scripted(503)
        policy = RetryPolicy(attempts=50, deadline=None)
        transport = RetryTransport(httpx.MockTransport(handler), policy, sleep=slow_sleep)
        async with httpx.AsyncClient(transport=transport) as c:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await c.get("http://upstream/x")
        assert handler.attempts == 1


class TestLogging:
    async def test_one_record_per_retry_without_secrets(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.DEBUG)
        handler = Scripted(503, httpx.ConnectError("refused"), 200)
        async with Client(
            "http://upstream/base/",
            name="billing",
            headers={"Authorization": "Bearer tok-secret"},
            transport=httpx.MockTransport(handler),
            retry=RetryPolicy(jitter=False),
        ) as c:
            await c.get("items", params={"api_key": "q-secret"}, headers={"X-Api-Key": "h-secret"})
        records = [r for r in caplog.records if r.name == "fastapi_retry_http"]
        assert [(r.attempt, r.attempts, r.reason) for r in records] == [(1, 3, "503"), (2, 3, "ConnectError")]  # type: ignore[attr-defined]
        first = records[0]
        assert (first.client, first.method, first.url, first.wait) == (  # type: ignore[attr-defined]
            "billing",
            "GET",
            "http://upstream/base/items",
            0.1,
        )
        text = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
        for secret in ("pw-secret", "tok-secret", "q-secret", "h-secret"):
            assert secret not in text
        # httpx's own request line keeps the query keys, not the values.
        assert "HTTP Request: GET http://upstream/base/items?api_key=[redacted]" in caplog.text

    async def test_no_record_on_success(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.DEBUG, logger="fastapi_retry_http")
        async with client(Scripted(200)) as c:
            await c.get("/x")
        assert [r for r in caplog.records if r.name == "fastapi_retry_http"] == []


class TestTransportDirectly:
    async def test_wraps_any_httpx_client(self) -> None:
        handler = Scripted(502, 200)
        async with httpx.AsyncClient(transport=RetryTransport(httpx.MockTransport(handler))) as c:
            assert (await c.get("http://upstream/x")).status_code == 200
        assert handler.attempts == 2

    async def test_closes_the_inner_transport(self) -> None:
        closed: list[bool] = []

        class Inner(httpx.MockTransport):
            async def aclose(self) -> None:
                closed.append(True)

        transport = RetryTransport(Inner(Scripted(200)))
        await transport.aclose()
        assert closed == [True]

    async def test_default_inner_and_policy(self) -> None:
        transport = RetryTransport()
        assert isinstance(transport.inner, AiohttpTransport)  # what a Client gets by default
        assert transport.policy == RetryPolicy()
        await transport.aclose()


class TestNoSleepModes:
    async def test_set_no_sleep_skips_waits_process_wide(self, waits: list[float]) -> None:
        from fastapi_retry_http.testing import set_no_sleep

        handler = Scripted(503, 200)
        skipped = _clock.skipped
        set_no_sleep(True)  # replaces the recording no_sleep() of the autouse `waits` fixture
        try:
            async with client(handler, RetryPolicy(wait_initial=3600, wait_max=3600, jitter=False, deadline=None)) as c:
                async with asyncio.timeout(5):  # a real hour-long wait would end here
                    assert (await c.get("/x")).status_code == 200
        finally:
            set_no_sleep(False)
        assert handler.attempts == 2
        assert waits == []  # the fixture's recorder was not the one in use
        assert _clock.skipped - skipped == 3600  # the wait was skipped, and counted
        assert _clock.sleep is None

    async def test_a_deadline_passed_between_attempts_raises_before_sending(self) -> None:
        readings = iter([0.0, 0.0, 0.0, 31.0])  # start, attempt 1, stop check, attempt 2
        handler = Scripted(503, 200)
        transport = RetryTransport(
            httpx.MockTransport(handler), RetryPolicy(deadline=30.0), clock=lambda: next(readings), budget=None
        )
        async with httpx.AsyncClient(transport=transport) as c:
            with pytest.raises(DeadlineExceeded, match="before the attempt started"):
                await c.get("http://upstream/x")
        assert handler.attempts == 1


class TestRetryBudget:
    @staticmethod
    async def storm(budget: RetryBudget | None) -> int:
        """100 concurrent GETs against an upstream that always answers 503; upstream requests seen."""
        handler = Scripted(503)
        async with client(handler, retry_budget=budget) as c:
            await asyncio.gather(*(c.get(f"/{i}") for i in range(100)))
        return handler.attempts

    async def test_a_storm_is_capped_at_the_budget(self, caplog: pytest.LogCaptureFixture) -> None:
        assert await self.storm(None) == 300
        assert await self.storm(RetryBudget(min_retries=10)) <= 100 + 10 + 50
        assert await self.storm(RetryBudget(ratio=0.2, min_retries=10)) <= 100 + 10 + 20
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warnings == ["upstream: retry budget spent; failing calls are not retried until it refills."] * 2

    async def test_the_default_floor_keeps_a_quiet_client_retrying(self) -> None:
        """15 calls in a row that each need two retries: the old floor (10) ran dry."""
        handler = Scripted(*[503, 503, 200] * 15)
        async with client(handler) as c:
            statuses = [(await c.get(f"/{i}")).status_code for i in range(15)]
        assert statuses == [200] * 15
        assert handler.attempts == 45

    def test_the_floor_is_ten_retries_a_second_of_window(self) -> None:
        assert RetryBudget().min_retries == 100
        assert RetryBudget(window=3).min_retries == 30
        assert RetryBudget(window=3, min_retries=1).min_retries == 1

    async def test_a_quiet_client_always_gets_its_retries(self) -> None:
        handler = Scripted(503, 503, 200)
        async with client(handler, retry_budget=RetryBudget(ratio=0.0, min_retries=2)) as c:
            assert (await c.get("/x")).status_code == 200
        assert handler.attempts == 3

    async def test_a_denied_retry_returns_at_once_with_a_note_on_errors(self) -> None:
        handler = Scripted(httpx.ConnectError("refused"))
        async with client(handler, retry_budget=RetryBudget(ratio=0.0, min_retries=0)) as c:
            with pytest.raises(httpx.ConnectError) as caught:
                await c.get("/x")
        assert handler.attempts == 1
        assert caught.value.__notes__ == ["fastapi_retry_http: raised by attempt 1 of at most 3 (retry budget spent)."]

    async def test_the_budget_refills_as_the_window_moves_on(self) -> None:
        now = [1000.0]
        handler = Scripted(503)
        budget = RetryBudget(ratio=0.0, min_retries=2, window=10.0)
        transport = RetryTransport(
            httpx.MockTransport(handler), RetryPolicy(deadline=None), clock=lambda: now[0], budget=budget
        )
        async with httpx.AsyncClient(transport=transport) as c:
            await c.get("http://upstream/a")  # 1 request + 2 retries: the budget is spent
            await c.get("http://upstream/b")  # no retry left
            assert handler.attempts == 4
            now[0] += 10.0
            await c.get("http://upstream/c")  # the window moved on: 2 retries again
        assert handler.attempts == 7

    @pytest.mark.parametrize(
        ("field", "value"),
        [("ratio", -0.1), ("ratio", math.inf), ("min_retries", -1), ("min_retries", True), ("window", 0)],
    )
    def test_nonsense_is_refused(self, field: str, value: object) -> None:
        with pytest.raises(ValueError, match=f"RetryBudget.{field}"):
            RetryBudget(**{field: value})  # type: ignore[arg-type]


async def test_each_hedging_policy_paces_its_own_calls() -> None:
    transport = RetryTransport(httpx.MockTransport(lambda request: httpx.Response(200)), RetryPolicy(hedge_after=5.0))
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get("http://x.internal/")
        transport.policy = RetryPolicy(hedge_after=7.0)  # replaced: its calls have a budget of their own
        await client.get("http://x.internal/")
        options = CallOptions(retry=RetryPolicy(hedge_after=9.0))
        await client.get("http://x.internal/", extensions={OPTIONS_EXTENSION: options})
        await client.get("http://x.internal/")
    budgets = transport.hedging.status()["budgets"]
    assert isinstance(budgets, dict)
    assert sorted(budgets) == ["5.0", "7.0", "9.0"]
