"""
The httpx backend's shield, step by step: where an abandoned attempt stops, and where its
cancellation is delivered, driven through httpcore's trace events by a scripted pool.
(tests/test_abandoned.py shows the same against real pools and a counting server;
tests/test_reaches.py pins the event names to httpcore's sources.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fastapi_retry_http._backends.httpx_pool import STOP_POINTS, AttemptState, CancelSafeTransport

pytestmark = pytest.mark.anyio

GET = SimpleNamespace(method=b"GET")
CONNECT = SimpleNamespace(method=b"CONNECT")


class Body(httpx.AsyncByteStream):
    def __init__(self, seen: list[str]) -> None:
        self.seen = seen

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"ok"

    async def aclose(self) -> None:
        self.seen.append("closed")


class ScriptedPool(httpx.AsyncHTTPTransport):
    """Emits `events` through the request's tracer, waiting for `release` after `pause_after`."""

    def __init__(self, *events: tuple[str, Any], pause_after: int) -> None:
        super().__init__()
        self.events = events
        self.pause_after = pause_after
        self.paused, self.release = asyncio.Event(), asyncio.Event()
        self.seen: list[str] = []
        self.asked = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.asked += 1
        trace = request.extensions["trace"]
        try:
            for number, (event, core_request) in enumerate(self.events, 1):
                await trace(event, {"request": core_request})
                self.seen.append(event)
                if number == self.pause_after:
                    self.paused.set()
                    await self.release.wait()
        except asyncio.CancelledError:
            self.seen.append("cancelled inside")
            raise
        return httpx.Response(200, stream=Body(self.seen))


async def abandon(pool: ScriptedPool) -> CancelSafeTransport:
    """Start an attempt through the shield, leave it at the pause, then let it go on."""
    transport = CancelSafeTransport(pool)
    request = httpx.Request("GET", "http://upstream/x")
    call = asyncio.ensure_future(transport.shield(transport.handle_async_request(request)))
    await pool.paused.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    pool.release.set()
    async with asyncio.timeout(5):
        while transport._background:  # noqa: ASYNC110 (the attempt ends by itself)
            await asyncio.sleep(0.001)
    return transport


async def test_an_attempt_abandoned_while_connecting_stops_before_writing() -> None:
    pool = ScriptedPool(
        ("connection.connect_tcp.started", GET),
        ("connection.connect_tcp.complete", GET),
        ("http11.send_request_headers.started", GET),
        pause_after=1,
    )
    await abandon(pool)
    # Stopped at the head's stop point, without a cancellation inside httpcore.
    assert pool.seen == ["connection.connect_tcp.started", "connection.connect_tcp.complete"]


async def test_an_attempt_abandoned_after_its_head_went_out_is_cancelled_inside() -> None:
    pool = ScriptedPool(
        ("http11.send_request_headers.started", GET),
        ("http11.receive_response_headers.started", GET),
        pause_after=1,
    )
    await abandon(pool)
    # httpcore closes the connection on a cancellation from here on: the slot is freed now.
    assert pool.seen == ["http11.send_request_headers.started", "cancelled inside"]


async def test_an_attempt_abandoned_while_its_response_is_released_is_left_to_finish() -> None:
    pool = ScriptedPool(
        ("http11.send_request_headers.started", GET),
        ("http11.response_closed.started", GET),
        ("http11.response_closed.complete", GET),
        pause_after=2,
    )
    await abandon(pool)
    assert "cancelled inside" not in pool.seen
    assert pool.seen[-1] == "closed"  # finished in the background, then its response released


async def test_a_tunnels_connect_is_not_the_request() -> None:
    """Abandoned after the CONNECT went out: the request itself still stops before its head."""
    pool = ScriptedPool(
        ("http11.send_request_headers.started", CONNECT),
        ("http11.send_request_headers.started", GET),
        pause_after=1,
    )
    await abandon(pool)
    assert pool.seen == ["http11.send_request_headers.started"]


async def test_an_attempt_abandoned_before_reaching_the_pool_never_asks_it() -> None:
    pool = ScriptedPool(("http11.send_request_headers.started", GET), pause_after=0)
    transport = CancelSafeTransport(pool)
    gate = asyncio.Event()

    async def attempt() -> httpx.Response:
        await gate.wait()  # still in the pipeline, before the backend
        return await transport.handle_async_request(httpx.Request("GET", "http://upstream/x"))

    call = asyncio.ensure_future(transport.shield(attempt()))
    await asyncio.sleep(0)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    gate.set()
    async with asyncio.timeout(5):
        while transport._background:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
    assert pool.asked == 0


