"""
The circuit breaker against a real loopback upstream that counts requests: it opens at the
failure ratio, fails fast without I/O, lets one probe through after the break, and closes or
reopens on the probe's outcome. Time moves on the library's virtual clock, never for real.
"""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from fastapi_retry_http import CircuitBreaker, Client, ClientSettings, RetryPolicy, _clock, clients_lifespan
from fastapi_retry_http.exceptions import CircuitOpenError, ConfigurationError
from tests.servers import RawServer, Upstream

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("backend")]

BREAKER = CircuitBreaker(failure_ratio=0.5, minimum_throughput=4, window=30, break_duration=5, max_break_duration=60)
ONCE = RetryPolicy(attempts=1)


def later(seconds: float) -> None:
    """Move the library's clock on (what a real wait would do)."""
    _clock.skipped += seconds


def breaker_client(upstream: Upstream, policy: RetryPolicy = ONCE) -> Client:
    return Client(upstream.url, name="billing", retry=policy, circuit_breaker=BREAKER)


async def open_it(c: Client, upstream: Upstream) -> None:
    upstream.script("/fail", *[503] * 4)
    for _ in range(4):
        await c.get("/fail")


class TestOpening:
    async def test_it_opens_at_the_ratio_and_then_fails_fast_without_io(
        self, upstream: Upstream, caplog: pytest.LogCaptureFixture
    ) -> None:
        async with breaker_client(upstream) as c:
            upstream.script("/x", 200, 503, 200)
            for _ in range(3):
                await c.get("/x")
            assert c.circuit is not None
            assert c.circuit.state == "closed"  # 1 failure in 3: below the minimum throughput
            upstream.script("/x", 503)
            await c.get("/x")  # 2 of 4 failed: 50% trips it
            assert (c.circuit.state, c.circuit.attempts, c.circuit.failure_ratio) == ("open", 4, 0.5)
            with pytest.raises(CircuitOpenError) as caught:
                await c.get("/x")
        assert upstream.hits["/x"] == 4  # nothing sent once open
        assert caught.value.client == "billing"
        assert 3.75 <= caught.value.retry_after <= 5
        assert isinstance(caught.value, httpx.TransportError)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert warnings[0].startswith("billing: circuit closed -> open; a probe in ")

    async def test_other_4xx_never_count(self, upstream: Upstream) -> None:
        async with breaker_client(upstream) as c:
            upstream.script("/x", *[404] * 10)
            for _ in range(10):
                await c.get("/x")
            assert c.circuit is not None
            assert (c.circuit.state, c.circuit.failure_ratio) == ("closed", 0.0)

    async def test_connection_failures_count(self) -> None:
        async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            writer.transport.abort()

        async with RawServer(reset) as server, Client(server.url, retry=ONCE, circuit_breaker=BREAKER) as c:
            for _ in range(4):
                with pytest.raises(httpx.HTTPError):
                    await c.get("/x")
            with pytest.raises(CircuitOpenError):
                await c.get("/x")
        assert server.requests == 4

    async def test_a_call_retrying_when_it_opens_returns_its_last_response(self, upstream: Upstream) -> None:
        policy = RetryPolicy(attempts=10, jitter=False, deadline=None)
        async with breaker_client(upstream, policy) as c:
            upstream.script("/x", *[503] * 10)
            response = await c.get("/x")
        assert (response.status_code, upstream.hits["/x"]) == (503, 4)  # stopped when it opened

    async def test_a_cancelled_attempt_is_not_counted(self, upstream: Upstream) -> None:
        started = asyncio.Event()

        async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            started.set()
            await asyncio.sleep(10)

        async with RawServer(hang) as server, Client(server.url, retry=ONCE, circuit_breaker=BREAKER) as c:
            for _ in range(6):
                started.clear()
                call = asyncio.create_task(c.get("/x"))
                await started.wait()
                call.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await call
            assert c.circuit is not None
            assert (c.circuit.state, c.circuit.attempts) == ("closed", 0)


