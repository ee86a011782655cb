"""Helpers of the overload tests: a virtual clock, scripted draws, a pipeline to a loopback server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from fastapi_retry_http import AttemptEvent, RetryPolicy, RetryTransport
from fastapi_retry_http._backends import default_transport
from fastapi_retry_http._pipeline.attempts import Call
from fastapi_retry_http._strategies.throttle import ThrottleGate
from tests.servers import RawServer

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


async def arrived(server: RawServer, count: int) -> None:
    """Until the server has received `count` requests (real time, a few milliseconds)."""
    async with asyncio.timeout(5):
        while server.requests < count:  # noqa: ASYNC110 - the server counts; nothing to wait on
            await asyncio.sleep(0.005)


async def never(seconds: float) -> None:
    """A wait that ends only when cancelled: a slot must come first."""
    await asyncio.Event().wait()


def call(attempt: int = 0) -> Any:
    made = Call(REQUEST, ONCE, "billing", None, False)
    made.attempt = attempt
    return made