async def test_the_callers_own_tracer_still_hears_every_event_and_the_request_is_left_as_it_was() -> None:
    heard: list[str] = []

    async def mine(event: str, info: dict[str, Any]) -> None:
        heard.append(event)

    pool = ScriptedPool(("http11.send_request_headers.started", GET), pause_after=0)
    transport = CancelSafeTransport(pool)
    request = httpx.Request("GET", "http://upstream/x", extensions={"trace": mine})
    response = await transport.shield(transport.handle_async_request(request))
    assert (response.status_code, heard) == (200, ["http11.send_request_headers.started"])
    assert request.extensions["trace"] is mine


async def test_what_is_written_into_the_extensions_meanwhile_is_kept() -> None:
    class Writing(httpx.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            request.extensions["written"] = "meanwhile"
            return httpx.Response(200)

    transport = CancelSafeTransport(Writing())
    request = httpx.Request("GET", "http://upstream/x")
    original = request.extensions
    await transport.shield(transport.handle_async_request(request))
    assert request.extensions is original
    assert request.extensions["written"] == "meanwhile"
    assert "trace" not in request.extensions


async def test_hedges_of_one_request_share_its_tracer() -> None:
    """A hedge sent while another attempt of the same request is in flight does not wrap it twice."""
    first = ScriptedPool(("http11.send_request_headers.started", GET), pause_after=1)
    transport = CancelSafeTransport(first)
    request = httpx.Request("GET", "http://upstream/x")
    original = request.extensions
    running = asyncio.ensure_future(transport.shield(transport.handle_async_request(request)))
    await first.paused.wait()
    tracer = request.extensions["trace"]
    transport.inner = ScriptedPool(("http11.send_request_headers.started", GET), pause_after=0)
    await transport.shield(transport.handle_async_request(request))
    # Sent outside any attempt (no shield), it carries the tracer too, which then only passes on.
    transport.inner = ScriptedPool(("http11.send_request_headers.started", GET), pause_after=0)
    assert (await transport.handle_async_request(request)).status_code == 200
    first.release.set()
    await running
    assert tracer.previous is None
    assert request.extensions is original


async def test_without_the_shield_nothing_is_traced() -> None:
    class Plain(httpx.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, extensions={"traced": "trace" in request.extensions})

    response = await CancelSafeTransport(Plain()).handle_async_request(httpx.Request("GET", "http://upstream/x"))
    assert response.extensions["traced"] is False


#: Trace events an attempt can see, in any order the machine below picks.
EVENTS = [
    "connection.connect_tcp.started",
    "connection.connect_tcp.complete",
    "connection.start_tls.started",
    "http2.send_connection_init.started",
    "http11.send_request_headers.started",
    "http2.send_request_headers.started",
    "http11.send_request_body.started",
    "http11.receive_response_headers.started",
    "http11.receive_response_body.started",
    "http11.response_closed.started",
    "http2.response_closed.started",
]


class AttemptMachine(RuleBasedStateMachine):
    """`AttemptState` against a reference model, over any sequence of events and abandonment."""

    def __init__(self) -> None:
        super().__init__()
        self.next_attempt()

    @precondition(lambda self: self.stopped)
    @rule()
    def next_attempt(self) -> None:
        self.state = AttemptState()
        self.written = self.closing = self.abandoned = self.stopped = False

    @precondition(lambda self: not self.stopped)
    @rule(event=st.sampled_from(EVENTS), connect=st.booleans())
    def event(self, event: str, connect: bool) -> None:
        request = CONNECT if connect else GET
        stops = not self.written and self.abandoned and event in STOP_POINTS
        if stops:
            with pytest.raises(Exception, match="before the request was written"):
                self.state.follow(event, {"request": request})
            self.stopped = True
            return
        self.state.follow(event, {"request": request})
        if self.written:
            self.closing = self.closing or event.endswith(".response_closed.started")
        elif event.endswith(".send_request_headers.started") and not connect:
            self.written = True

    @precondition(lambda self: not self.stopped)
    @rule()
    def abandon(self) -> None:
        self.abandoned = self.state.abandoned = True

    @invariant()
    def agrees(self) -> None:
        assert (self.state.written, self.state.closing) == (self.written, self.closing)
        # Cancelled only once its head is going out, and never while its response is released.
        assert self.state.cancellable == (self.written and not self.closing)


TestAttemptMachine = AttemptMachine.TestCase
TestAttemptMachine.settings = settings(max_examples=200, stateful_step_count=20, deadline=None)
