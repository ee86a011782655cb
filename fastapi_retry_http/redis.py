"""
`RedisStore`: retry budgets and circuit breakers shared by every process that uses one Redis.

Clients of the same name in any number of workers and pods act as one client: one budget
computed on the fleet's traffic, one breaker, one half-open probe at a time. Needs the `redis`
extra (`pip install 'fastapi-retry-http[redis]'`).

Local first. The gates read and bump the local state (`_stores/fleet.py`), never Redis.
A background task, every `interval` (100 ms), runs one Lua script per client: it adds this
process's counts since the last run into per-bucket hash fields keyed by Redis server time,
publishes a break opened or closed here, asks for the probe lease when a call here waits for
it, and returns the fleet's totals and break, which the local state then decides with. When
Redis is down, slow or misconfigured, the local state goes on alone, exactly as with a
`MemoryStore` (one WARNING per outage, one INFO on recovery); a failed flush's counts and
changes go with the next one.

What it trusts, and what it bounds. Anything in Redis may have been written by another app
on the same prefix, an older version, or a bug, so nothing read back is obeyed as it is:
the script drops hash fields that are not counts (not a number, negative, over 10^8 in one
bucket, dated in the future, of an unknown kind) and removes keys of the wrong type; it cuts
an `open` key's TTL to `max_break_duration`, the probe lease's to the lease (at most
`break_duration`), and any TTL that is missing or longer than ours; the client bounds the
reply once more. What was dropped or cut is logged once per client (WARNING). What it does
trust: the presence of `open`/`tripped` (a break, capped as above) and a new value of the
`closed` marker (another process's probe succeeded). A writer that can set those can open
breakers for at most `max_break_duration` at a time, or close them early; give each app its
own prefix (`http_clients_redis_prefix`) and keep strangers off the Redis.

Keys: one client's keys share a Redis Cluster hash tag (`{billing}`) and every key has a TTL;
the docs' "Many workers and pods" page lists them ("Key layout and memory").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from types import TracebackType
from typing import Any, Final, Self

from ._stores.fleet import DEFAULT_PREFIX, FleetBreakerState, FleetBudgetCounter
from ._stores.fleet_quota import QUOTA_SCRIPT, FleetLimiter
from ._stores.fleet_sync import SCRIPT
from ._stores.fleet_throttle import THROTTLE_SCRIPT, FleetThrottleCounter, sync_throttle
from ._stores.redis_sync import Entry, distrust, sync
from ._stores.redis_urls import redacted as redacted  # re-exported: tests and logs use it
from ._strategies.breaker import CircuitBreaker
from ._strategies.budget import RetryBudget
from ._strategies.rate_limit import RateLimit
from ._strategies.throttle import AdaptiveThrottle

try:
    import redis.asyncio as _redis
    from redis.asyncio.retry import Retry as _Retry
    from redis.backoff import NoBackoff as _NoBackoff
except ImportError as error:  # pragma: no cover - the extra is installed in the test env
    raise ImportError(
        "fastapi_retry_http.redis needs the redis package: pip install 'fastapi-retry-http[redis]'"
    ) from error

__all__ = ["DEFAULT_PREFIX", "FLUSH_INTERVAL", "PROBE_LEASE", "REDIS_TIMEOUT", "RedisStore"]

logger: Final = logging.getLogger("fastapi_retry_http")

#: Seconds between two flushes (and refreshes) of one store: fleet counts lag by at most this.
FLUSH_INTERVAL: Final = 0.1
#: Seconds between two tries while Redis is unreachable.
OUTAGE_INTERVAL: Final = 0.5
#: Seconds Redis may take to connect or answer before the store counts it as down.
REDIS_TIMEOUT: Final = 0.05
#: The longest one process holds the fleet's probe lease (at most the breaker's break_duration).
PROBE_LEASE: Final = 5.0


class RedisStore:
    """
    Budgets and breakers shared through Redis by every process that names the same clients.

    ```python
    store = RedisStore("redis://redis.internal:6379/0")
    app = FastAPI(lifespan=clients_lifespan(settings.http_clients, store=store))
    ```

    `clients_lifespan` starts the store and closes it on shutdown; a store given to
    `Client(..., store=store)` directly is yours to open and close (`async with store:`).
    Nothing fails because of Redis: when it is unreachable, slow (over `timeout`) or the URL
    is wrong, every process goes on with its own counts, logs one WARNING per outage and one
    INFO when Redis is back, and reconnects by itself. Each store instance keeps its own local
    view: two stores in one process share state only through Redis, as two processes do.

    Args:
        url: A redis-py URL (`redis://`, `rediss://` or `unix://`); its password is never logged.
        prefix: The start of every key, to keep apps on one Redis apart.
        interval: Seconds between two flushes of the local counts (at most 0.1 by default).
        timeout: Seconds Redis may take to connect or answer before it counts as down.
        probe_lease: Seconds one process may hold the fleet's half-open probe lease before
            another may take it; never more than the breaker's `break_duration`. A process
            with no call to probe with gives it up at its next flush.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        interval: float = FLUSH_INTERVAL,
        timeout: float = REDIS_TIMEOUT,
        probe_lease: float = PROBE_LEASE,
    ) -> None:
        for what, value in (("interval", interval), ("timeout", timeout), ("probe_lease", probe_lease)):
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"RedisStore.{what} must be a positive number of seconds")
        self._url = url
        self.prefix = prefix
        self.interval = interval
        self._timeout = timeout
        self._probe_lease = probe_lease
        self._clients: dict[str, Entry] = {}
        self._redis: Any = None
        self._script: Any = None
        self._throttle_script: Any = None
        self._quota_script: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        #: Whether the last flush reached Redis.
        self.connected = False
        self._outage_logged = False

    def __repr__(self) -> str:
        return f"RedisStore({redacted(self._url)!r}, prefix={self.prefix!r})"

    # -- the StateStore interface -------------------------------------------------------------

    def budget_counter(self, client: str, budget: RetryBudget) -> FleetBudgetCounter:
        """`client`'s budget counter: local, with the fleet's counts merged in."""
        entry = self._entry(client)
        if entry.budget is None or entry.budget.budget != budget:
            entry.budget = FleetBudgetCounter(budget)
        return entry.budget

    def breaker_state(self, client: str, breaker: CircuitBreaker) -> FleetBreakerState:
        """`client`'s breaker state: local, with the fleet's counts and break merged in."""
        entry = self._entry(client)
        if entry.breaker is None or entry.breaker.config != breaker:
            entry.breaker = FleetBreakerState(breaker)
        return entry.breaker

    def throttle_counter(self, client: str, throttle: AdaptiveThrottle) -> FleetThrottleCounter:
        """`client`'s throttle counts: local, with the fleet's merged in."""
        entry = self._entry(client)
        if entry.throttle is None or entry.throttle.config != throttle:
            entry.throttle = FleetThrottleCounter(throttle)
        return entry.throttle

    def rate_limiter(self, client: str, limit: RateLimit) -> FleetLimiter:
        """`client`'s rate limit: the fleet's slots, leased in batches; this process's share without Redis."""
        entry = self._entry(client)
        if entry.quota is None or entry.quota.config != limit:
            entry.quota = FleetLimiter(limit, f"{entry.base}:quota", self._lease)
        return entry.quota

    async def _lease(self, keys: list[str], args: list[Any]) -> Any:
        if self._redis is None:
            raise ConnectionError("the Redis store is not started")
        if self._quota_script is None:
            self._quota_script = self._redis.register_script(QUOTA_SCRIPT)
        return await self._quota_script(keys=keys, args=args)

    def _entry(self, client: str) -> Entry:
        entry = self._clients.get(client)
        if entry is None:
            entry = self._clients[client] = Entry(self.prefix, client)
        return entry

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and start flushing in the background; never fails because of Redis."""
        if self._task is not None:
            return
        self._stopping = asyncio.Event()
        try:
            self._redis = _redis.Redis.from_url(
                self._url,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                retry=_Retry(_NoBackoff(), 0),
                single_connection_client=True,
            )
            self._script = self._redis.register_script(SCRIPT)
            self._throttle_script = self._redis.register_script(THROTTLE_SCRIPT)
        except Exception as error:  # a malformed URL: the store stays local for good
            logger.warning(
                "Redis store %s cannot be used (%s); budgets and breakers use this process's counts only.",
                redacted(self._url),
                type(error).__name__,
                extra={"redis": redacted(self._url)},
            )
            self._redis = None
        else:
            await self.flush()
        self._task = asyncio.create_task(self._run(), name="fastapi_retry_http.redis")

    async def aclose(self) -> None:
        """Stop flushing (after a last flush) and disconnect."""
        task, self._task = self._task, None
        if task is None:
            return
        # No cancellation: a flush in flight ends (within its timeout) and the loop stops.
        self._stopping.set()
        await asyncio.wait({task}, timeout=5.0)
        if not task.done():  # pragma: no cover - only if redis-py ignored its own timeout
            task.cancel()
        if self._redis is not None:
            if self.connected:
                await self.flush()
            with contextlib.suppress(Exception):  # closing a broken connection
                await self._redis.aclose()
            self._redis = None
        self.connected = False
        for entry in self._clients.values():
            self._go_local(entry)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _run(self) -> None:
        while self._redis is not None:
            pause = self.interval if self.connected else max(self.interval, OUTAGE_INTERVAL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), pause)
            if self._stopping.is_set():
                return
            await self.flush()

    # -- one flush ----------------------------------------------------------------------------

    async def flush(self) -> bool:
        """Flush every client's counts and refresh its fleet view now; whether Redis answered."""
        if self._redis is None:
            return False
        try:
            for entry in list(self._clients.values()):
                await self._sync(entry)
            if not self._clients:  # nothing to flush yet: is Redis there at all?
                await self._redis.ping()
        except Exception as error:
            if self.connected or not self._outage_logged:
                logger.warning(
                    "Redis store %s unreachable (%s); budgets and breakers use this process's counts until it is back.",
                    redacted(self._url),
                    type(error).__name__,
                    extra={"redis": redacted(self._url)},
                )
                self._outage_logged = True
            self.connected = False
            for entry in self._clients.values():
                self._go_local(entry)
            return False
        if not self.connected and self._outage_logged:
            logger.info(
                "Redis store %s reachable again; budgets and breakers are shared again.",
                redacted(self._url),
                extra={"redis": redacted(self._url)},
            )
        self.connected, self._outage_logged = True, False
        return True

    @staticmethod
    def _go_local(entry: Entry) -> None:
        if entry.budget is not None:
            entry.budget.fleet = None
        if entry.breaker is not None:
            entry.breaker.go_local()
        if entry.throttle is not None:
            entry.throttle.fleet = None

    async def _sync(self, entry: Entry) -> None:
        if entry.budget is None and entry.breaker is None and entry.throttle is None:
            return  # a rate limit alone: its leases are its own round trips
        reply = await sync(entry, self._script, self.interval, self._probe_lease)
        if reply is None or reply.dropped:
            distrust(entry, redacted(self._url), self.prefix)
        if entry.throttle is not None:
            key = f"{entry.base}:throttle:{round(entry.throttle.config.window * 1000)}"
            await sync_throttle(self._throttle_script, key, entry.name, entry.throttle)
