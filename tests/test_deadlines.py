"""The shared timers behind attempt deadlines and hedge delays (`Expiries`), on a real loop."""

from __future__ import annotations

import asyncio
import contextvars
import time

import pytest

from fastapi_retry_http._pipeline.deadlines import Expiries

pytestmark = pytest.mark.anyio

WHO: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")


async def test_a_discarded_earliest_deadline_leaves_the_next_on_time_in_no_callers_context() -> None:
    loop = asyncio.get_running_loop()
    expired: list[tuple[str, str]] = []
    done = asyncio.Event()

    def expire(key: str) -> None:
        expired.append((key, WHO.get()))
        done.set()

    expiries: Expiries[str] = Expiries(expire)
    WHO.set("the caller that armed it")
    started = time.monotonic()
    expiries.set("first", 0.01, loop)
    expiries.set("second", 0.03, loop)
    expiries.discard("first", None)  # the timer stays set for it: it fires for nothing, then for the next
    await asyncio.wait_for(done.wait(), 5)
    assert expired == [("second", "nobody")]
    assert time.monotonic() - started >= 0.03 - 0.001  # never sooner than its own deadline (less `early`)
    assert not expiries.armed


async def test_a_timer_with_nothing_left_disarms() -> None:
    expired: list[str] = []
    expiries: Expiries[str] = Expiries(expired.append)
    expiries.set("only", 0.005, asyncio.get_running_loop())
    expiries.discard("only", None)
    await asyncio.sleep(0.02)
    assert (expired, expiries.armed) == ([], False)
