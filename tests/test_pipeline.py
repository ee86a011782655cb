"""
The pipeline's seams, used as a new feature would use them: a gate added from outside the
pipeline module, and instruments that see every attempt's event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import astuple

import httpx
import pytest

from fastapi_retry_http import (
    AttemptEvent,
    Client,
    ClientRegistry,
    RetryBudget,
    RetryPolicy,
    RetryTransport,
    clients_lifespan,
)
from fastapi_retry_http._pipeline.attempts import Call, Outcome
from fastapi_retry_http._pipeline.events import CircuitEvent, Instruments
from fastapi_retry_http._pipeline.strategy import Refusal
from fastapi_retry_http.exceptions import DeadlineExceeded
from tests.servers import Upstream
from tests.test_transport import Scripted

pytestmark = pytest.mark.anyio


class EveryThirdRefused:
    """A test-only gate: every third attempt it is asked about is refused."""

    def __init__(self) -> None:
        self.asked = 0
        self.recorded: list[tuple[int, str]] = []

    def admit(self, call: Call) -> Refusal | None:
        self.asked += 1
        return Refusal("test-gate") if self.asked % 3 == 0 else None

    def record(self, call: Call, outcome: Outcome) -> None:
        self.recorded.append((call.attempt, outcome.reason))


class Recorder:
    def __init__(self) -> None:
        self.events: list[AttemptEvent] = []

    def on_attempt(self, event: AttemptEvent) -> None:
        self.events.append(event)

    def summary(self) -> list[tuple[object, ...]]:
        """Each event without its duration (not deterministic) nor `injected` (never, here)."""
        return [astuple(e)[:6] + astuple(e)[7:10] for e in self.events]


def transport(handler: Scripted, policy: RetryPolicy | None = None, **kwargs: object) -> RetryTransport:
    return RetryTransport(httpx.MockTransport(handler), policy or RetryPolicy(jitter=False), name="up", **kwargs)  # type: ignore[arg-type]


async def cancel_mid_attempt(instrument: object) -> None:
    """One call whose first attempt hangs, cancelled by its caller mid-attempt."""
    started = asyncio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("cancelled first")

    retrying = RetryTransport(httpx.MockTransport(hang), name="up", instrumentation=[instrument])  # type: ignore[list-item]
    async with httpx.AsyncClient(transport=retrying) as c:
        call = asyncio.create_task(c.get("http://upstream/x"))
        await started.wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call


class TestGates:
    async def test_a_gate_added_from_outside_refuses_every_third_attempt(self) -> None:
        gate = EveryThirdRefused()
        handler = Scripted(503)
        retrying = transport(handler, RetryPolicy(attempts=5, jitter=False), gates=[gate], budget=None)
        async with httpx.AsyncClient(transport=retrying) as c:
            response = await c.get("http://upstream/x")
        # Asked before attempts 1, 2 and 3: the third is refused, so two attempts were sent.
        assert (response.status_code, handler.attempts, gate.asked) == (503, 2, 3)
        assert gate.recorded == [(1, "503"), (2, "503")]

    async def test_a_refusal_with_an_error_stops_a_call_before_any_io(self) -> None:
        class Closed:
            def admit(self, call: Call) -> Refusal | None:
                return Refusal("breaker", httpx.ConnectError("refused by the gate"))

            def record(self, call: Call, outcome: Outcome) -> None:
                raise AssertionError("no attempt was made")

        handler = Scripted(200)
        async with httpx.AsyncClient(transport=transport(handler, gates=[Closed()])) as c:
            with pytest.raises(httpx.ConnectError, match="refused by the gate"):
                await c.get("http://upstream/x")
        assert handler.attempts == 0


class TestEvents:
    async def events(self, handler: Scripted, policy: RetryPolicy | None = None, **kwargs: object) -> Recorder:
        recorder = Recorder()
        async with httpx.AsyncClient(transport=transport(handler, policy, instrumentation=[recorder], **kwargs)) as c:
            with contextlib.suppress(httpx.HTTPError):
                await c.get("http://upstream/x?key=secret")
        return recorder

    async def test_success(self) -> None:
        recorder = await self.events(Scripted(200))
        assert recorder.summary() == [("up", "GET", "http://upstream/x", 1, 200, None, "success", None, None)]
        assert recorder.events[0].duration >= 0

    async def test_retry_then_success(self) -> None:
        recorder = await self.events(Scripted(503, httpx.ConnectError("refused"), 200))
        assert recorder.summary() == [
            ("up", "GET", "http://upstream/x", 1, 503, None, "retry", 0.1, None),
            ("up", "GET", "http://upstream/x", 2, None, "ConnectError", "retry", 0.2, None),
            ("up", "GET", "http://upstream/x", 3, 200, None, "success", None, None),
        ]

    async def test_exhausted_retries(self) -> None:
        recorder = await self.events(Scripted(503))
        assert [(e.attempt, e.outcome, e.reason) for e in recorder.events] == [
            (1, "retry", None),
            (2, "retry", None),
            (3, "returned", "attempts"),
        ]

    async def test_a_connect_error_that_is_not_retried(self) -> None:
        recorder = await self.events(Scripted(httpx.ConnectError("refused")), RetryPolicy(attempts=1))
        assert recorder.summary() == [("up", "GET", "http://upstream/x", 1, None, "ConnectError", "failed", None, None)]

    async def test_a_failure_status_that_is_not_retried_is_failed(self) -> None:
        recorder = await self.events(Scripted(500))
        assert [(e.status_code, e.outcome) for e in recorder.events] == [(500, "failed")]

    async def test_deadline(self) -> None:
        recorder = await self.events(Scripted(503), RetryPolicy(attempts=10, wait_initial=4, jitter=False, deadline=10))
        assert [(e.attempt, e.outcome, e.wait, e.reason) for e in recorder.events] == [
            (1, "retry", 4.0, None),
            (2, "returned", None, "deadline"),  # a second wait of 8 s would end past it
        ]

    async def test_a_deadline_passed_during_an_attempt(self) -> None:
        async def hang(request: httpx.Request) -> httpx.Response:
            await asyncio.sleep(10)
            raise AssertionError("cut by the deadline")

        recorder = Recorder()
        retrying = RetryTransport(
            httpx.MockTransport(hang), RetryPolicy(deadline=0.05), name="up", instrumentation=[recorder]
        )
        async with httpx.AsyncClient(transport=retrying) as c:
            with pytest.raises(DeadlineExceeded):
                await c.get("http://upstream/x")
        assert [(e.error, e.outcome, e.reason) for e in recorder.events] == [
            ("DeadlineExceeded", "returned", "deadline")
        ]

    async def test_budget_refusal(self, caplog: pytest.LogCaptureFixture) -> None:
        recorder = await self.events(Scripted(503), budget=RetryBudget(ratio=0, min_retries=0))
        assert [(e.attempt, e.outcome, e.reason) for e in recorder.events] == [(1, "returned", "budget")]

    async def test_retry_after_beyond_the_cap(self) -> None:
        recorder = await self.events(Scripted(lambda r: httpx.Response(429, headers={"Retry-After": "3600"})))
        assert [(e.status_code, e.outcome, e.reason) for e in recorder.events] == [(429, "returned", "retry_after")]

    async def test_cancellation_mid_attempt(self) -> None:
        recorder = Recorder()
        await cancel_mid_attempt(recorder)
        assert [(e.attempt, e.outcome) for e in recorder.events] == [(1, "cancelled")]

    async def test_an_instrument_that_raises_is_logged_once_and_breaks_nothing(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        class Broken:
            def on_attempt(self, event: AttemptEvent) -> None:
                raise RuntimeError("instrument bug")

        recorder = Recorder()
        handler = Scripted(503, 200, 200)
        client = Client("http://upstream", transport=httpx.MockTransport(handler), instrumentation=[Broken(), recorder])
        async with client as c:
            assert (await c.get("/x")).status_code == 200
            assert (await c.get("/x")).status_code == 200
        assert [e.outcome for e in recorder.events] == ["retry", "success", "success"]
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert [r.getMessage() for r in errors] == [
            "upstream: instrument Broken raised; its later errors are not logged."
        ]

    async def test_without_instruments_no_event_is_built(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from fastapi_retry_http._pipeline import decisions, executor

        def explode(*args: object, **kwargs: object) -> AttemptEvent:
            raise AssertionError("an event was built with nobody listening")

        monkeypatch.setattr(executor, "event", explode)
        monkeypatch.setattr(decisions, "event", explode)
        async with httpx.AsyncClient(transport=transport(Scripted(503, 200))) as c:
            assert (await c.get("http://upstream/x")).status_code == 200

    async def test_cancellation_during_a_backoff_wait(self) -> None:
        """No attempt is in flight during a wait: the call ends with its "retry" event."""
        waiting = asyncio.Event()

        async def sleep(seconds: float) -> None:
            waiting.set()
            await asyncio.Event().wait()

        recorder = Recorder()
        handler = Scripted(503, 200)
        retrying = transport(handler, instrumentation=[recorder], sleep=sleep)
        async with httpx.AsyncClient(transport=retrying) as c:
            call = asyncio.create_task(c.get("http://upstream/x"))
            await waiting.wait()
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
        assert recorder.summary() == [("up", "GET", "http://upstream/x", 1, 503, None, "retry", 0.1, None)]
        assert handler.attempts == 1


class Scoped(Recorder):
    """A recording instrument that also hears of each attempt before it is sent."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[object, ...]] = []

    def start_attempt(self, request: httpx.Request, attempt: int, client: str) -> Scope:
        request.headers["x-attempt"] = str(attempt)
        self.log.append(("start", client, attempt))
        return Scope(self, attempt)

    def on_attempt(self, event: AttemptEvent) -> None:
        super().on_attempt(event)
        self.log.append(("event", event.attempt, event.outcome))


