"""
The resilience tools measured: hedging against a slow tail, the breaker through an outage,
what the breaker costs on the success path, and learned hedging (`bench/tail.py`). Run with
`uv run --group bench python -m bench.resilience` (about 10 minutes; `--quick` about 2,
`--only tail` for learned hedging alone); it prints markdown tables and writes bench/results/.
The recovery table (seconds from the upstream's recovery to the first success through an
open breaker, local and fleet) comes from `bench/recovery.py`.

The upstream is a small asyncio HTTP server in its own process on loopback; load comes from
callers in this process; upstream load is counted as the attempts the client sent (events).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from bench import recovery
from fastapi_retry_http import AttemptEvent, CircuitBreaker, Client, RetryPolicy

from . import tail as tail_bench

RESULTS = Path(__file__).resolve().parent / "results"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy"


def serve(port: int, mode: Any, slow_share: float, ready: Any) -> None:
    """The upstream: answers at once, 1 s late for `slow_share` of requests, or 503 / nothing by `mode`."""
    rng = random.Random(7)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                state = mode.value
                if state == 2:  # down: close without an answer
                    writer.transport.abort()
                    return
                if state == 0 and rng.random() < slow_share:
                    await asyncio.sleep(1.0)
                writer.write(BUSY if state == 1 else OK)
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


class Counter:
    def __init__(self) -> None:
        self.attempts = 0

    def on_attempt(self, event: AttemptEvent) -> None:
        self.attempts += 1  # every attempt went to the network, losers of a hedge too


def start_upstream(slow_share: float = 0.0) -> tuple[Any, Any, int]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mode = multiprocessing.Value("i", 0)
    ready = multiprocessing.Event()
    process = multiprocessing.Process(target=serve, args=(port, mode, slow_share, ready), daemon=True)
    process.start()
    ready.wait(10)
    return process, mode, port


async def tail(port: int, hedge_after: float | None, calls: int, concurrency: int) -> dict[str, float]:
    counter = Counter()
    policy = RetryPolicy(hedge_after=hedge_after, deadline=10)
    latencies: list[float] = []
    async with Client(f"http://127.0.0.1:{port}", retry=policy, instrumentation=[counter]) as client:
        queue = iter(range(calls))

        async def caller() -> None:
            for _ in queue:
                started = time.perf_counter()
                await client.get("/x")
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(caller() for _ in range(concurrency)))
    latencies.sort()
    n = len(latencies)
    return {
        "p50_ms": latencies[n // 2] * 1e3,
        "p99_ms": latencies[int(n * 0.99)] * 1e3,
        "p999_ms": latencies[min(n - 1, int(n * 0.999))] * 1e3,
        "requests_per_call": counter.attempts / n,
    }


async def outage(port: int, mode: Any, failure: int, breaker: bool, seconds: float) -> dict[str, Any]:
    """`seconds` of outage (mode `failure`) in the middle of 2 + seconds + 8 seconds of traffic."""
    counter = Counter()
    timeline: list[tuple[float, int, float, str]] = []  # time, attempts so far, latency, result
    # A 5 s window: with the default 30 s, the healthy traffic before the outage outweighs
    # its failures for longer than the outage lasts (the trade-off docs/resilience.md explains).
    cb = CircuitBreaker(window=5) if breaker else None
    async with Client(
        f"http://127.0.0.1:{port}", retry=RetryPolicy(deadline=5), circuit_breaker=cb, instrumentation=[counter]
    ) as client:
        start = time.monotonic()
        stop_at = start + 2 + seconds + 8

        async def caller() -> None:
            while time.monotonic() < stop_at:
                began = time.perf_counter()
                try:
                    result = str((await client.get("/x")).status_code)
                except httpx.HTTPError as error:
                    result = type(error).__name__
                timeline.append((time.monotonic() - start, counter.attempts, time.perf_counter() - began, result))
                await asyncio.sleep(0.01)

        async def script() -> None:
            await asyncio.sleep(2)
            mode.value = failure
            await asyncio.sleep(seconds)
            mode.value = 0

        await asyncio.gather(script(), *(caller() for _ in range(8)))
    end = 2 + seconds
    down = [t for t in timeline if 2 <= t[0] < end]
    opened = next((t[0] for t in down if t[3] == "CircuitOpenError"), None)
    split = opened if opened is not None else end

    def rate(start: float, stop: float) -> float:
        inside = [t[1] for t in timeline if start <= t[0] < stop]
        before = [t[1] for t in timeline if t[0] < start]
        return (max(inside, default=0) - max(before, default=0)) / max(stop - start, 1e-9)

    open_calls = sorted(t[2] for t in down if t[3] == "CircuitOpenError")
    back = [t[0] for t in timeline if t[0] >= end and t[3] == "200"]
    return {
        "rate_before_open": rate(2, split),
        "rate_after_open": None if opened is None else rate(opened, end),
        "open_after_s": None if opened is None else opened - 2,
        "open_call_p99_ms": open_calls[int(len(open_calls) * 0.99)] * 1e3 if open_calls else None,
        "recovered_after_s": back[0] - end if back else None,
    }


async def success_cost(port: int, rounds: int, calls: int) -> dict[str, float]:
    """µs per call at C=16 with the breaker off and on, interleaved rounds; the ratio of medians."""
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(rounds):
        for breaker in (False, True):
            async with Client(
                f"http://127.0.0.1:{port}", circuit_breaker=CircuitBreaker() if breaker else None
            ) as client:
                await asyncio.gather(*(client.get("/x") for _ in range(32)))  # warm
                started = time.perf_counter()
                queue = iter(range(calls))

                async def caller(client: Client = client, queue: Any = queue) -> None:
                    for _ in queue:
                        await client.get("/x")

                await asyncio.gather(*(caller() for _ in range(16)))
                times[breaker].append((time.perf_counter() - started) / calls * 1e6)
    off, on = statistics.median(times[False]), statistics.median(times[True])
    return {"off_us": off, "on_us": on, "ratio": on / off}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--outage", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true", help="short runs of everything (about 2 minutes)")
    parser.add_argument("--only", choices=["tail"], help="only learned hedging (bench/tail.py)")
    args = parser.parse_args()
    if args.quick:
        args.calls, args.outage = 500, 4.0
    RESULTS.mkdir(exist_ok=True)
    learned = tail_bench.run(args.quick)
    (RESULTS / "tail.json").write_text(json.dumps(learned, indent=1))
    if args.only == "tail":
        print(tail_bench.render(learned))
        return
    results: dict[str, Any] = {}
    process, mode, port = start_upstream(slow_share=0.05)
    try:
        for name, hedge in (("no hedging", None), ("hedge_after=50 ms", 0.05)):
            results[f"tail: {name}"] = asyncio.run(tail(port, hedge, args.calls, 8))
    finally:
        process.kill()
    process, mode, port = start_upstream()
    try:
        for failure, label in ((2, "connection closed"), (1, "all 503")):
            for breaker in (False, True):
                key = f"outage ({label}): breaker {'on' if breaker else 'off'}"
                results[key] = asyncio.run(outage(port, mode, failure, breaker, args.outage))
        results["success path"] = asyncio.run(success_cost(port, 2 if args.quick else 5, 2000))
        results["recovery"] = recovery.measure(port, mode, args.quick)
    finally:
        process.kill()
    (RESULTS / "resilience.json").write_text(json.dumps(results, indent=1))
    chart(results, RESULTS / "resilience.png")
    print(render(results))
    print()
    print(tail_bench.render(learned))


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    tails = {k[6:]: v for k, v in results.items() if k.startswith("tail")}
    marks = ["p50_ms", "p99_ms", "p999_ms"]
    for i, (name, row) in enumerate(tails.items()):
        left.bar([x + i * 0.4 for x in range(3)], [row[m] for m in marks], 0.4, label=name)
    left.set_xticks([x + 0.2 for x in range(3)], ["p50", "p99", "p99.9"])
    left.set_yscale("log")
    left.set_ylabel("ms (log scale)")
    left.set_title("5% of answers 1 s late, C=8")
    left.legend(fontsize=8)
    outages = {k[7:]: v for k, v in results.items() if k.startswith("outage") and v["rate_after_open"] is not None}
    names = list(outages)
    right.bar(
        [x - 0.2 for x in range(len(names))],
        [outages[n]["rate_before_open"] for n in names],
        0.4,
        label="before it opened",
    )
    right.bar([x + 0.2 for x in range(len(names))], [outages[n]["rate_after_open"] for n in names], 0.4, label="after")
    right.set_xticks(range(len(names)), [n.replace(": breaker on", "") for n in names], fontsize=8)
    right.set_ylabel("attempts sent per second")
    right.set_title("Upstream down, breaker on")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def render(results: dict[str, Any]) -> str:
    out = [
        "| tail (5% of answers 1 s late), C=8 | p50 ms | p99 ms | p99.9 ms | upstream requests per call |",
        "|---|---|---|---|---|",
    ]
    for key, row in results.items():
        if key.startswith("tail"):
            out.append(
                f"| {key[6:]} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['p999_ms']:.1f} "
                f"| {row['requests_per_call']:.3f} |"
            )
    out += [
        "",
        "| outage, 8 callers | attempts/s before it opened | after | drop | opened after | open-call p99 | recovered |",
        "|---|---|---|---|---|---|---|",
    ]

    def fmt(value: float | None, unit: str) -> str:
        return "n/a" if value is None else f"{value:.2f} {unit}"

    for key, row in results.items():
        if key.startswith("outage"):
            after = row["rate_after_open"]
            drop = "n/a" if after is None else f"{1 - after / row['rate_before_open']:.0%}"
            out.append(
                f"| {key[7:]} | {row['rate_before_open']:.0f} | {fmt(after, '')} | {drop} | "
                f"{fmt(row['open_after_s'], 's')} | {fmt(row['open_call_p99_ms'], 'ms')} | "
                f"{fmt(row['recovered_after_s'], 's')} |"
            )
    cost = results["success path"]
    out += ["", recovery.render(results["recovery"])] if "recovery" in results else []
    out += [
        "",
        f"Success path at C=16: {cost['off_us']:.1f} µs per call with the breaker off, "
        f"{cost['on_us']:.1f} µs on: {cost['ratio']:.3f}×.",  # noqa: RUF001
    ]
    return "\n".join(out)


if __name__ == "__main__":
    main()
