"""
One process of a fleet, for the multi-process tests and the bench: a `Client` sharing a
`RedisStore` (or not), calling a loopback upstream a fixed number of times, at a fixed pace.
Run with `multiprocessing` (spawn): the function is importable and takes plain values.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi_retry_http import Client, MemoryStore, RetryBudget, RetryPolicy
from fastapi_retry_http._stores.memory import StateStore
from fastapi_retry_http.testing import set_no_sleep


def run(
    upstream: str, redis_url: str | None, prefix: str, calls: int, pace: float, budget: tuple[float, int, float]
) -> int:
    """Make `calls` calls (one every `pace` seconds) to `upstream`/fail; the number made."""
    set_no_sleep(True)  # the budget is the subject, not the backoff
    return asyncio.run(_run(upstream, redis_url, prefix, calls, pace, RetryBudget(*budget)))


def report(results: Any, *args: Any) -> None:
    """`run(*args)`, its result put on the `results` queue (one OS process per worker)."""
    results.put(run(*args))


async def _run(upstream: str, redis_url: str | None, prefix: str, calls: int, pace: float, budget: RetryBudget) -> int:
    store: StateStore
    if redis_url is None:
        store = MemoryStore()
    else:
        from fastapi_retry_http.redis import RedisStore

        store = RedisStore(redis_url, prefix=prefix)
    made = 0
    async with (
        store,
        Client(upstream, name="billing", retry=RetryPolicy(attempts=3), retry_budget=budget, store=store) as c,
    ):
        started = time.monotonic()
        for n in range(calls):
            await asyncio.sleep(max(0.0, started + n * pace - time.monotonic()))
            await c.get("/fail")
            made += 1
    return made
