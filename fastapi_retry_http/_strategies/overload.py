"""`client.overload`: the throttle's and the concurrency limit's state, in one small report."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .concurrency import ConcurrencyGate, ConcurrencyLimit
from .throttle import AdaptiveThrottle, ThrottleGate

__all__ = ["AdaptiveThrottle", "ConcurrencyLimit", "OverloadStatus", "overload_status"]


@dataclass(frozen=True, slots=True)
class OverloadStatus:
    """
    How a client is holding back from an overloaded upstream, now (`client.overload`).

    Attributes:
        throttle_probability: The chance that the next attempt is refused by the throttle
            (0.0 without one).
        limit: The concurrency limit in force, or `None` without one.
        in_flight: Attempts of the client in flight, as the concurrency limit (or else the
            throttle) counts them; 0 when the client has neither.
    """

    throttle_probability: float
    limit: int | None
    in_flight: int


def overload_status(strategies: Mapping[str, Any]) -> OverloadStatus:
    """The report for a client whose built strategies are `strategies` (by option name)."""
    throttle: ThrottleGate | None = strategies.get("throttle")
    concurrency: ConcurrencyGate | None = strategies.get("concurrency")
    probability = 0.0 if throttle is None else throttle.probability()
    if concurrency is not None:
        return OverloadStatus(probability, concurrency.current, concurrency.in_flight)
    return OverloadStatus(probability, None, 0 if throttle is None else throttle.in_flight)
