"""
The pipeline's seams, used as a new feature would use them: a gate added from outside the
pipeline module, and instruments that see every attempt's event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import astuple

import httpx
import pytest

from fastapi_retry_http import AttemptEvent, Client, RetryBudget, RetryPolicy, RetryTransport
from fastapi_retry_http._resilience.attempts import Call, Outcome
from fastapi_retry_http._resilience.gates import Refusal
from fastapi_retry_http.exceptions import DeadlineExceeded
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
        """Each event without its duration (the one field that is not deterministic)."""
        return [astuple(e)[:6] + astuple(e)[7:] for e in self.events]


def transport(handler: Scripted, policy: RetryPolicy | None = None, **kwargs: object) -> RetryTransport:
    return RetryTransport(httpx.MockTransport(handler), policy or RetryPolicy(jitter=False), name="up", **kwargs)  # type: ignore[arg-type]


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
        started = asyncio.Event()

        async def hang(request: httpx.Request) -> httpx.Response:
            started.set()
            await asyncio.Event().wait()
            raise AssertionError("cancelled first")

        recorder = Recorder()
        retrying = RetryTransport(httpx.MockTransport(hang), name="up", instrumentation=[recorder])
        async with httpx.AsyncClient(transport=retrying) as c:
            call = asyncio.create_task(c.get("http://upstream/x"))
            await started.wait()
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
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
        from fastapi_retry_http._resilience import decisions, pipeline

        def explode(*args: object, **kwargs: object) -> AttemptEvent:
            raise AssertionError("an event was built with nobody listening")

        monkeypatch.setattr(pipeline, "event", explode)
        monkeypatch.setattr(decisions, "event", explode)
        async with httpx.AsyncClient(transport=transport(Scripted(503, 200))) as c:
            assert (await c.get("http://upstream/x")).status_code == 200