class Scope:
    def __init__(self, owner: Scoped, attempt: int) -> None:
        self.owner, self.attempt = owner, attempt

    def end(self, response: httpx.Response | None, error: BaseException | None) -> None:
        shown = response.status_code if response is not None else type(error).__name__
        self.owner.log.append(("end", self.attempt, shown))


class TestAttemptScopes:
    async def test_each_attempt_is_started_before_it_is_sent_and_ended_before_its_event(self) -> None:
        scoped = Scoped()
        sent: list[list[str]] = []

        def answer(status: int) -> Callable[[httpx.Request], httpx.Response]:
            def respond(request: httpx.Request) -> httpx.Response:
                sent.append(request.headers.get_list("x-attempt"))
                if status == 0:
                    raise httpx.ConnectError("refused")
                return httpx.Response(status)

            return respond

        handler = Scripted(answer(503), answer(0), answer(200))
        async with httpx.AsyncClient(transport=transport(handler, instrumentation=[scoped])) as c:
            assert (await c.get("http://upstream/x")).status_code == 200
        assert scoped.log == [
            ("start", "up", 1),
            ("end", 1, 503),
            ("event", 1, "retry"),
            ("start", "up", 2),
            ("end", 2, "ConnectError"),
            ("event", 2, "retry"),
            ("start", "up", 3),
            ("end", 3, 200),
            ("event", 3, "success"),
        ]
        # The header is set (not appended) on the one request object every attempt sends.
        assert sent == [["1"], ["2"], ["3"]]

    async def test_a_cancelled_attempt_ends_its_scope_with_the_cancellation(self) -> None:
        scoped = Scoped()
        await cancel_mid_attempt(scoped)
        assert scoped.log == [("start", "up", 1), ("end", 1, "CancelledError"), ("event", 1, "cancelled")]

    async def test_a_scope_hook_that_raises_is_logged_once_and_breaks_nothing(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        class BrokenStart(Recorder):
            def start_attempt(self, request: httpx.Request, attempt: int, client: str) -> None:
                raise RuntimeError("start bug")

        class BrokenEnd(Recorder):
            def start_attempt(self, request: httpx.Request, attempt: int, client: str) -> BrokenEnd:
                return self

            def end(self, response: httpx.Response | None, error: BaseException | None) -> None:
                raise RuntimeError("end bug")

        class NoScope(Recorder):
            def start_attempt(self, request: httpx.Request, attempt: int, client: str) -> None:
                return None

        instruments = [BrokenStart(), BrokenEnd(), NoScope()]
        async with httpx.AsyncClient(transport=transport(Scripted(503, 200), instrumentation=instruments)) as c:
            assert (await c.get("http://upstream/x")).status_code == 200
        assert all([e.outcome for e in i.events] == ["retry", "success"] for i in instruments)
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert errors == [
            "up: instrument BrokenStart raised; its later errors are not logged.",
            "up: instrument BrokenEnd raised; its later errors are not logged.",
        ]

    async def test_without_a_scoped_instrument_no_scope_is_started(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def explode(*args: object) -> None:
            raise AssertionError("scopes started with nobody wanting them")

        monkeypatch.setattr(Instruments, "start", explode)
        recorder = Recorder()
        async with httpx.AsyncClient(transport=transport(Scripted(503, 200), instrumentation=[recorder])) as c:
            assert (await c.get("http://upstream/x")).status_code == 200
        async with httpx.AsyncClient(transport=transport(Scripted(200))) as c:
            assert (await c.get("http://upstream/x")).status_code == 200
        assert [e.outcome for e in recorder.events] == ["retry", "success"]

    async def test_plain_instruments_are_never_asked_before_an_attempt(self) -> None:
        retrying = transport(Scripted(200), instrumentation=[Recorder()])
        assert retrying.executor._scoped is False
        assert transport(Scripted(200), instrumentation=[Scoped()]).executor._scoped is True


class TestCircuitEvents:
    def test_a_state_change_is_logged_and_reaches_the_instruments_that_listen(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        class Listening(Recorder):
            def __init__(self) -> None:
                super().__init__()
                self.circuit: list[CircuitEvent] = []

            def on_circuit(self, event: CircuitEvent) -> None:
                self.circuit.append(event)

        class Broken(Recorder):
            def on_circuit(self, event: CircuitEvent) -> None:
                raise RuntimeError("circuit bug")

        listening, broken = Listening(), Broken()
        instruments = Instruments([Recorder(), listening, broken])
        opened = CircuitEvent("up", "open", "closed", retry_after=5.0)
        with caplog.at_level(logging.INFO, logger="fastapi_retry_http"):
            instruments.emit_circuit(opened)
            instruments.emit_circuit(CircuitEvent("up", "half_open", "open"))
        assert listening.circuit == [opened, CircuitEvent("up", "half_open", "open")]
        records = [(r.levelname, r.getMessage()) for r in caplog.records]
        assert records == [
            ("WARNING", "up: circuit closed -> open; a probe in 5.000s"),
            ("ERROR", "up: instrument Broken raised; its later errors are not logged."),
            ("INFO", "up: circuit open -> half_open"),
        ]
        first = caplog.records[0]
        assert (first.client, first.state, first.previous, first.reason, first.wait) == (  # type: ignore[attr-defined]
            "up",
            "open",
            "closed",
            "breaker",
            5.0,
        )


class TestLogRecords:
    async def test_a_retry_and_a_give_up_are_one_record_each_with_their_fields(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        fields = ("client", "method", "url", "attempt", "attempts", "reason", "failure", "wait", "outcome")
        async with httpx.AsyncClient(transport=transport(Scripted(503), RetryPolicy(attempts=2, jitter=False))) as c:
            with caplog.at_level(logging.INFO, logger="fastapi_retry_http"):
                await c.get("http://upstream/x?key=secret")
        ours = [r for r in caplog.records if r.name == "fastapi_retry_http"]
        assert [(r.levelname, r.getMessage()) for r in ours] == [
            ("INFO", "up: GET http://upstream/x failed (503) on attempt 1/2; retrying in 0.100s"),
            ("INFO", "up: GET http://upstream/x failed (503) on attempt 2/2; not retried (attempts)"),
        ]
        assert [tuple(getattr(r, f) for f in fields) for r in ours] == [
            ("up", "GET", "http://upstream/x", 1, 2, "503", "503", 0.1, "retry"),
            ("up", "GET", "http://upstream/x", 2, 2, "attempts", "503", None, "returned"),
        ]
        assert all("secret" not in str(vars(r)) for r in ours)

    async def test_a_deadline_passed_during_an_attempt_is_a_give_up_record(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        async def hang(request: httpx.Request) -> httpx.Response:
            await asyncio.sleep(10)
            raise AssertionError("cut by the deadline")

        retrying = RetryTransport(httpx.MockTransport(hang), RetryPolicy(deadline=0.05), name="up")
        async with httpx.AsyncClient(transport=retrying) as c:
            with caplog.at_level(logging.INFO, logger="fastapi_retry_http"), pytest.raises(DeadlineExceeded):
                await c.get("http://upstream/x")
        assert [(r.getMessage(), r.reason, r.failure) for r in caplog.records] == [  # type: ignore[attr-defined]
            (
                "up: GET http://upstream/x failed (DeadlineExceeded) on attempt 1/3; not retried (deadline)",
                "deadline",
                "DeadlineExceeded",
            )
        ]

    async def test_every_budget_refusal_is_a_give_up_record(self, caplog: pytest.LogCaptureFixture) -> None:
        budget = RetryBudget(ratio=0, min_retries=0)
        async with httpx.AsyncClient(transport=transport(Scripted(httpx.ConnectError("x")), budget=budget)) as c:
            with caplog.at_level(logging.INFO, logger="fastapi_retry_http"):
                for _ in range(3):
                    with pytest.raises(httpx.ConnectError):
                        await c.get("http://upstream/x")
        gave_up = [(r.reason, r.failure) for r in caplog.records if getattr(r, "outcome", None) == "returned"]  # type: ignore[attr-defined]
        assert gave_up == [("budget", "ConnectError")] * 3
        # The warning that the budget is spent stays once per window.
        assert [r.levelname for r in caplog.records].count("WARNING") == 1


class TestLifespan:
    def test_instruments_given_to_the_lifespan_reach_every_client(self, upstream: Upstream) -> None:
        from fastapi import FastAPI
        from fastapi.testclient import TestClient

        recorder = Recorder()
        upstream.script("/a", 503)
        configs = {"billing": {"base_url": upstream.url}, "shipping": {"base_url": upstream.url}}
        registry = ClientRegistry()
        app = FastAPI(lifespan=clients_lifespan(configs, registry=registry, instrumentation=[recorder]))

        async def both() -> None:
            await registry["billing"].get("/a")
            await registry["shipping"].get("/b")

        app.add_api_route("/both", both)
        with TestClient(app) as test_client:
            assert test_client.get("/both").status_code == 200
        assert [(e.client, e.url.removeprefix(upstream.url), e.outcome) for e in recorder.events] == [
            ("billing", "/a", "retry"),
            ("billing", "/a", "success"),
            ("shipping", "/b", "success"),
        ]
