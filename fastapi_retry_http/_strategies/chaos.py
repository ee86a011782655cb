"""
Chaos's strategy: an interceptor, last before the network, that injects what `Chaos` asks for.

The draws come from shuffled decks (`Deck`) rather than independent coin flips: with coin
flips, 10,000 attempts at a 30% rate land outside 29-31% about one time in thirty; a deck of
100 holding exactly 30 injections never does, and the order within each deck is still random.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable
from typing import Final

import httpx

from .._pipeline.attempts import Call
from .._pipeline.send import INJECTED_EXTENSION, attempt_limit, cut_short
from ..chaos import Chaos
from ..exceptions import InjectedFault

__all__ = ["ChaosInterceptor", "Deck"]

#: Cards per deck: shares are exact over every hundred attempts.
DECK_SIZE: Final = 100
#: What the interceptor injects, by the index of its rate in the outcome deck.
FAULT, STATUS = 0, 1
KINDS: Final = ("fault", "status")


class Deck:
    """
    Draws that hit each rate exactly: after `n` full decks of `size` draws, each rate was hit
    `floor(rate * size * n)` times (one deck may lag by a hit and catch up in the next), the
    cards of each deck shuffled by `generator`.

    `draw()` gives the index of the rate hit, or -1 for none. Hits of different rates never
    fall on the same draw, so the rates must sum to at most 1.
    """

    __slots__ = ("_cards", "_dealt", "_generator", "_given", "_rates", "_size")

    def __init__(self, rates: tuple[float, ...], generator: random.Random, size: int = DECK_SIZE) -> None:
        self._rates = rates
        self._generator = generator
        self._size = size
        self._dealt = 0
        self._given = [0] * len(rates)
        self._cards: list[int] = []

    def draw(self) -> int:
        """The next card: the index of the rate hit, or -1."""
        if not self._cards:
            self._deal()
        return self._cards.pop()

    def _deal(self) -> None:
        self._dealt += 1
        cards: list[int] = []
        for index, rate in enumerate(self._rates):
            # From the running total, not a carried fraction: float errors do not add up.
            owed = math.floor(rate * self._size * self._dealt + 1e-6) - self._given[index]
            hits = min(owed, self._size - len(cards))  # rates summing to 1 may owe a full deck
            self._given[index] += hits
            cards += [index] * hits
        cards += [-1] * (self._size - len(cards))
        if cards[0] != cards[-1]:  # cards of one kind (nothing injected, at its rates) need no shuffle
            self._generator.shuffle(cards)
        self._cards = cards


class ChaosInterceptor:
    """
    Injects faults, statuses and latency into a client's attempts, at `Chaos`'s rates.

    Asked inside every attempt, after every gate, within the attempt timeout and deadline.
    """

    __slots__ = ("_clock", "_latencies", "_outcomes", "_sleep", "config", "counts", "name")

    def __init__(
        self, config: Chaos, name: str, clock: Callable[[], float], sleep: Callable[[float], Awaitable[None]]
    ) -> None:
        self.config = config
        self.name = name
        self._clock = clock
        self._sleep = sleep
        generator = random.Random(config.seed)
        self._outcomes = Deck((config.fault_rate, config.status_rate), generator)
        self._latencies = Deck((config.latency_rate,), generator)
        #: Attempts seen, and what was injected into them.
        self.counts = {"attempts": 0, "fault": 0, "status": 0, "latency": 0}

    def intercept(self, call: Call) -> Awaitable[httpx.Response | None] | None:
        """`None` (send it), or what is injected: latency, then a response or `InjectedFault`."""
        outcome = self._outcomes.draw()
        slow = self._latencies.draw() == 0 and self.config.latency > 0
        counts, request = self.counts, call.request
        counts["attempts"] += 1
        if call.attempt == 1:  # a request object sent again starts with no marks
            request.extensions.pop(INJECTED_EXTENSION, None)
        if outcome < 0 and not slow:
            return None
        kind = KINDS[outcome] if outcome >= 0 else "latency"
        counts[kind] += 1
        if slow and outcome >= 0:
            counts["latency"] += 1
        request.extensions.setdefault(INJECTED_EXTENSION, {})[call.attempt] = kind
        return self._inject(call, outcome, slow)

    async def _inject(self, call: Call, outcome: int, slow: bool) -> httpx.Response | None:
        request = call.request
        if slow:
            await self._delay(call)
        if outcome == FAULT:
            raise InjectedFault(
                f"Chaos: a fault injected into client {self.name!r}; nothing was sent.",
                request=request,
                client=self.name,
            )
        if outcome == STATUS:
            # Closed as built: the executor sets its `elapsed` (the attempt's time, latency injected included).
            return httpx.Response(self.config.status, request=request, extensions={INJECTED_EXTENSION: True})
        return None

    async def _delay(self, call: Call) -> None:
        """
        Wait the injected latency, cut where the attempt timeout or the deadline would cut it.

        With a real sleep, the attempt's own watch cancels the wait first. With a sleep that
        only records (tests, `no_sleep`), time passes virtually: the wait is cut here, with the
        same error, so a test sees what production would.
        """
        latency = self.config.latency
        limit, by_deadline = attempt_limit(call, self._clock)
        if limit is None or latency < limit:
            await self._sleep(latency)
            return
        await self._sleep(limit)
        raise cut_short(call.request, limit, by_deadline)

    def status(self) -> dict[str, object]:
        """The configuration and what was injected so far (JSON-able)."""
        config = self.config
        return {
            "fault_rate": config.fault_rate,
            "status_rate": config.status_rate,
            "status": config.status,
            "latency_rate": config.latency_rate,
            "latency": config.latency,
            "injected": dict(self.counts),
        }
