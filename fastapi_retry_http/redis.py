"""
`RedisStore`: retry budgets and circuit breakers shared by every process that uses one Redis.

Clients of the same name in any number of workers and pods act as one client: one budget
computed on the fleet's traffic, one breaker, one half-open probe at a time. Needs the `redis`
extra (`pip install 'fastapi-retry-http[redis]'`).

Local first. The gates read and bump the local state (`_stores/fleet.py`), never Redis.
A background task, every `interval` (100 ms), runs one Lua script per client: it adds this
process's counts since the last run into per-bucket hash fields keyed by Redis server time,
publishes a break opened or closed here, takes the probe lease when a break is over, and
returns the fleet's totals and break, which the local state then decides with. When Redis is
down, slow or misconfigured, the local state simply goes on alone (one WARNING per outage,
one INFO on recovery) and the task keeps trying.

Keys, all with a TTL, for a client `billing` and the default prefix (`{...}` is a Redis
Cluster hash tag: one client's keys sit on one slot):

- `fastapi_retry_http:{billing}:budget:<window ms>` hash `r<bucket>`/`t<bucket>`: requests
  and retries per tenth of the window; expires after two windows without a flush.
- `fastapi_retry_http:{billing}:breaker:<window ms>` hash `a<bucket>`/`f<bucket>`: attempts
  and failures, likewise.
- `fastapi_retry_http:{billing}:open`: present while the breaker is open (its PTTL is the
  rest of the break; expiry is the move to half-open); value: times opened in a row.
- `fastapi_retry_http:{billing}:tripped`: present from opening until a probe succeeds.
- `fastapi_retry_http:{billing}:probe`: the half-open probe lease (`SET NX PX`), by token.
- `fastapi_retry_http:{billing}:quota` hash and `...:quota:processes` sorted set: the rate
  limit's GCRA and the processes seen lately (`_stores/fleet_quota.py`; leased on demand, not
  flushed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import urllib.parse
from types import TracebackType
from typing import Any, Final, Self

from ._stores.fleet import FleetBreakerState, FleetBudgetCounter
from ._stores.fleet_quota import QUOTA_SCRIPT, FleetLimiter
from ._stores.fleet_sync import SCRIPT, adopt, breaker_args, bucket_ms
from ._strategies.breaker import CircuitBreaker
from ._strategies.budget import RetryBudget
from ._strategies.rate_limit import RateLimit

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

#: The start of every key.
DEFAULT_PREFIX: Final = "fastapi_retry_http"
#: Seconds between two flushes (and refreshes) of one store: fleet counts lag by at most this.
FLUSH_INTERVAL: Final = 0.1
#: Seconds between two tries while Redis is unreachable.
OUTAGE_INTERVAL: Final = 0.5
#: Seconds Redis may take to connect or answer before the store counts it as down.
REDIS_TIMEOUT: Final = 0.05
#: Seconds one process holds the half-open probe lease (others keep the breaker open meanwhile).
PROBE_LEASE: Final = 5.0


def redacted(url: str) -> str:
    """`url` without its user and password, for log lines."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparsable Redis URL>"
    userinfo = "***@" if "@" in parts.netloc else ""
    return urllib.parse.urlunsplit((parts.scheme, f"{userinfo}{host}{port}", parts.path, "", ""))


class _Client:
    """One client name's local state and Redis keys."""

    def __init__(self, prefix: str, name: str) -> None:
        self.name = name
        self.base = f"{prefix}:{{{name}}}"
        self.budget: FleetBudgetCounter | None = None
        self.breaker: FleetBreakerState | None = None
        self.quota: FleetLimiter | None = None


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
        probe_lease: Seconds one process may hold the half-open probe before another may take it.
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
        self._clients: dict[str, _Client] = {}
        self._redis: Any = None
        self._script: Any = None
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

    def _entry(self, client: str) -> _Client:
        entry = self._clients.get(client)
        if entry is None:
            entry = self._clients[client] = _Client(self.prefix, client)
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
    def _go_local(entry: _Client) -> None:
        if entry.budget is not None:
            entry.budget.fleet = None
        if entry.breaker is not None:
            entry.breaker.fleet = None
            entry.breaker.lease = False

    async def _sync(self, entry: _Client) -> None:
        budget, breaker = entry.budget, entry.breaker
        if budget is None and breaker is None:
            return  # a rate limit alone: its leases are its own round trips
        requests, retries = budget.take() if budget is not None else (0, 0)
        budget_ms = bucket_ms(budget.window) if budget is not None else 0
        args: list[Any] = [budget_ms, requests, retries]
        if breaker is None:
            args += [0, 0, 0, "", 0, 0, "", "0", 1, 1]
        else:
            unpublished = breaker.closed_here, breaker.seen_open_until
            args += breaker_args(breaker, self.interval, self._probe_lease)
        base = entry.base
        keys = [f"{base}:budget:{budget_ms * 10}", f"{base}:breaker:{args[3] * 10}"]
        keys += [f"{base}:open", f"{base}:tripped", f"{base}:probe"]
        try:
            reply = await self._script(keys=keys, args=args)
        except BaseException:
            if breaker is not None:  # what this flush was to publish is published by the next one
                breaker.closed_here, breaker.seen_open_until = unpublished
            raise
        req, ret, att, fail, open_ms, streak, granted, probe_ms = (int(x) for x in reply)
        if budget is not None:
            budget.fleet = (req, ret)
        if breaker is not None:
            breaker.fleet = (att, fail)
            adopt(entry.name, breaker, self.interval, open_ms, streak, bool(granted), probe_ms)
