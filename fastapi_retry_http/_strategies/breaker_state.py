"""
The circuit breaker's state machine: one client's counts, its break and its probe lease.

States and their only transitions:

- `closed` → `open` when the failure ratio over the window trips it (`count`);
- `open` → `half_open` when the break is over, on time alone: nothing has to happen, any
  reading (`phase`, `status`, an admission, a store's flush) sees it;
- `half_open`: one probe at a time (`try_probe`), held as a *lease* that expires after at
  most `break_duration`, so no path (a call cancelled in its backoff wait, an attempt refused
  by a later gate, a record that never comes) can leave the slot held;
- the probe's verdict (`settle`): an upstream success closes, an upstream failure opens
  again for a longer break, anything else (no upstream answer) only frees the slot;
- a shared store feeds in the fleet's changes through `adopt_open` and `adopt_close`.

Every change of the state as this process sees it is announced exactly once to the
listeners (the gates built on it, which tell their instruments), in order.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Literal

from .._pipeline.events import CircuitState

if TYPE_CHECKING:
    from .breaker import CircuitBreaker

__all__ = ["BreakerState", "Listener", "Verdict"]

#: What a probe's attempt says of the upstream.
Verdict = Literal["success", "failure", "no_answer"]
#: Told `(state, previous, retry_after)` at every change.
Listener = Callable[[CircuitState, CircuitState, float | None], None]


class BreakerState:
    """
    One client's breaker: outcomes over the window in ten buckets, the break, the probe.

    The `MemoryStore` keeps one per client name; a shared store keeps a subclass that adds
    the fleet's view (`_stores/fleet.py`) through the three hooks at the end.
    """

    BUCKETS: Final = 10

    def __init__(self, config: CircuitBreaker) -> None:
        self.config = config
        self._width = config.window / self.BUCKETS
        self._attempts = [0] * self.BUCKETS
        self._failures = [0] * self.BUCKETS
        self._current = 0
        #: Open or half-open (not closed).
        self.tripped = False
        #: When the break ends (monotonic), while tripped.
        self.open_until = -math.inf
        #: Times opened in a row without a successful probe (grows the break).
        self.opened = 0
        #: When the probe lease out expires; `-inf` when none is out.
        self.probe_until = -math.inf
        #: The number of the last probe lease (a stale probe's verdict is ignored).
        self.lease_number = 0
        #: The state the listeners were last told of.
        self.announced: CircuitState = "closed"
        self._listeners: list[weakref.WeakMethod[Listener]] = []

    # -- reading ------------------------------------------------------------------------------

    def phase(self, now: float) -> CircuitState:
        """The state at `now`: half-open as soon as the break is over, on time alone."""
        if not self.tripped:
            return "closed"
        self._announce(now)
        return "open" if now < self.open_until else "half_open"

    def probe_out(self, now: float) -> bool:
        """Whether a probe lease is out and unexpired."""
        return now < self.probe_until

    def retry_after(self, now: float) -> float:
        """Seconds until a probe may be let through: the break's rest, or the probe lease's."""
        return max(0.0, self.open_until - now, self.probe_until - now) if self.tripped else 0.0

    def count(self, now: float, failed: bool, random: Callable[[], float]) -> None:
        """Count one attempt that is not a probe; a failure opens it at the ratio when closed."""
        self.tally(now, failed)
        if not failed or self.tripped:
            return  # a success never opens it: no totals to add up
        attempts, failures = self.window(now)
        config = self.config
        if attempts >= config.minimum_throughput and failures >= config.failure_ratio * attempts:
            self.trip(now, random)

    def tally(self, now: float, failed: bool) -> None:
        """Count one attempt at `now` in the window."""
        self._roll(now)
        slot = self._current % self.BUCKETS
        self._attempts[slot] += 1
        self._failures[slot] += failed

    def window(self, now: float) -> tuple[int, int]:
        """The attempts and failures over the window at `now`."""
        self._roll(now)
        return sum(self._attempts), sum(self._failures)

    def reset(self) -> None:
        """Forget the window: a successful probe starts the count afresh."""
        self._attempts = [0] * self.BUCKETS
        self._failures = [0] * self.BUCKETS

    # -- transitions --------------------------------------------------------------------------

    def try_probe(self, now: float) -> int | None:
        """Half-open with no probe out: take the probe lease (its number); else `None`."""
        self._announce(now)  # open -> half_open is heard before the probe's verdict
        if now < self.open_until or now < self.probe_until or not self._may_probe(now):
            return None
        self.lease_number += 1
        self.probe_until = now + self._lease(now)
        return self.lease_number

    def settle(self, lease: int, now: float, verdict: Verdict, random: Callable[[], float]) -> bool:
        """A probe ended: close, open again, or free the slot. False for a stale lease."""
        if lease != self.lease_number or not self.tripped:
            return False  # superseded (expired and taken again, or closed/opened since)
        self.probe_until = -math.inf
        if verdict == "success":
            self.close(now)
        elif verdict == "failure":
            self.trip(now, random)
        else:
            self._released(now)
        return True

    def trip(self, now: float, random: Callable[[], float]) -> None:
        """Open (from closed, or again from half-open) for the next break, capped."""
        self.tripped = True
        self.opened += 1
        self.open_until = now + min(self.config.max_break_duration, self.config.break_for(self.opened, random()))
        self._new_lease_era()
        self._published("open")
        self._announce(now)

    def force_open(self, now: float, seconds: float) -> None:
        """An operator's order: open now for `seconds` (at most `max_break_duration`), whatever the counts."""
        reopened = self.phase(now) == "open"
        self.tripped = True
        self.opened = max(self.opened, 1)
        self.open_until = now + min(seconds, self.config.max_break_duration)
        self._new_lease_era()
        self._published("open")
        if reopened:  # a new break by order is news, though the state stays open
            self._tell("open", "open", self.open_until - now)
        self._announce(now)

    def close(self, now: float) -> None:
        """A probe here got an upstream success: close with a fresh window."""
        self._closed()
        self._published("close")
        self._announce(now)

    def adopt_open(self, now: float, until: float, streak: int) -> None:
        """Another process opened it (or it is half-open fleet-wide): open here until `until`."""
        if self.tripped and now < self.probe_until:
            return  # a probe is out here: its verdict decides
        until = min(until, now + self.config.max_break_duration)
        if not self.tripped:
            self.tripped, self.open_until = True, until
            self._new_lease_era()
        elif until > self.open_until:
            self.open_until = until
        self.opened = max(self.opened, min(streak, 64))
        self._announce(now)

    def adopt_close(self, now: float) -> None:
        """Another process's probe got an upstream success: close here too."""
        if self.tripped:
            self._closed()
            self._announce(now)

    # -- announcing ---------------------------------------------------------------------------

    def listen(self, listener: Listener) -> None:
        """Tell `listener` (a bound method, held weakly) of every change from now on."""
        self._listeners.append(weakref.WeakMethod(listener))

    def _announce(self, now: float) -> None:
        if not self.tripped:
            current: CircuitState = "closed"
        else:
            current = "open" if now < self.open_until else "half_open"
        if current == self.announced:
            return
        previous, self.announced = self.announced, current
        if previous == "closed" and current == "half_open":
            # Adopted from the fleet past its break: still told as the two changes it was.
            self._tell("open", "closed", 0.0)
            previous = "open"
        self._tell(current, previous, self.open_until - now if current == "open" else None)

    def _tell(self, current: CircuitState, previous: CircuitState, retry_after: float | None) -> None:
        listeners = [(ref, ref()) for ref in self._listeners]
        self._listeners = [ref for ref, listener in listeners if listener is not None]  # gates gone
        for _, listener in listeners:
            if listener is not None:
                listener(current, previous, retry_after)

    def _closed(self) -> None:
        self.tripped, self.open_until, self.opened = False, -math.inf, 0
        self.reset()
        self._new_lease_era()

    def _new_lease_era(self) -> None:
        # Any lease out is void: its verdict was about a state that no longer is.
        self.probe_until = -math.inf
        self.lease_number += 1

    def _roll(self, now: float) -> None:
        index = int(now / self._width)
        if index <= self._current:
            return  # still in the current bucket: most calls
        for stale in range(max(self._current + 1, index - self.BUCKETS + 1), index + 1):
            self._attempts[stale % self.BUCKETS] = 0
            self._failures[stale % self.BUCKETS] = 0
        self._current = max(self._current, index)

    # -- hooks for a shared store ---------------------------------------------------------------

    def _may_probe(self, now: float) -> bool:
        """Whether this process may probe now (a shared store asks for the fleet's lease)."""
        return True

    def _lease(self, now: float) -> float:
        """Seconds the probe lease lasts: at most the break duration."""
        return self.config.break_duration

    def _published(self, change: Literal["open", "close"]) -> None:
        """A change decided here, for a shared store to publish."""

    def _released(self, now: float) -> None:
        """A probe here ended without an upstream answer: its slot is free."""
