"""Deadlines of many things in flight behind one event-loop timer: calls' attempts, reads."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any, Generic, TypeVar

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

    __slots__ = ("_at", "_early", "_expire", "_loop", "_timer", "_timer_at")

    def __init__(self, expire: Callable[[K], None], early: float = 0.001) -> None:
        self._expire = expire
        # A deadline this close ahead counts as passed when the timer fires: the loop may run
        # a timer a hair before its time. A millisecond for timeouts; a hedge, whose delay can
        # be a millisecond, takes the clock's resolution (what asyncio itself allows).
        self._early = early
        self._at: dict[K, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def armed(self) -> bool:
        """Whether a timer is set on the event loop."""
        return self._timer is not None

    def set(self, key: K, seconds: float, loop: asyncio.AbstractEventLoop) -> None:
        """Expire `key` in `seconds` (from now, on `loop`) unless discarded first."""
        at = self._at[key] = loop.time() + seconds
        if at < self._timer_at or loop is not self._loop:
            self._arm(loop, at)

    def discard(self, key: K) -> None:
        """Forget `key`'s deadline, if it has one."""
        self._at.pop(key, None)

    def close(self) -> None:
        """Disarm the timer and forget every deadline."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, math.inf
        self._at.clear()

    def _arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._loop, self._timer_at = loop, at
        self._timer = loop.call_at(at, self._fire)

    def _fire(self) -> None:
        assert self._loop is not None
        self._timer, self._timer_at = None, math.inf
        now = self._loop.time() + self._early
        passed = [key for key, at in self._at.items() if at <= now]
        for key in passed:
            del self._at[key]
        if self._at:
            self._arm(self._loop, min(self._at.values()))
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
        task = asyncio.current_task(loop)
        assert task is not None
        self._expiries.set(task, seconds, loop)
        return task

    def unwatch(self, task: asyncio.Task[Any]) -> None:
        """Stop watching `task`."""
        self._expiries.discard(task)
        self.fired.discard(task)

    def close(self) -> None:
        """Disarm the timer: the transport is closed and its attempts are ending."""
        self._expiries.close()

    def _cancel(self, task: asyncio.Task[Any]) -> None:
        self.fired.add(task)
        task.cancel()
