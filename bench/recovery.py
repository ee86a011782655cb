"""
Seconds from an upstream's recovery to the first success through an open breaker: one
process (`MemoryStore`), and a fleet (two `RedisStore`s on a real redis-server, each with its
own callers: two processes as far as the state goes). The contract: at most the break in
force plus 1 s, for the first call and for every client.

`uv run --group bench python -m bench.recovery [--quick]` (about 40 s; --quick about 15 s);
`python -m bench.resilience` runs it too and adds its table.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from fastapi_retry_http import AttemptEvent, CircuitBreaker, CircuitEvent, Client, RetryPolicy
from fastapi_retry_http._stores.memory import MemoryStore, StateStore

ROOT = Path(__file__).resolve().parent.parent


class Heard:
    """The breaker changes one client heard, with their times."""

    def __init__(self) -> None:
        self.opens: list[tuple[float, float]] = []  # (when, break)

    def on_attempt(self, event: AttemptEvent) -> None:
        pass

    def on_circuit(self, event: CircuitEvent) -> None:
        if event.state == "open" and event.retry_after is not None:
            self.opens.append((time.monotonic(), event.retry_after))


async def recovery(
    port: int, mode: Any, stores: list[StateStore], outage: float, breaker: CircuitBreaker
) -> dict[str, Any]:
    """One healthy second, `outage` seconds of 503s, then healthy until every client got a 200."""
    heard = [Heard() for _ in stores]
    clients = [
        Client(f"http://127.0.0.1:{port}", name="upstream", retry=RetryPolicy(attempts=1), circuit_breaker=breaker,
               store=store, instrumentation=[h])
        for store, h in zip(stores, heard, strict=True)
    ]  # fmt: skip
    recovered_at = float("inf")
    first: list[float | None] = [None] * len(clients)
    give_up = 1 + outage + breaker.max_break_duration + 5

    async def caller(index: int) -> None:
        started = time.monotonic()
        while first[index] is None and time.monotonic() - started < give_up:
            try:
                response = await clients[index].get("/x")
            except httpx.HTTPError:
                pass
            else:
                if response.status_code == 200 and time.monotonic() >= recovered_at:
                    first[index] = time.monotonic()
            await asyncio.sleep(0.01)

    async def script() -> None:
        nonlocal recovered_at
        await asyncio.sleep(1)
        mode.value = 1
        await asyncio.sleep(outage)
        recovered_at = time.monotonic()
        mode.value = 0

    await asyncio.gather(script(), *(caller(i) for i in range(len(clients)) for _ in range(4)))
    for client in clients:
        await client.aclose()
    # The break in force at recovery: the last one opened before it, in any client.
    last = [max((o for o in h.opens if o[0] <= recovered_at), default=None) for h in heard]
    breaks = [o for o in last if o is not None]
    ends = max((when + pause for when, pause in breaks), default=recovered_at)
    waits = [None if f is None else f - recovered_at for f in first]
    return {
        "break_s": max((pause for _, pause in breaks), default=0.0),
        "break_left_s": max(0.0, ends - recovered_at),
        "first_success_s": min((w for w in waits if w is not None), default=None),
        "every_client_s": None if None in waits else max(w for w in waits if w is not None),
    }


def measure(port: int, mode: Any, quick: bool) -> dict[str, Any]:
    """The local and the fleet runs, on an upstream started by the caller."""
    sys.path.insert(0, str(ROOT))
    from fastapi_retry_http.redis import RedisStore
    from tests.redis_server import RedisServer, redis_server_path

    breaker = CircuitBreaker(window=5, break_duration=2.0 if quick else 5.0, max_break_duration=30)
    outage = 3.0 if quick else 8.0
    results = {"local": asyncio.run(recovery(port, mode, [MemoryStore()], outage, breaker))}
    executable = redis_server_path()
    if executable is None:
        results["fleet"] = {"skipped": "redis-server is not installed"}
        return results
    server = RedisServer(executable)
    server.start()

    async def fleet() -> dict[str, Any]:
        prefix = f"recovery-{uuid.uuid4().hex[:8]}"
        async with RedisStore(server.url, prefix=prefix) as a, RedisStore(server.url, prefix=prefix) as b:
            return await recovery(port, mode, [a, b], outage, breaker)

    try:
        results["fleet"] = asyncio.run(fleet())
    finally:
        server.stop()
    return results


def render(results: dict[str, Any]) -> str:
    out = [
        "| recovery (4 callers a client; 503s, then healthy) | break in force | its rest at recovery "
        "| recovery to the first success | to a success in every client | within break + 1 s |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in results.items():
        if "skipped" in row:
            out.append(f"| {name} | {row['skipped']} | | | | |")
            continue
        worst = row["every_client_s"]
        ok = worst is not None and worst <= row["break_s"] + 1
        first = "n/a" if row["first_success_s"] is None else f"{row['first_success_s']:.2f} s"
        every = "n/a" if worst is None else f"{worst:.2f} s"
        out.append(
            f"| {name} | {row['break_s']:.2f} s | {row['break_left_s']:.2f} s | {first} | {every} "
            f"| {'yes' if ok else 'NO'} |"
        )
    return "\n".join(out)


def main() -> None:
    from bench.resilience import start_upstream

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 2 s break and a 3 s outage")
    args = parser.parse_args()
    process, mode, port = start_upstream()
    try:
        print(render(measure(port, mode, args.quick)))
    finally:
        process.kill()


if __name__ == "__main__":
    main()
