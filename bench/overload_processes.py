"""
The processes of `bench/overload.py`: an upstream of fixed capacity, and the callers.

The upstream serves at most `workers` requests at once, each taking `service` seconds; up to
`queue` more wait for a worker; beyond that it answers 503 at once. It counts, per tenth of a
second, the requests it received and the 200s it sent.

A caller offers calls at a fixed pace (open loop: a call starts on time whether or not the
earlier ones have ended), each with a 1 s deadline, and records every call and, through an
instrument, every attempt sent or refused, per tenth of a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from typing import Any

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy"


def upstream(port_out: Any, stop: Any, results: Any, workers: int, service: float, queue: int) -> None:
    """Serve until `stop` is set; then put {bin: [received, ok]} on `results`."""
    asyncio.run(_upstream(port_out, stop, results, workers, service, queue))


async def _upstream(port_out: Any, stop: Any, results: Any, workers: int, service: float, queue: int) -> None:
    slots = asyncio.Semaphore(workers)
    waiting = 0
    bins: dict[int, list[int]] = defaultdict(lambda: [0, 0])

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal waiting
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                counts = bins[int(time.time() * 10)]
                counts[0] += 1
                if slots.locked() and waiting >= queue:
                    writer.write(BUSY)
                else:
                    waiting += 1
                    async with slots:
                        waiting -= 1
                        await asyncio.sleep(service)
                    counts[1] += 1
                    writer.write(OK)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=1024)
    port_out.put(server.sockets[0].getsockname()[1])
    await asyncio.to_thread(stop.wait, 600)
    server.close()
    results.put(dict(bins))


class Attempts:
    """An instrument: attempts sent and refused, per tenth of a second."""

    def __init__(self) -> None:
        self.sent: dict[int, int] = defaultdict(int)
        self.refused: dict[int, int] = defaultdict(int)
        #: Of those, the ones the concurrency limit refused.
        self.limited: dict[int, int] = defaultdict(int)

    def on_attempt(self, event: Any) -> None:
        now = int(time.time() * 10)
        if event.reason == "concurrency":
            self.limited[now] += 1
        if event.outcome == "refused":
            self.refused[now] += 1
            return
        self.sent[now] += 1
        if event.outcome == "returned" and event.reason in ("throttle", "concurrency"):
            self.refused[now] += 1  # this attempt was sent; the retry after it was refused


def caller(url: str, redis_url: str | None, prefix: str, row: str, plan: dict[str, float], sync: Any) -> None:
    """
    Offer calls by `plan` with the options of `row`; put the calls and attempts on `results`.

    `sync` is (ready, go, start, results): the caller says it is ready (imports done, client
    built: slow on a busy machine), waits for `go`, then reads the start time from `start`.
    """
    results = sync[3]
    results.put(asyncio.run(_caller(url, redis_url, prefix, row, plan, sync)))


def options(row: str, window: float) -> dict[str, Any]:
    """The `Client` options of a row of the table."""
    from fastapi_retry_http import AdaptiveThrottle, ConcurrencyLimit

    if row == "retries only":
        return {"retry_budget": None}
    if row == "retries + budget":
        return {}
    if row == "throttle, per process":
        return {"throttle": AdaptiveThrottle(window=window)}
    return {"throttle": AdaptiveThrottle(window=window), "concurrency": ConcurrencyLimit()}


async def _caller(
    url: str, redis_url: str | None, prefix: str, row: str, offsets: dict[str, float], sync: Any
) -> dict[str, Any]:
    import httpx

    from fastapi_retry_http import Client, MemoryStore, RetryPolicy
    from fastapi_retry_http.exceptions import ThrottledError

    store: Any = MemoryStore()
    if redis_url is not None:
        from fastapi_retry_http.redis import RedisStore

        store = RedisStore(redis_url, prefix=prefix, timeout=0.25)  # a shared, busy machine
    attempts = Attempts()
    calls: list[tuple[float, float, str]] = []
    policy = RetryPolicy(attempts=3, deadline=offsets["deadline"])

    async def one(client: Client) -> None:
        started = time.time()
        try:
            response = await client.get("/work")
            kind = "ok" if response.status_code == 200 else "status"
        except ThrottledError:
            kind = "refused"
        except httpx.HTTPError:
            kind = "error"
        calls.append((started, time.time() - started, kind))

    async with (
        store,
        Client(
            url,
            name="upstream",
            retry=policy,
            store=store,
            instrumentation=[attempts],
            **options(row, offsets["window"]),
        ) as client,
    ):
        ready, go, start = sync[0], sync[1], sync[2]
        ready.put(True)
        await asyncio.to_thread(go.wait, 600)
        plan = dict(offsets)
        for key in ("start", "overload_end", "end"):
            plan[key] = start.value + offsets[key]
        tasks: set[asyncio.Task[None]] = set()
        limits: list[int | None] = []
        for phase_end, rate in ((plan["overload_end"], plan["rate_over"]), (plan["end"], plan["rate_after"])):
            begin = max(time.time(), plan["start"])
            n = 0
            while begin + n / rate < phase_end:
                await asyncio.sleep(max(0.0, begin + n / rate - time.time()))
                task = asyncio.create_task(one(client))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                n += 1
            limits.append(client.overload.limit)  # at the end of each phase
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks), plan["deadline"] + 2)
    return {
        "calls": calls,
        "sent": dict(attempts.sent),
        "refused": dict(attempts.refused),
        "limited": dict(attempts.limited),
        "limits": limits,
    }
