"""
The rate limit: every attempt of a client (first, retry or hedge) takes a slot of its quota,
and the upstream's own word about its quota (`Retry-After`, `RateLimit`, `X-RateLimit-*`)
moves the slots later.

A call learns at once whether its slot is within `max_wait` and its deadline: if not, it is
refused without waiting (a first attempt raises `RateLimitedError`, a retry is not sent);
if so, it waits for the slot (with the transport's sleep: tests never wait). Slots come from a
`Limiter`: the process's own `Schedule` (`slots.py`), or the fleet's, leased from Redis in
batches (`_stores/fleet_quota.py`).
"""

from __future__ import annotations

import enum
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Protocol

import httpx

from .._pipeline.attempts import Call, Outcome
from .._pipeline.checks import first_problem, is_count, is_seconds
from .._pipeline.strategy import Admission, Refusal
from ..exceptions import ConfigurationError, RateLimitedError
from .ratelimit_headers import read, says_anything

__all__ = ["DEFAULT_MAX_WAIT", "MAX_PAUSE", "NEED_LEASE", "Limiter", "RateLimit", "RateLimitGate"]

logger: Final = logging.getLogger("fastapi_retry_http")

#: Seconds a call may wait for its slot by default: resilience4j's rate limiter timeout.
DEFAULT_MAX_WAIT: Final = 5.0
#: The longest pause a server's `Retry-After` is obeyed for, in seconds (a value read from the
#: network is untrusted: one bad header must not stop a client for a day).
MAX_PAUSE: Final = 300.0
#: Leases one attempt may wait for before it is refused: a safety net only. Each lease is one round
#: trip; the attempts of this process that asked at the same time share it, and each lease lets
#: at least one of them go, so an attempt is refused by time (`max_wait`, its deadline) first.
LEASES_PER_ATTEMPT: Final = 100
#: Seconds a slot may have passed and still be used (a retry whose backoff outlasted its slot
#: by more takes a new one).
LATE: Final = 0.001
#: What a slot is (a constant: `float | int` in an `isinstance` builds a union every time).
_NUMBER: Final = (float, int)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """
    At most `rate` attempts per `per` seconds for the client (fleet-wide with a shared store),
    and the upstream's own quota signals obeyed.

    `RateLimit(rate=100, per=60)` lets 100 attempts start per minute, evenly spaced (one every
    0.6 s), plus `burst` more at once after a quiet spell; over any window of `per` seconds at
    most `rate + burst` start. Every attempt takes a slot: retries and hedges too.

    Attributes:
        rate: Attempts per `per` seconds; `None` to follow the server's headers alone.
        per: The seconds `rate` is counted over.
        burst: Extra attempts that may start at once after a quiet spell (`None`: 0).
        max_wait: The longest a call waits for its slot; a later slot is refused at once.
        follow_server: Obey `Retry-After` (on 429 and 503), `RateLimit`/`RateLimit-Policy`
            (the IETF draft) and `X-RateLimit-Limit/-Remaining/-Reset`.
    """

    rate: float | None = None
    per: float = 1.0
    burst: int | None = None
    max_wait: float = DEFAULT_MAX_WAIT
    follow_server: bool = True

    def __post_init__(self) -> None:
        problem = first_problem(
            [
                ("rate", is_seconds(self.rate, none=True), "must be a positive, finite number (or None)"),
                ("per", is_seconds(self.per), "must be a positive number of seconds"),
                ("burst", self.burst is None or is_count(self.burst, 0), "must be an integer, zero or more"),
                ("max_wait", is_seconds(self.max_wait), "must be a positive number of seconds"),
                ("rate", self.rate is not None or self.follow_server is True, "is needed when follow_server is off"),
            ]
        )
        if problem is not None:
            raise ConfigurationError(f"RateLimit.{problem}")

    @property
    def interval(self) -> float | None:
        """Seconds between two slots of the configured rate; `None` without a rate."""
        return None if self.rate is None else self.per / self.rate


class _NeedLease(enum.Enum):
    # An enum member, so that `slot is NEED_LEASE` narrows the type (no `isinstance` on the path).
    NEED_LEASE = "NEED_LEASE"

    def __repr__(self) -> str:
        return "NEED_LEASE"


#: What a fleet limiter's `take` answers when it has no slot at hand and must ask Redis.
NEED_LEASE: Final = _NeedLease.NEED_LEASE


class Limiter(Protocol):
    """Where the slots come from: this process's schedule, or the fleet's."""

    def take(self, now: float, latest: float) -> float | _NeedLease | None:
        """A slot at or after `now`, or `None` if none by `latest`; `NEED_LEASE`: call `refill`."""

    async def refill(self, now: float, latest: float) -> None:
        """Get slots from the fleet (a Redis round trip); never fails."""

    def earliest(self, now: float) -> float:
        """The slot an attempt would get now (nothing taken)."""

    def valid(self, slot: float) -> bool:
        """Whether a slot taken earlier may still be used (a pause may have come since)."""

    def give_back(self, slot: float, now: float) -> None:
        """A taken slot that will not be used."""

    def heed(self, pause: float | None, left: int | None, reset: float | None, pace: float | None) -> None:
        """The server's word, in this process's clock: pause until, left before reset, pace."""

    def status(self, now: float) -> dict[str, object]:
        """The limiter's state now (JSON-able)."""


