"""
Learned hedging measured: an upstream where 98% of answers take 10 ms and 2% take 1 s, 8
callers; no hedging, `hedge_after=0.05` and `hedge_after="p95"`; then the same when every
answer turns 10x slower mid-run. Also what the latency estimate costs per attempt.

Run alone (`python -m bench.tail`, or as part of `python -m bench.resilience`); `--quick` for
a short run. Upstream requests are counted by the upstream itself (every request it read,
hedges that lost included); each figure is the median of `--runs` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import random
import socket
import statistics
import time
import timeit
from typing import Any

import httpx

from fastapi_retry_http import Client, RetryPolicy
from fastapi_retry_http._pipeline.attempts import Call, Outcome
from fastapi_retry_http._pipeline.transport import ATTEMPTS_EXTENSION
from fastapi_retry_http._strategies.latency import (
    BUDGET_BURST,
    BUDGET_SLACK,
    FIXED_SHARE,
    HedgePacer,
    LatencyStrategy,
)

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
CONFIGS: tuple[tuple[str, float | str | None], ...] = (
    ("no hedging", None),
    ("hedge_after=0.05", 0.05),
    ('hedge_after="p95"', "p95"),
)
#: The share of hedges the "p95" budget allows (BUDGET_SLACK x 5%).
P95_SHARE = BUDGET_SLACK * 0.05


def serve(port: int, slower: Any, received: Any, ready: Any) -> None:
    """98% of answers after 10 ms, 2% after 1 s; all of it times `slower`."""
    rng = random.Random(11)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                with received.get_lock():
                    received.value += 1
                await asyncio.sleep((1.0 if rng.random() < 0.02 else 0.010) * slower.value)
                writer.write(OK)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


class Upstream:
    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.slower = multiprocessing.Value("i", 1)
        self.received = multiprocessing.Value("l", 0)
        ready = multiprocessing.Event()
        args = (self.port, self.slower, self.received, ready)
        self.process = multiprocessing.Process(target=serve, args=args, daemon=True)
        self.process.start()
        ready.wait(10)


def percentiles(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    n = len(ordered)
    return {
        "p50_ms": ordered[n // 2] * 1e3,
        "p99_ms": ordered[int(n * 0.99)] * 1e3,
        "p999_ms": ordered[min(n - 1, int(n * 0.999))] * 1e3,
    }


async def steady(upstream: Upstream, hedge_after: float | str | None, calls: int, warm: int) -> dict[str, float]:
    """`calls` calls by 8 callers after `warm` calls that are not measured (a client in service)."""
    policy = RetryPolicy(hedge_after=hedge_after, deadline=30)
    async with Client(f"http://127.0.0.1:{upstream.port}", retry=policy, timeout=30) as client:
        await drive(client, warm)
        before = upstream.received.value
        latencies = await drive(client, calls)
        sent = upstream.received.value - before
    return {**percentiles(latencies), "extra": sent / calls - 1}


async def drive(client: Client, calls: int) -> list[float]:
    latencies: list[float] = []
    queue = iter(range(calls))

    async def caller() -> None:
        for _ in queue:
            started = time.perf_counter()
            await client.get("/x")
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(caller() for _ in range(8)))
    return latencies


async def slowdown(upstream: Upstream, hedge_after: float | str | None, seconds: float) -> dict[str, float]:
    """`seconds` at normal speed, then `seconds` with every answer 10x slower: the slow half's figures."""
    policy = RetryPolicy(hedge_after=hedge_after, deadline=30)
    upstream.slower.value = 1
    async with Client(f"http://127.0.0.1:{upstream.port}", retry=policy, timeout=30) as client:
        await drive(client, 200)  # warm, as in `steady`
        switch_at = time.monotonic() + seconds
        stop_at = switch_at + seconds
        slow: list[tuple[float, int]] = []  # latency, attempts, of calls started after the switch

        async def caller() -> None:
            while (began := time.monotonic()) < stop_at:
                response = await client.get("/x")
                if began >= switch_at:
                    slow.append((time.monotonic() - began, response.extensions.get(ATTEMPTS_EXTENSION, 1)))

        caught_up = math.nan  # seconds after the switch until a learned delay exceeds the old p50 x 5

        async def switch() -> None:
            nonlocal caught_up
            await asyncio.sleep(seconds)
            upstream.slower.value = 10
            while isinstance(hedge_after, str) and time.monotonic() < stop_at:
                if (client.transport.hedging.latency.delay(hedge_after) or 0) > 0.05:  # type: ignore[union-attr]
                    caught_up = time.monotonic() - switch_at
                    return
                await asyncio.sleep(0.1)

        await asyncio.gather(switch(), *(caller() for _ in range(8)))
    upstream.slower.value = 1
    calls = len(slow)
    extra = sum(attempts for _, attempts in slow) - calls
    return {
        **percentiles([latency for latency, _ in slow]),
        "extra": extra / calls,
        "calls": calls,
        "caught_up_s": caught_up,
    }


