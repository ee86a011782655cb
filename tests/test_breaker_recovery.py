"""
The breaker never gets stuck (issue 21): a probe that never went, or went and got no upstream
answer, frees its slot and never closes the breaker; the break ends on time alone, so a
readiness check recovers without traffic; every change reaches `on_circuit` once.

Time moves on the library's virtual clock (`_clock.skipped`) or on a test clock, never for real.
"""

from __future__ import annotations

import asyncio
import ssl

import httpx
import pytest

from fastapi_retry_http import (
    AttemptEvent,
    CircuitBreaker,
    CircuitEvent,
    Client,
    MemoryStore,
    RetryPolicy,
    RetryTransport,
    _clock,
)
from fastapi_retry_http._pipeline.attempts import Call, Outcome
from fastapi_retry_http._pipeline.strategy import Refusal
from fastapi_retry_http.exceptions import CircuitOpenError, DeadlineExceeded
from tests.servers import RawServer, Upstream

pytestmark = pytest.mark.anyio

BREAKER = CircuitBreaker(failure_ratio=0.5, minimum_throughput=4, window=30, break_duration=5, max_break_duration=60)
ONCE = RetryPolicy(attempts=1)


def later(seconds: float) -> None:
    """Move the library's clock on (what a real wait would do)."""
    _clock.skipped += seconds


class Recorder:
    """An instrument that keeps every breaker change it hears."""

    def __init__(self) -> None:
        self.changes: list[tuple[str, str]] = []

    def on_attempt(self, event: AttemptEvent) -> None:
        pass

    def on_circuit(self, event: CircuitEvent) -> None:
        self.changes.append((event.previous, event.state))


class Refuser:
    """A gate after the breaker that refuses while `on` (a rate limit, a throttle...)."""

    def __init__(self) -> None:
        self.on = False

    def admit(self, call: Call) -> Refusal | None:
        error = httpx.ConnectError("refused by a later gate")
        return Refusal("custom", error) if self.on else None

    def record(self, call: Call, outcome: Outcome) -> None:
        pass


async def open_it(c: Client, upstream: Upstream) -> None:
    upstream.script("/fail", *[503] * 4)
    for _ in range(4):
        await c.get("/fail")
    assert state_of(c) == "open"


def state_of(c: Client) -> str:
    """The breaker's state as a health check reads it."""
    assert c.circuit is not None
    return c.circuit.state


async def test_the_break_ends_on_time_alone_and_readiness_recovers_without_traffic(upstream: Upstream) -> None:
    recorder = Recorder()
    async with Client(upstream.url, retry=ONCE, circuit_breaker=BREAKER, instrumentation=[recorder]) as c:
        await open_it(c, upstream)
        later(5)
        status = c.circuit  # no call: only the clock moved
        assert status is not None
        assert (status.state, status.retry_after) == ("half_open", 0.0)
        assert recorder.changes == [("closed", "open"), ("open", "half_open")]
        assert (await c.get("/ok")).status_code == 200
        assert recorder.changes[-1] == ("half_open", "closed")
    assert upstream.hits["/ok"] == 1


async def test_a_probe_refused_by_a_later_gate_frees_the_slot_and_never_closes(upstream: Upstream) -> None:
    refuser = Refuser()
    transport = RetryTransport(
        httpx.AsyncHTTPTransport(), ONCE, name="billing", circuit_breaker=BREAKER, gates=[refuser]
    )
    async with httpx.AsyncClient(transport=transport, base_url=upstream.url) as c:
        upstream.script("/fail", *[503] * 4)
        for _ in range(4):
            await c.get("/fail")
        later(5)
        refuser.on = True
        for _ in range(3):
            with pytest.raises(httpx.ConnectError, match="later gate"):
                await c.get("/ok")
        assert transport.breaker is not None
        assert transport.breaker.status().state == "half_open"  # not closed: nothing was sent
        refuser.on = False
        assert (await c.get("/ok")).status_code == 200  # the next call probes
        assert transport.breaker.status().state == "closed"
    assert upstream.hits["/ok"] == 1


