"""Deadlines of many things in flight behind one event-loop timer: calls' attempts, reads."""

from __future__ import annotations

import asyncio
import contextvars
import math
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .._tasks import task_of

__all__ = ["Deadlines", "Expiries"]

K = TypeVar("K")


class Expiries(Generic[K]):
    """
    A deadline per key behind a single event-loop timer: `expire(key)` is called for each key
    whose deadline passes before it is discarded.

    A timer per key (what `asyncio.timeout()` or `loop.call_later` does) costs a `TimerHandle`
    pushed on the loop's heap and cleaned off it again; re-armed per request, that was most of
    a success path's timing cost (measured). Deadlines set later are mostly later, so the one
    timer, set for the earliest, is seldom moved: when it fires, it expires the keys whose
    deadline passed and re-arms for the next.
    """

    __slots__ = ("_at", "_context", "_early", "_expire", "_fired", "_loop", "_time", "_timer", "_timer_at", "discard")

    def __init__(self, expire: Callable[[K], None], early: float = 0.001) -> None:
        self._expire = expire
        # A deadline this close ahead counts as passed when the timer fires: the loop may run
        # a timer a hair before its time. A millisecond for timeouts; a hedge, whose delay can
        # be a millisecond, takes the clock's resolution (what asyncio itself allows).
        self._early = early
        self._at: dict[K, float] = {}
        #: `discard(key, None)` forgets `key`'s deadline, if it has one: the dict's own `pop`,
        #: called on every request without a Python frame of its own.
        self.discard = self._at.pop
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._loop: asyncio.AbstractEventLoop | None = None
        self._time: Callable[[], float] = time.monotonic
        # What each timer runs, and in what: built once, not per timer (the loop would copy
        # whichever caller's context armed it; the expiries need none).
        self._fired = self._fire
        self._context = contextvars.Context()

    @property
    def armed(self) -> bool:
        """Whether a timer is set on the event loop."""
        return self._timer is not None

    def set(self, key: K, seconds: float, loop: asyncio.AbstractEventLoop) -> None:
        """Expire `key` in `seconds` (from now, on `loop`) unless discarded first."""
        if loop is not self._loop:
            self._bind(loop)
        at = self._at[key] = self._time() + seconds
        if at < self._timer_at:
            self._arm(at)

    def close(self) -> None:
        """Disarm the timer and forget every deadline."""
        self._disarm()
        self._at.clear()

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Time on `loop` from now on; a timer set on another loop is cancelled."""
        self._disarm()
        self._loop = loop
        # asyncio's own loop reads `time.monotonic()` in a Python method: read it directly.
        self._time = time.monotonic if type(loop).time is asyncio.BaseEventLoop.time else loop.time

    def _disarm(self) -> None:
        """Disarm the timer, keeping the deadlines."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, math.inf

    def _arm(self, at: float) -> None:
        assert self._loop is not None
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._fired, context=self._context)

    def _fire(self) -> None:
        self._timer, self._timer_at = None, math.inf
        if not self._at:
            return
        now = self._time() + self._early
        earliest = min(self._at.values())
        if earliest > now:  # the deadline it was armed for was discarded, as most are: the next
            self._arm(earliest)
            return
        passed = [key for key, at in self._at.items() if at <= now]
        for key in passed:
            del self._at[key]
        if self._at:
            self._arm(min(self._at.values()))
        for key in passed:
            self._expire(key)


class Deadlines:
    """The deadlines of a transport's attempts in flight: each task is cancelled at its own."""

    __slots__ = ("_expiries", "fired")

    def __init__(self) -> None:
        #: Tasks this cancelled because their deadline passed.
        self.fired: set[asyncio.Task[Any]] = set()
        self._expiries: Expiries[asyncio.Task[Any]] = Expiries(self._cancel)

    @property
    def armed(self) -> bool:
        """Whether a timer is set on the event loop."""
        return self._expiries.armed

    def watch(self, seconds: float) -> asyncio.Task[Any]:
        """Cancel the current task in `seconds` unless `unwatch` comes first; returns the task."""
        loop = asyncio.get_running_loop()
        task = task_of(loop)
        assert task is not None
        self._expiries.set(task, seconds, loop)
        return task

    def unwatch(self, task: asyncio.Task[Any]) -> None:
        """Stop watching `task`."""
        self._expiries.discard(task, None)
        self.fired.discard(task)

    def close(self) -> None:
        """Disarm the timer: the transport is closed and its attempts are ending."""
        self._expiries.close()

    def _cancel(self, task: asyncio.Task[Any]) -> None:
        self.fired.add(task)
        task.cancel()