def record_cost() -> dict[str, float]:
    """µs per `record` (the request path's share of the estimate) and per `pace` (once per hedged call)."""
    strategy = LatencyStrategy(time.monotonic)
    pacer = HedgePacer(time.monotonic, lambda latency: None)
    call = Call(httpx.Request("GET", "http://x/"), RetryPolicy(hedge_after="p95"), "x", None, True)
    outcome = Outcome(response=httpx.Response(200), duration=0.012)
    n = 200_000
    record = min(timeit.repeat(lambda: strategy.record(call, outcome), number=n, repeat=5)) / n * 1e6
    pace = min(timeit.repeat(lambda: pacer.pace("p95"), number=n, repeat=5)) / n * 1e6
    return {"record_us": record, "pace_us": pace}


def median_of(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(row[key] for row in rows) for key in rows[0]}


def spread(rows: list[dict[str, float]], key: str) -> str:
    return ", ".join(f"{row[key]:.0f}" for row in rows)


def run(quick: bool, runs: int | None = None) -> dict[str, Any]:
    runs = runs or (1 if quick else 3)
    calls, seconds = (2000, 6.0) if quick else (6000, 15.0)
    upstream = Upstream()
    results: dict[str, Any] = {"runs": runs, "calls": calls, "seconds": seconds}
    rows: dict[str, list[dict[str, float]]] = {}
    try:
        for _ in range(runs):  # interleaved, so a busy spell of the machine hits every configuration
            for name, hedge in CONFIGS:
                rows.setdefault(f"steady: {name}", []).append(asyncio.run(steady(upstream, hedge, calls, 200)))
            for name, hedge in CONFIGS:
                rows.setdefault(f"slowdown: {name}", []).append(asyncio.run(slowdown(upstream, hedge, seconds)))
        results.update({key: median_of(values) for key, values in rows.items()})
        results["p999 of each run"] = {key: spread(values, "p999_ms") for key, values in rows.items()}
    finally:
        upstream.process.kill()
    results["cost"] = record_cost()
    return results


def render(results: dict[str, Any]) -> str:
    out = [
        f"| 98% of answers in 10 ms, 2% in 1 s; 8 callers, {results['calls']} calls "
        f"(median of {results['runs']}) | p50 ms | p99 ms | p99.9 ms | extra upstream requests |",
        "|---|---|---|---|---|",
    ]
    for key, row in results.items():
        if key.startswith("steady: "):
            out.append(
                f"| {key[8:]} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['p999_ms']:.1f} | {row['extra']:.1%} |"
            )
    out += [
        "",
        f"| every answer 10x slower after {results['seconds']:.0f} s: the next {results['seconds']:.0f} s "
        "| calls | p50 ms | p99 ms | p99.9 ms | extra upstream requests |",
        "|---|---|---|---|---|---|",
    ]
    for key, row in results.items():
        if key.startswith("slowdown: "):
            out.append(
                f"| {key[10:]} | {row['calls']:.0f} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} "
                f"| {row['p999_ms']:.1f} | {row['extra']:.1%} |"
            )
    p95, fixed = results['slowdown: hedge_after="p95"'], results["slowdown: hedge_after=0.05"]
    out.append(
        f"\nHedge budgets over those calls: at most {P95_SHARE + BUDGET_BURST / p95['calls']:.1%} extra for "
        f'"p95", {FIXED_SHARE + BUDGET_BURST / fixed["calls"]:.1%} for 0.05. The learned delay caught up '
        f"{p95['caught_up_s']:.1f} s after the switch."
    )
    out.append("\np99.9 of each run (ms): " + "; ".join(f"{k}: {v}" for k, v in results["p999 of each run"].items()))
    cost = results["cost"]
    out.append(
        f"\nThe latency estimate costs {cost['record_us']:.2f} µs per attempt recorded and "
        f"{cost['pace_us']:.2f} µs per hedged call for its delay and budget."
    )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="one short run (about 1 minute)")
    parser.add_argument("--runs", type=int, default=None)
    args = parser.parse_args()
    print(render(run(args.quick, args.runs)))


if __name__ == "__main__":
    main()