async def test_a_call_cancelled_in_its_backoff_wait_never_holds_the_probe(
    upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attempt begun before the breaker opened ends after the break: its retry is the probe."""
    release = asyncio.Event()

    async def slow_then_503(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        if n == 1:
            await release.wait()
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    store, waiting = MemoryStore(), asyncio.Event()

    async def never_ends(seconds: float) -> None:
        waiting.set()
        await asyncio.Event().wait()

    retrying = RetryPolicy(attempts=2, jitter=False, deadline=None)
    async with (
        RawServer(slow_then_503) as server,
        Client(server.url, name="billing", retry=retrying, circuit_breaker=BREAKER, store=store) as slow,
        Client(server.url, name="billing", retry=ONCE, circuit_breaker=BREAKER, store=store) as c,
    ):
        call = asyncio.create_task(slow.get("/x"))
        while server.requests == 0:  # noqa: ASYNC110 (waiting for the first attempt to arrive)
            await asyncio.sleep(0.005)
        for _ in range(4):
            await c.get("/x")  # four 503s open it
        later(5)
        monkeypatch.setattr(_clock, "sleep", never_ends)
        release.set()
        await waiting.wait()  # the retry was admitted as the probe, then waits
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert state_of(c) == "half_open"
        later(5)  # the probe's lease has expired however the pipeline treated the call
        server_before = server.requests
        with pytest.raises(httpx.HTTPStatusError):
            (await c.get("/x")).raise_for_status()  # the next call probes (and fails)
        assert server.requests == server_before + 1
        assert state_of(c) == "open"


@pytest.mark.parametrize(
    "error",
    [
        DeadlineExceeded("the call's deadline"),
        httpx.PoolTimeout("no connection free"),
        httpx.RemoteProtocolError("illegal status line: b'SSH-2.0'"),
        httpx.LocalProtocolError("bad header"),
        ssl.SSLCertVerificationError("certificate verify failed"),
    ],
    ids=["deadline", "pool_timeout", "not_http", "local", "tls"],
)
async def test_a_probe_without_an_upstream_answer_frees_the_slot_and_never_closes(error: Exception) -> None:
    now = [0.0]
    answers: list[Exception | int] = [503, 503, 503, 503, error, 200]

    def handler(request: httpx.Request) -> httpx.Response:
        answer = answers.pop(0)
        if isinstance(answer, ssl.SSLError):
            raise httpx.ConnectError("TLS handshake failed") from answer
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer)

    transport = RetryTransport(httpx.MockTransport(handler), ONCE, circuit_breaker=BREAKER, clock=lambda: now[0])
    breaker = transport.breaker
    assert breaker is not None
    async with httpx.AsyncClient(transport=transport, base_url="http://upstream.test") as c:
        for _ in range(4):
            await c.get("/")
        now[0] += 5
        with pytest.raises(httpx.HTTPError):
            await c.get("/")  # the probe: no upstream answer
        assert breaker.status().state == "half_open"  # neither closed nor stuck
        assert (await c.get("/")).status_code == 200  # the next call probes at once
        assert breaker.status().state == "closed"
    assert answers == []


async def test_a_probe_with_an_upstream_failure_opens_it_again() -> None:
    now = [0.0]

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    transport = RetryTransport(httpx.MockTransport(handler), ONCE, circuit_breaker=BREAKER, clock=lambda: now[0])
    breaker = transport.breaker
    assert breaker is not None
    async with httpx.AsyncClient(transport=transport, base_url="http://upstream.test") as c:
        for _ in range(4):
            with pytest.raises(httpx.ConnectError):
                await c.get("/")
        now[0] += 5
        with pytest.raises(httpx.ConnectError):
            await c.get("/")
        assert breaker.status().state == "open"
        with pytest.raises(CircuitOpenError):
            await c.get("/")


async def test_a_probe_that_outlives_its_lease_lets_the_next_call_probe() -> None:
    """A probe is a lease of at most `break_duration`: a hung one cannot hold the slot."""
    now, hang = [0.0], asyncio.Event()
    answers = [503] * 4

    async def handler(request: httpx.Request) -> httpx.Response:
        if answers:
            return httpx.Response(answers.pop(0))
        if request.url.path == "/hang":
            await hang.wait()
        return httpx.Response(200)

    transport = RetryTransport(httpx.MockTransport(handler), ONCE, circuit_breaker=BREAKER, clock=lambda: now[0])
    breaker = transport.breaker
    assert breaker is not None
    async with httpx.AsyncClient(transport=transport, base_url="http://upstream.test") as c:
        for _ in range(4):
            await c.get("/")
        now[0] += 5
        hung = asyncio.create_task(c.get("/hang"))
        await asyncio.sleep(0)
        with pytest.raises(CircuitOpenError) as caught:
            await c.get("/")  # the probe is out
        assert 0 < caught.value.retry_after <= BREAKER.break_duration
        now[0] += BREAKER.break_duration
        assert (await c.get("/")).status_code == 200  # its lease expired: this call probed
        assert breaker.status().state == "closed"
        hang.set()
        assert (await hung).status_code == 200  # the stale probe's verdict changes nothing
        assert breaker.status().state == "closed"


def test_the_break_cap_has_a_documented_default() -> None:
    from fastapi_retry_http._strategies.breaker import DEFAULT_MAX_BREAK_DURATION

    assert CircuitBreaker().max_break_duration == DEFAULT_MAX_BREAK_DURATION == 60.0
    config = CircuitBreaker(break_duration=5, max_break_duration=20)
    assert max(config.break_for(n, 0.0) for n in range(1, 100)) == 20
