"""
Adaptive client-side throttling, as in Google's SRE book ("Handling Overload"): when the
upstream rejects a growing share of attempts, the client refuses a matching share itself,
without sending them, so the upstream spends its capacity on answers rather than on 503s.

Over the last `window` seconds the client counts `requests` (attempts it wanted to make,
those it refused itself included) and `accepts` (attempts the upstream did not reject as
overloaded); each attempt is refused with probability

    max(0, (requests - k * accepts) / (requests + 1))

capped at `max_rejection`, so some attempts always go: they are the probes that see the
upstream recover (without the cap, after a full outage one attempt in `requests` would go,
and the probability would take many windows to fall). grpc-go ships the same throttler.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from .._pipeline.attempts import Call, Outcome
from .._pipeline.checks import first_problem, is_ratio, is_seconds
from .._pipeline.policy import error_phase
from .._pipeline.strategy import Refusal
from ..exceptions import DeadlineExceeded, ThrottledError

__all__ = ["AdaptiveThrottle", "ThrottleCounter", "ThrottleGate", "is_accepted", "rejection"]

#: Seconds of history the throttle looks at, by default (grpc-go: 30 s; shorter reacts and
#: recovers sooner, and a service client's traffic fills 10 s well).
DEFAULT_THROTTLE_WINDOW: Final = 10.0
#: The rejection probability's cap, by default: Envoy's admission control stops at 80% too.
DEFAULT_MAX_REJECTION: Final = 0.8
#: Statuses that say "overloaded": not accepted.
OVERLOADED_STATUSES: Final = frozenset({429, 503})


@dataclass(frozen=True, slots=True)
class AdaptiveThrottle:
    """
    Refuse attempts locally in proportion to how many the upstream rejects as overloaded.

    Off unless given (`Client(throttle=AdaptiveThrottle())` or `ClientSettings.throttle`).
    An attempt is *accepted* unless it failed with a transport error of the upstream
    (connect, read and write errors and timeouts, the attempt timeout or the call's deadline
    running out during it, disconnects) or got a 429 or 503; local errors and cancelled
    attempts are not counted at all. A refused first attempt raises
    [`ThrottledError`][fastapi_retry_http.exceptions.ThrottledError] (`reason="throttle"`);
    a refused retry ends the call with its last outcome. With a shared store
    (`RedisStore`) the counts are the fleet's.

    Attributes:
        k: How many requests per accept are let through before refusing starts: with `k=2`
            the upstream sees about twice what it accepts. Lower is more aggressive (at
            least 1).
        window: Seconds of history, in 100 rolling buckets.
        max_rejection: The cap on the probability, so probes always reach an upstream that
            is down (and see it recover): at 0.8 a fifth of the attempts still go, and the
            probability falls to 0 within about 1.3 windows of a full recovery.
    """

    k: float = 2.0
    window: float = DEFAULT_THROTTLE_WINDOW
    max_rejection: float = DEFAULT_MAX_REJECTION

    def __post_init__(self) -> None:
        problem = first_problem(
            [
                ("k", math.isfinite(self.k) and self.k >= 1, "must be a number of at least 1"),
                ("window", is_seconds(self.window) and self.window <= 3600, "must be seconds in (0, 3600]"),
                ("max_rejection", is_ratio(self.max_rejection) and self.max_rejection < 1, "must be in [0, 1)"),
            ]
        )
        if problem is not None:
            raise ValueError(f"AdaptiveThrottle.{problem}")


def rejection(requests: float, accepts: float, config: AdaptiveThrottle) -> float:
    """The probability of refusing the next attempt, given the window's counts."""
    p = (requests - config.k * accepts) / (requests + 1)
    return min(config.max_rejection, p) if p > 0 else 0.0


def is_accepted(outcome: Outcome) -> bool | None:
    """Whether the upstream accepted the attempt; `None`: nothing to count (local, cancelled)."""
    if outcome.cancelled or outcome.refusal is not None:
        return None
    if outcome.response is not None:
        return outcome.response.status_code not in OVERLOADED_STATUSES
    error = outcome.error
    if isinstance(error, DeadlineExceeded):
        return False  # the upstream did not answer in time: the commonest sign of overload
    return None if error is None or error_phase(error) == "never" else False


class ThrottleCounter:
    """Requests and accepts over the last `window` seconds, in rolling buckets with running sums."""

    BUCKETS: Final = 100

    def __init__(self, config: AdaptiveThrottle) -> None:
        self.config = config
        self._width = config.window / self.BUCKETS
        self._requests = [0] * self.BUCKETS
        self._accepts = [0] * self.BUCKETS
        self.requests = 0
        self.accepts = 0
        self._current = 0
        self._bucket_end = -math.inf

    def count(self, now: float, accepted: bool) -> None:
        """Count one request at `now`, accepted or not."""
        if now >= self._bucket_end:
            self._roll(now)
        slot = self._current % self.BUCKETS
        self._requests[slot] += 1
        self.requests += 1
        if accepted:
            self._accepts[slot] += 1
            self.accepts += 1

    def totals(self, now: float) -> tuple[int, int]:
        """The requests and accepts over the window at `now`."""
        if now >= self._bucket_end:
            self._roll(now)
        return self.requests, self.accepts

    def _roll(self, now: float) -> None:
        index = int(now / self._width)
        # Empty the buckets time has passed over (all of them after a long quiet spell).
        for stale in range(max(self._current + 1, index - self.BUCKETS + 1), index + 1):
            slot = stale % self.BUCKETS
            self.requests -= self._requests[slot]
            self.accepts -= self._accepts[slot]
            self._requests[slot] = self._accepts[slot] = 0
        self._current = max(self._current, index)
        self._bucket_end = (self._current + 1) * self._width


class ThrottleGate:
    """The throttle as a strategy: refuse at the current probability, count every outcome."""

    __slots__ = ("_client", "_clock", "_random", "counter", "in_flight")

    def __init__(
        self, counter: ThrottleCounter, client: str, clock: Callable[[], float], random: Callable[[], float]
    ) -> None:
        self.counter = counter
        self._client = client
        self._clock = clock
        self._random = random
        #: Attempts admitted here and not yet recorded.
        self.in_flight = 0

    def probability(self) -> float:
        """The probability that the next attempt is refused, now."""
        requests, accepts = self.counter.totals(self._clock())
        return rejection(requests, accepts, self.counter.config)

    def admit(self, call: Call) -> Refusal | None:
        """Refuse with the current probability (a refused attempt counts as a request)."""
        now = self._clock()
        counter = self.counter
        requests, accepts = counter.totals(now)
        p = rejection(requests, accepts, counter.config)
        if p > 0 and self._random() < p:
            counter.count(now, accepted=False)
            message = f"Client {self._client!r}: throttled, the upstream rejects {p:.0%} of recent attempts."
            return Refusal("throttle", ThrottledError(message, client=self._client, reason="throttle"))
        self.in_flight += 1
        return None

    def record(self, call: Call, outcome: Outcome) -> None:
        """Count a sent attempt's outcome: accepted or not (refused later or cancelled: neither)."""
        self.in_flight -= 1
        accepted = is_accepted(outcome)
        if accepted is not None:
            self.counter.count(self._clock(), accepted)

    def status(self) -> dict[str, object]:
        """The throttle's state now, for the dashboard (JSON-able)."""
        requests, accepts = self.counter.totals(self._clock())
        config = self.counter.config
        return {
            "probability": round(rejection(requests, accepts, config), 4),
            "requests": requests,
            "accepts": accepts,
            "k": config.k,
            "window": config.window,
            "in_flight": self.in_flight,
        }
