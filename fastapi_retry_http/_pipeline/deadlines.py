"""The overall deadline of calls in flight, enforced with one event-loop timer per transport."""

from __future__ import annotations

import asyncio
import math
from typing import Any

__all__ = ["Deadlines"]


class Deadlines:
    """
    The deadlines of a transport's attempts in flight, behind a single event-loop timer.

    A timer per attempt (what `asyncio.timeout()` does) cost 4-5 us per request with a few
    dozen requests in flight, most of the retry layer's cost on the success path (measured):
    each one is pushed on and cleaned off the loop's heap. Attempts started later have later
    deadlines, so one timer set for the earliest deadline is seldom moved: when it fires, it
    cancels the tasks whose deadline passed and re-arms for the next.
    """

    __slots__ = ("_loop", "_timer", "_timer_at", "_watched", "fired")

    def __init__(self) -> None:
        self._watched: dict[asyncio.Task[Any], float] = {}
        #: Tasks this cancelled because their deadline passed.
        self.fired: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def armed(self) -> bool:
        """Whether a timer is set on the event loop."""
        return self._timer is not None

    def watch(self, seconds: float) -> asyncio.Task[Any]:
        """Cancel the current task in `seconds` unless `unwatch` comes first; returns the task."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        assert task is not None
        at = self._watched[task] = loop.time() + seconds
        if at < self._timer_at or loop is not self._loop:
            self._arm(loop, at)
        return task

    def unwatch(self, task: asyncio.Task[Any]) -> None:
        """Stop watching `task`."""
        del self._watched[task]
        self.fired.discard(task)

    def close(self) -> None:
        """Disarm the timer: the transport is closed and its attempts are ending."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, math.inf

    def _arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._loop, self._timer_at = loop, at
        self._timer = loop.call_at(at, self._fire)

    def _fire(self) -> None:
        assert self._loop is not None
        self._timer, self._timer_at = None, math.inf
        now = self._loop.time() + 0.001  # the loop may run a timer a hair before its time
        for task, at in self._watched.items():
            if at <= now and task not in self.fired:
                self.fired.add(task)
                task.cancel()
        pending = [at for task, at in self._watched.items() if task not in self.fired]
        if pending:
            self._arm(self._loop, min(pending))
