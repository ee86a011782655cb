"""
What each strategy of the pipeline costs on the success path, on and off, side by side in one
run: the default `Client` (every strategy of this round off), then the same client with one
strategy on, each against nginx on loopback at C concurrent calls, in a fresh process per
row, the rows interleaved over rounds; the figure is the median of the rounds.

    uv run --group bench python -m bench.strategies [--rounds 3] [--seconds 3] [--concurrency 16]

"off" is not a row of its own: a strategy that is off is not built, so the default client's
row is every strategy off. `bench/instructions.py` counts the instructions, steady on a busy
machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from bench.bench import ROOT, Nginx, measure

#: Row name -> the `Client` keywords that turn one strategy on (on a path that succeeds, so
#: each strategy does its success-path work: admit, record, a hedge timer, a cache miss).
ROWS: dict[str, str] = {
    "default (every strategy of this round off)": "{}",
    "circuit_breaker=CircuitBreaker()": "{'circuit_breaker': CircuitBreaker()}",
    "throttle=AdaptiveThrottle()": "{'throttle': AdaptiveThrottle()}",
    "concurrency=ConcurrencyLimit()": "{'concurrency': ConcurrencyLimit(limit=64)}",
    "rate_limit=RateLimit(rate=1e6)": "{'rate_limit': RateLimit(rate=1e6)}",
    # Coalescing is left out: these concurrent calls are identical, so it joins them (what
    # that saves, and what a call it cannot spare costs, is bench/reuse.py's table).
    "cache=HttpCache() (responses not cacheable)": "{'cache': HttpCache()}",
    "chaos=Chaos() (nothing injected)": "{'chaos': Chaos()}",
    "retry=RetryPolicy(hedge_after='p95')": "{'retry': RetryPolicy(hedge_after='p95')}",
    # The same race with a fixed delay no call reaches: hedging's own cost, without the learning.
    "retry=RetryPolicy(hedge_after=10.0)": "{'retry': RetryPolicy(hedge_after=10.0)}",
}


async def sender(row: str, url: str, concurrency: int) -> Any:
    import httpx

    from fastapi_retry_http import (  # noqa: F401  (named by the rows' expressions)
        AdaptiveThrottle,
        CircuitBreaker,
        Client,
        ConcurrencyLimit,
        RateLimit,
        RetryPolicy,
    )
    from fastapi_retry_http.cache import HttpCache  # noqa: F401
    from fastapi_retry_http.chaos import Chaos  # noqa: F401

    options = eval(ROWS[row])
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    base, path = url.rsplit("/", 1)
    client = Client(base, limits=limits, **options)

    async def send() -> int:
        response = await client.get(path or "/")
        return int(response.status_code)

    return send, client.aclose


async def run(row: str, url: str, concurrency: int, seconds: float) -> dict[str, Any]:
    import bench.bench as bench

    original = bench.make_sender

    async def make_sender(kind: str, url: str, concurrency: int) -> Any:
        return await sender(row, url, concurrency)

    bench.make_sender = make_sender  # measure() builds its sender through it
    try:
        return await measure(row, url, concurrency, seconds)
    finally:
        bench.make_sender = original


def worker() -> None:
    row, url, concurrency, seconds = sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cores[-1]})  # the client on one core; nginx on another
    print(json.dumps(asyncio.run(run(row, url, concurrency, seconds))))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker()
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    nginx = Nginx()
    results: dict[str, list[dict[str, Any]]] = {row: [] for row in ROWS}
    started = time.monotonic()
    try:
        for round_ in range(args.rounds):
            for row in ROWS if round_ % 2 == 0 else reversed(list(ROWS)):
                command = [sys.executable, "-m", "bench.strategies", "worker", row, nginx.url + "/"]
                command += [str(args.concurrency), str(args.seconds)]
                done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
                if done.returncode != 0:
                    raise SystemExit(f"{row}: {done.stderr[-2000:]}")
                results[row].append(json.loads(done.stdout))
            print(f"round {round_ + 1}/{args.rounds} ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    finally:
        nginx.stop()
    base = statistics.median(r["rps"] for r in results["default (every strategy of this round off)"])
    print(f"Success path, C={args.concurrency}, {args.seconds:g} s per row, median of {args.rounds} rounds\n")
    print("| client | req/s | against the default | CPU µs per request |")
    print("|---|---|---|---|")
    for row, runs in results.items():
        rps = statistics.median(r["rps"] for r in runs)
        cpu = statistics.median(r["cpu_us"] for r in runs)
        print(f"| {row} | {rps:,.0f} | {rps / base:.3f} | {cpu:.0f} |")


if __name__ == "__main__":
    main()