class RateLimitGate:
    """The rate limit as a per-attempt strategy: a slot for every attempt, the server heeded."""

    def __init__(
        self,
        config: RateLimit,
        limiter: Limiter,
        client: str,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self.config = config
        self.limiter = limiter
        self._client = client
        self._clock = clock
        self._sleep = sleep
        #: Attempts admitted and not yet recorded (the server has not counted them yet).
        self._outstanding = 0
        self._waiting = 0
        self._max_wait, self._follow = config.max_wait, config.follow_server
        self._warned = False

    def admit(self, call: Call) -> Admission:
        """A slot now (go), ahead (wait for it), or too late (refuse at once)."""
        now = self._clock()
        latest = now + self._max_wait
        deadline = call.deadline_at
        if deadline is not None and deadline < latest:
            latest = deadline
        slot = self.limiter.take(now, latest)
        if slot is NEED_LEASE:
            return self._leased(call, latest)
        if slot is None:
            return self._refusal(now)
        self._outstanding += 1
        if slot <= now:
            return None  # nearly always: a slot that has passed is never given back, so it is not kept
        self._keep(call, slot)
        return self._wait(call, slot)

    def record(self, call: Call, outcome: Outcome) -> None:
        """Give back the slot of an attempt cancelled before its time; heed the server's answer."""
        if self._outstanding:  # `record` comes once for every attempt admitted (never below zero)
            self._outstanding -= 1
        held = None if call.state is None else call.state.get(self)
        if held:
            self._release(held, outcome.cancelled)
        response = outcome.response
        if self._follow and response is not None and says_anything(response):
            self._heed(response, self._clock())

    def in_flight(self) -> int:
        """Attempts admitted and not yet over (waiting for their slot included)."""
        return self._outstanding

    def status(self) -> dict[str, object]:
        """The limit and its state now, for the operators' dashboard."""
        config, now = self.config, self._clock()
        return {
            "rate": config.rate,
            "per": config.per,
            "burst": config.burst or 0,
            "max_wait": config.max_wait,
            "follow_server": config.follow_server,
            "waiting": self._waiting,
            "in_flight": self._outstanding,
            **self.limiter.status(now),
        }

    def _keep(self, call: Call, slot: float) -> None:
        """A slot still ahead, kept on the call until its attempt ends: it goes back if cancelled."""
        if call.state is None:
            call.state = {}
        held = call.state.setdefault(self, [])
        assert isinstance(held, list)
        held.append(slot)

    def _release(self, held: object, cancelled: bool) -> None:
        """
        An attempt of a call that had slots ahead ended. Cancelled: the latest still ahead goes
        back (a waiter's; the attempts of a call are cancelled together, so whose it was does not
        matter). Otherwise the ones that passed are forgotten: they were used, or lost.
        """
        assert isinstance(held, list)
        now = self._clock()
        if cancelled:
            self.limiter.give_back(held.pop(), now)
        else:
            held[:] = [slot for slot in held if slot > now]

    async def _leased(self, call: Call, latest: float) -> Refusal | None:
        """No slot at hand: ask the fleet (one round trip for a batch), then take one."""
        for tries in range(LEASES_PER_ATTEMPT + 1):
            now = self._clock()
            slot = self.limiter.take(now, latest)
            if slot is None:
                return self._refusal(now)
            if slot is not NEED_LEASE:
                break
            if tries == LEASES_PER_ATTEMPT or now >= latest or self.limiter.earliest(now) > latest:
                return self._refusal(now)
            await self.limiter.refill(now, latest)
        assert isinstance(slot, _NUMBER)
        self._outstanding += 1
        if slot > now:
            self._keep(call, slot)
            await self._wait(call, slot)
        return None

    async def _wait(self, call: Call, slot: float) -> None:
        """Sleep until the slot; take a new one if it passed (a long backoff) or a pause came."""
        self._waiting += 1
        try:
            while True:
                now = self._clock()
                if slot >= now - LATE and self.limiter.valid(slot):
                    if slot <= now:
                        return None
                    await self._sleep(slot - now)
                    if self.limiter.valid(slot):
                        return None
                slot = await self._retake(call, slot)
        finally:
            self._waiting -= 1

    async def _retake(self, call: Call, old: float) -> float:
        assert call.state is not None
        now = self._clock()
        self.limiter.give_back(old, now)
        slot = self.limiter.take(now, math.inf)
        while slot is NEED_LEASE:
            await self.limiter.refill(now, math.inf)
            now = self._clock()
            slot = self.limiter.take(now, math.inf)
        assert slot is not None  # nothing is later than `math.inf`
        held = call.state[self]
        assert isinstance(held, list)
        if old in held:  # an attempt of the call that ended may have forgotten it, as passed
            held.remove(old)
        if slot > now:
            held.append(slot)
        return slot

    def _refusal(self, now: float) -> Refusal:
        wait = max(0.0, self.limiter.earliest(now) - now)
        message = f"Client {self._client!r}: no rate-limit slot within max_wait or the deadline; retry in {wait:.1f}s."
        return Refusal("rate_limit", RateLimitedError(message, client=self._client, retry_after=wait))

    def _heed(self, response: httpx.Response, now: float) -> None:
        word = read(response, time.time())
        if word.malformed is not None and not self._warned:
            self._warned = True  # once per client: a misbehaving upstream says it on every response
            logger.warning(
                "%s: unreadable %s header from the upstream; ignored.",
                self._client,
                word.malformed,
                extra={"client": self._client, "header": word.malformed},
            )
        pause = None if word.pause is None else now + min(word.pause, MAX_PAUSE)
        left, reset = word.left, word.reset
        if pause is not None or reset is None:
            left = None  # Retry-After takes precedence; a count without a reset says nothing
        else:
            left = None if left is None else left - self._outstanding
            reset = now + reset
        pace = None if word.quota is None or not word.window else word.window / word.quota
        self.limiter.heed(pause, left, reset, pace)
