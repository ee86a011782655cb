"""
An admission that waits: a strategy (a rate limit, a concurrency limit) lets an attempt go
once it has its slot; the strategies after it are asked only then.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

from .attempts import Call, Outcome
from .strategy import Refusal

__all__ = ["Waiting"]


class Waiting:
    """An admission in progress: strategy `index` waits for a slot, the later ones are still to ask."""

    __slots__ = ("_admit", "_call", "_index", "_release", "_waiting", "started")

    def __init__(
        self,
        admit: Callable[[Call, int], Refusal | Waiting | None],
        release: Callable[[Call, int, Outcome], None],
        call: Call,
        index: int,
        waiting: Awaitable[Refusal | None],
    ) -> None:
        self._admit, self._release = admit, release
        self._call, self._index, self._waiting = call, index, waiting
        #: Whether `wait()` began: if not, and the call goes away, `abandon()` releases the slot.
        self.started = False

    async def wait(self) -> Refusal | None:
        """Wait for the slot, then ask the strategies after it."""
        call, index = self._call, self._index
        self.started = True
        try:
            answer = await self._waiting
        except asyncio.CancelledError:
            # The waiting strategy hears it too: it gives its slot back.
            self._release(call, index + 1, Outcome(cancelled=True, attempt=call.attempt + 1))
            raise
        if answer is not None:
            self._release(call, index, Outcome(refusal=answer, attempt=call.attempt + 1))
            return answer
        rest = self._admit(call, index + 1)
        return rest if rest is None or isinstance(rest, Refusal) else await rest.wait()

    def abandon(self) -> None:
        """The call went away before waiting: every strategy that admitted it hears so."""
        if inspect.iscoroutine(self._waiting):
            self._waiting.close()
        self._release(self._call, self._index + 1, Outcome(cancelled=True, attempt=self._call.attempt + 1))