class TestProbing:
    async def test_after_the_break_one_probe_closes_it(
        self, upstream: Upstream, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, logger="fastapi_retry_http")
        async with breaker_client(upstream) as c:
            await open_it(c, upstream)
            later(5)
            upstream.script("/probe", 200)
            assert (await c.get("/probe")).status_code == 200
            assert c.circuit is not None
            assert (c.circuit.state, c.circuit.attempts) == ("closed", 0)
            assert (await c.get("/after")).status_code == 200
        messages = [r.getMessage() for r in caplog.records]
        assert "billing: circuit open -> half_open" in messages
        assert "billing: circuit half_open -> closed" in messages

    async def test_calls_during_the_probe_fail_fast(self, upstream: Upstream) -> None:
        gate = asyncio.Event()

        async def slow_probe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            await gate.wait()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

        async with RawServer(slow_probe) as server, Client(server.url, retry=ONCE, circuit_breaker=BREAKER) as c:
            transport = c.transport
            assert transport.breaker is not None
            state = transport.breaker.state
            state.tripped, state.opened, state.open_until = True, 1, _clock.monotonic() - 1  # open, break just over
            probe = asyncio.create_task(c.get("/probe"))
            while server.requests == 0:  # noqa: ASYNC110 (waiting for the probe to arrive)
                await asyncio.sleep(0.005)
            assert c.circuit is not None
            assert c.circuit.state == "half_open"
            with pytest.raises(CircuitOpenError):
                await c.get("/other")
            gate.set()
            assert (await probe).status_code == 200
            status = c.circuit
            assert status.state == "closed"
        assert server.requests == 1

    async def test_a_failed_probe_reopens_it_for_longer(self, upstream: Upstream) -> None:
        async with breaker_client(upstream) as c:
            await open_it(c, upstream)
            later(5)
            upstream.script("/probe", 503)
            assert (await c.get("/probe")).status_code == 503
            assert c.circuit is not None
            assert c.circuit.state == "open"
            assert 7.5 <= c.circuit.retry_after <= 10  # the break doubled, less up to 25% jitter
            later(5)
            with pytest.raises(CircuitOpenError):
                await c.get("/probe")
        assert upstream.hits["/probe"] == 1

    async def test_a_cancelled_probe_lets_the_next_call_probe(self, upstream: Upstream) -> None:
        started = asyncio.Event()

        async def hang_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            if n == 1:
                started.set()
                await asyncio.sleep(10)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

        async with RawServer(hang_once) as server, Client(server.url, retry=ONCE, circuit_breaker=BREAKER) as c:
            assert c.transport.breaker is not None
            state = c.transport.breaker.state
            state.tripped, state.opened, state.open_until = True, 1, _clock.monotonic() - 1
            probe = asyncio.create_task(c.get("/x"))
            await started.wait()
            probe.cancel()
            with pytest.raises(asyncio.CancelledError):
                await probe
            assert (await c.get("/x")).status_code == 200
            assert c.circuit is not None
            assert c.circuit.state == "closed"


class TestConfiguration:
    def test_off_by_default(self) -> None:
        assert Client("http://127.0.0.1:1/").circuit is None
        assert ClientSettings(base_url="http://x.internal/").circuit_breaker is None

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("failure_ratio", 1.5),
            ("failure_ratio", -0.1),
            ("minimum_throughput", 0),
            ("window", -1),
            ("break_duration", 0),
            ("max_break_duration", 1),
        ],
    )
    def test_bad_settings_fail_at_startup_naming_client_and_field(self, field: str, value: object) -> None:
        config = {"base_url": "http://x.internal/", "circuit_breaker": {field: value}}
        with pytest.raises(ConfigurationError, match=rf"'billing'.*circuit_breaker.*{field}"):
            clients_lifespan({"billing": config})

    def test_hedging_with_one_attempt_fails_at_startup(self) -> None:
        config = {"base_url": "http://x.internal/", "retry": {"attempts": 1, "hedge_after": 0.05}}
        with pytest.raises(ConfigurationError, match=r"'billing'.*retry.*hedge_after"):
            clients_lifespan({"billing": config})

    def test_an_attempt_timeout_past_the_deadline_is_refused(self) -> None:
        with pytest.raises(ValueError, match="attempt_timeout must not exceed the deadline"):
            RetryPolicy(deadline=5, attempt_timeout=10)

    def test_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from fastapi_retry_http import HttpClientsSettings

        monkeypatch.setenv("HTTP_CLIENTS__BILLING__BASE_URL", "http://x.internal/")
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__CIRCUIT_BREAKER__FAILURE_RATIO", "0.3")
        breaker = HttpClientsSettings().http_clients["billing"].circuit_breaker
        assert breaker == CircuitBreaker(failure_ratio=0.3)


async def test_every_state_change_reaches_the_instruments(upstream: Upstream) -> None:
    from fastapi_retry_http import AttemptEvent, CircuitEvent

    class Recorder:
        def __init__(self) -> None:
            self.changes: list[tuple[str, str]] = []
            self.refused: list[str | None] = []

        def on_attempt(self, event: AttemptEvent) -> None:
            self.refused.append(event.reason)

        def on_circuit(self, event: CircuitEvent) -> None:
            self.changes.append((event.previous, event.state))

    recorder = Recorder()
    async with Client(upstream.url, retry=ONCE, circuit_breaker=BREAKER, instrumentation=[recorder]) as c:
        await open_it(c, upstream)
        later(5)
        upstream.script("/probe", 503)
        await c.get("/probe")
        later(10)
        await c.get("/probe")
    assert recorder.changes == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
