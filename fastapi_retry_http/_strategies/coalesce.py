"""
Request coalescing: concurrent identical GET and HEAD calls share one upstream call.

A strategy around the call, inside the cache: the first caller's call (with its retries,
breaker, budget, everything) runs as a task of its own, and every identical call that
arrives while it is in flight waits for that task instead of sending. "Identical" is
strict: the method, the URL, every request header (so a different `Authorization` is
never merged), the per-request retry policy and timeout.

The shared task is shielded from its callers: one caller going away does not cancel it
while another still waits; when the last one has gone it is cancelled. Each caller gets
its own `httpx.Response` (same status, headers and body); a failure is raised to each.
Streams (`Client.stream()`) are never coalesced: a body read as it arrives cannot be
handed to two readers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import httpx

from .._pipeline.attempts import call_options
from .._pipeline.httpx_parts import read_response
from .._pipeline.strategy import Proceed

__all__ = ["COALESCED_EXTENSION", "MAX_WAITING", "Coalescer"]

#: `response.extensions` key: `True` on the response of a call that joined another's.
COALESCED_EXTENSION: Final = "fastapi_retry_http.coalesced"

#: Callers waiting on shared calls at once, per client, at most. Past it a call is neither
#: refused nor queued: it is sent on its own, uncoalesced (counted as `overflowed`), so the
#: bound caps the memory coalescing holds without ever adding a failure or a wait.
MAX_WAITING: Final = 10_000

#: Methods whose concurrent identical calls may share one answer (safe, and without a body).
COALESCED_METHODS: Final = frozenset({"GET", "HEAD"})


@dataclass(slots=True, eq=False)
class _Flight:
    """One shared call in flight and how many callers wait for it."""

    task: asyncio.Task[httpx.Response]
    waiting: int = 0
    #: Whether the response object itself has been handed out (the others get copies).
    handed: bool = False


def coalescing_key(request: httpx.Request) -> tuple[Any, ...]:
    """What two calls must share to share one upstream call."""
    timeout = request.extensions.get("timeout")
    frozen_timeout = tuple(sorted(timeout.items())) if isinstance(timeout, Mapping) else timeout
    policy = call_options(request).retry
    # The policy by identity: the object is alive while its flight is (the leader holds it).
    return (request.method, str(request.url), tuple(request.headers.raw), frozen_timeout, id(policy))


class Coalescer:
    """The coalescing strategy of one client (`Client(coalesce=True)`)."""

    def __init__(self, name: str, max_waiting: int = MAX_WAITING) -> None:
        self.name = name
        self.max_waiting = max_waiting
        self._flights: dict[tuple[Any, ...], _Flight] = {}
        self._waiting = 0
        #: Calls that joined another's instead of sending.
        self.joined = 0
        #: Calls sent on their own because `max_waiting` callers were already waiting.
        self.overflowed = 0

    async def around(self, request: httpx.Request, proceed: Proceed) -> httpx.Response:
        """Send `request`, or wait for the identical call in flight and take a copy of its answer."""
        if request.method not in COALESCED_METHODS or call_options(request).stream:
            return await proceed(request)
        if self._waiting >= self.max_waiting:
            self.overflowed += 1
            return await proceed(request)
        key = coalescing_key(request)
        flight = self._flights.get(key)
        joined = flight is not None
        if flight is None:
            flight = _Flight(asyncio.ensure_future(proceed(request)))
            self._flights[key] = flight
            flight.task.add_done_callback(lambda _: self._land(key, flight))
        else:
            self.joined += 1
        flight.waiting += 1
        self._waiting += 1
        try:
            response = await asyncio.shield(flight.task)
        except asyncio.CancelledError:
            if flight.waiting == 1 and not flight.task.done():
                # The last caller went away: nobody wants the answer any more.
                flight.task.cancel()
                self._land(key, flight)
            raise
        finally:
            flight.waiting -= 1
            self._waiting -= 1
        return self._hand(flight, response, request, joined)

    def _land(self, key: tuple[Any, ...], flight: _Flight) -> None:
        """The shared call is over (or abandoned): later calls start a new one."""
        if self._flights.get(key) is flight:
            del self._flights[key]

    @staticmethod
    def _hand(flight: _Flight, response: httpx.Response, request: httpx.Request, joined: bool) -> httpx.Response:
        """Each caller's own response object: the first taker gets the original, the others copies."""
        if not flight.handed:
            flight.handed = True
            if joined:
                response.extensions[COALESCED_EXTENSION] = True
            return response
        extensions = {name: value for name, value in response.extensions.items() if name != COALESCED_EXTENSION}
        extensions.update({COALESCED_EXTENSION: True} if joined else {})
        copy = read_response(response.status_code, response.headers.raw, response.content, request, extensions)
        with contextlib.suppress(RuntimeError):  # a response without `elapsed` (a test's own)
            copy.elapsed = response.elapsed
        return copy

    def status(self) -> dict[str, object]:
        """The coalescer now: shared calls in flight, callers waiting, counts since start."""
        return {
            "in_flight": len(self._flights),
            "waiting": self._waiting,
            "max_waiting": self.max_waiting,
            "joined": self.joined,
            "overflowed": self.overflowed,
        }
