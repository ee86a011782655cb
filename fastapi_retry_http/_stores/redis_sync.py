"""
One client's flush to Redis: its keys, its counts and changes out, the fleet's answer in.
`fastapi_retry_http.redis` calls it for each client name; the Lua script and the rules of
adoption are in `fleet_sync`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from .. import _clock
from .fleet import FleetBreakerState, FleetBudgetCounter
from .fleet_quota import FleetLimiter
from .fleet_sync import Reply, adopt, breaker_args, bucket_ms, lease_ms, max_break_ms, parse_reply
from .fleet_throttle import FleetThrottleCounter

__all__ = ["Entry", "Script", "distrust", "sync"]

logger: Final = logging.getLogger("fastapi_retry_http")

#: The registered Lua script: awaited with `keys=` and `args=`.
Script = Callable[..., Awaitable[Any]]


class Entry:
    """One client name's local state and Redis keys."""

    def __init__(self, prefix: str, name: str) -> None:
        self.name = name
        self.base = f"{prefix}:{{{name}}}"
        self.budget: FleetBudgetCounter | None = None
        self.breaker: FleetBreakerState | None = None
        self.throttle: FleetThrottleCounter | None = None
        self.quota: FleetLimiter | None = None
        #: Whether a warning about values not written by this library was logged.
        self.warned = False


async def sync(entry: Entry, script: Script, interval: float, lease: float) -> Reply | None:
    """
    Flush `entry`'s counts and changes, take in the fleet's answer; the answer, `None` if unusable.

    Nothing of a flush that fails is lost: its counts and its change go with the next one.
    """
    budget, breaker = entry.budget, entry.breaker
    now = _clock.monotonic()
    taken = budget.take() if budget is not None else (0, 0)
    budget_ms = bucket_ms(budget.window) if budget is not None else 0
    args: list[Any] = [budget_ms, *taken]
    if breaker is None:
        args += [0, 0, 0, "", 0, 1, "", "0", 1, 1, "0", 1, ""]
    else:
        decided, publish, attempts = breaker.decided, breaker.publish, breaker.pending_attempts
        failures = breaker.pending_failures
        args += breaker_args(breaker, now, lease)
    base = entry.base
    keys = [f"{base}:budget:{budget_ms * 10}", f"{base}:breaker:{args[3] * 10}"]
    keys += [f"{base}:open", f"{base}:tripped", f"{base}:probe", f"{base}:closed"]
    try:
        raw = await script(keys=keys, args=args)
    except BaseException:
        # Nothing of this flush is lost: its counts and its change go with the next one.
        if budget is not None:
            budget.untake(taken)
        if breaker is not None:
            breaker.untake((attempts, failures))
            if breaker.decided == decided:
                breaker.publish = publish
        raise
    if breaker is None:
        reply = parse_reply(raw, 1, 1)
    else:
        reply = parse_reply(raw, max_break_ms(breaker), lease_ms(breaker, lease))
    if reply is None:
        return None
    if budget is not None:
        budget.fleet = (reply.requests, reply.retries)
    if breaker is not None:
        breaker.fleet = (reply.attempts, reply.failures)
        adopt(breaker, _clock.monotonic(), reply, decided, interval, lease)
    return reply


def distrust(entry: Entry, url: str, prefix: str) -> None:
    """Values in Redis that are not ours were dropped or cut: say so once per client."""
    if entry.warned:
        return
    entry.warned = True  # once per client: the values are dropped at every flush
    logger.warning(
        "%s: Redis store %s held values this library did not write (not numbers, negative, too large, dated "
        "in the future, or a break past max_break_duration); they were ignored. Another app on prefix %r?",
        entry.name,
        url,
        prefix,
        extra={"client": entry.name, "redis": url},
    )
