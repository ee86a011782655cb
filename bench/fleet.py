"""
Fleet state, measured: `MemoryStore` against `RedisStore`, with a real redis-server on loopback.

1. Cost on the request path: the same load (one process, fixed concurrency, a loopback
   upstream answering 200) with each store, in interleaved rounds: req/s and p99, and Redis
   commands per request (from `INFO commandstats`).
2. Budgets: N processes (2, 4, 8) calling an all-503 upstream at a fixed pace, each with the
   default `RetryBudget` and 3 attempts: upstream requests per logical call, per-process
   budgets (`MemoryStore`) against one shared budget (`RedisStore`).
3. Breakers: N processes calling an upstream that turns to all-503 at a known instant, each
   with the default `CircuitBreaker`: seconds until the last process stops sending, and the
   requests the upstream took meanwhile, per-process against shared breakers. The processes
   start together: the upstream fails once every one of them is ready.

Bounded: about 2 minutes with the defaults. Run it with
`uv run --group bench python -m bench.fleet` (needs redis-server: `apt-get install redis-server`).
Writes bench/results/fleet.json and docs/fleet-chart.png.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CHART = ROOT / "docs" / "fleet-chart.png"

# -- a loopback upstream -----------------------------------------------------------------------


class Upstream:
    """
    An HTTP/1.1 server in a thread of its own: 200 until `fail_at` (epoch seconds), 503 after.
    Records (time, worker) for every request; the worker comes from the `x-worker` header.
    """

    def __init__(self, fail_at: float = 0.0) -> None:
        self.fail_at = fail_at
        self.hits: list[tuple[float, str]] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Upstream:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                now = time.time()
                worker = ""
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"x-worker:"):
                        worker = line.split(b":", 1)[1].strip().decode()
                self.hits.append((now, worker))
                status = b"503 Service Unavailable" if self.fail_at and now >= self.fail_at else b"200 OK"
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


def serve_forever(port_out: Any) -> None:
    """The upstream in a process of its own (the throughput cells): 200 "ok" as fast as it can."""
    with Upstream() as upstream:
        port_out.put(upstream.port)
        while True:
            time.sleep(1)
            upstream.hits.clear()


# -- one worker process ------------------------------------------------------------------------


def _store(redis_url: str | None, prefix: str) -> Any:
    from fastapi_retry_http import MemoryStore

    if redis_url is None:
        return MemoryStore()
    from fastapi_retry_http.redis import RedisStore

    return RedisStore(redis_url, prefix=prefix)


def budget_worker(upstream: str, redis_url: str | None, prefix: str, worker: int, rate: float, seconds: float) -> int:
    """Call an all-503 upstream `rate` times a second for `seconds`; the calls made."""
    from fastapi_retry_http import Client, RetryPolicy
    from fastapi_retry_http.testing import set_no_sleep

    set_no_sleep(True)  # the budget is measured, not the backoff

    async def main() -> int:
        async with (
            _store(redis_url, prefix) as store,
            Client(upstream, name="billing", retry=RetryPolicy(attempts=3), store=store) as c,
        ):
            c.headers["x-worker"] = str(worker)
            started, n = time.monotonic(), 0
            while n < rate * seconds:
                await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
                await c.get("/")
                n += 1
            return n

    return asyncio.run(main())


def breaker_worker(
    upstream: str, redis_url: str | None, prefix: str, worker: int, rate: float, seconds: float, ready: Any, go: Any
) -> int:
    """
    Once every process is ready (`go`), call the upstream `rate` times a second for `seconds`;
    the calls made. The default breaker, but a 30 s break: no probe falls inside the run.
    """
    from fastapi_retry_http import CircuitBreaker, Client, RetryPolicy

    breaker = CircuitBreaker(break_duration=30.0)

    async def main() -> int:
        async with (
            _store(redis_url, prefix) as store,
            Client(upstream, name="billing", retry=RetryPolicy(attempts=1), circuit_breaker=breaker, store=store) as c,
        ):
            c.headers["x-worker"] = str(worker)
            ready.put(worker)
            await asyncio.to_thread(go.wait, 120)
            started, n = time.monotonic(), 0
            while time.monotonic() - started < seconds:
                await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
                n += 1
                with contextlib.suppress(Exception):  # CircuitOpenError
                    await c.get("/")
            return n

    return asyncio.run(main())


# -- the measurements --------------------------------------------------------------------------


def in_processes(target: Any, args: list[tuple[Any, ...]], started: Any = None, timeout: float = 120.0) -> list[Any]:
    """
    Run `target(*a)` for each `a` in a process of its own (not a pool: one each, at once);
    `started()`, if given, runs once they are all started.
    """
    ctx = multiprocessing.get_context("spawn")
    results: Any = ctx.Queue()
    processes = [ctx.Process(target=_report, args=(results, target, a), daemon=True) for a in args]
    for process in processes:
        process.start()
    try:
        if started is not None:
            started()
        return [results.get(timeout=timeout) for _ in processes]
    finally:
        for process in processes:
            process.join(10)
            if process.is_alive():
                process.kill()


def _report(results: Any, target: Any, args: tuple[Any, ...]) -> None:
    results.put(target(*args))


def fleet_budget(redis_url: str, processes: int, shared: bool, rate: float, seconds: float) -> dict[str, float]:
    with Upstream(fail_at=1.0) as upstream:  # 503 from the start
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        args = [(upstream.url, redis_url if shared else None, prefix, w, rate, seconds) for w in range(processes)]
        calls = sum(in_processes(budget_worker, args))
        requests = len(upstream.hits)
    return {"calls": calls, "upstream_requests": requests, "per_call": requests / calls}


def fleet_breaker(redis_url: str, processes: int, shared: bool, rate: float, seconds: float) -> dict[str, float]:
    ctx = multiprocessing.get_context("spawn")
    ready, go = ctx.Queue(), ctx.Event()
    with Upstream() as upstream:
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        args = [
            (upstream.url, redis_url if shared else None, prefix, w, rate, seconds, ready, go) for w in range(processes)
        ]

        def fail_when_all_ready() -> None:
            for _ in range(processes):
                ready.get(timeout=120)
            # Every process has started, imported and connected: the upstream fails now, and
            # all of them start calling now.
            upstream.fail_at = time.time()
            go.set()

        in_processes(breaker_worker, args, fail_when_all_ready)
        fail_at = upstream.fail_at
        after = [(t, w) for t, w in upstream.hits if t >= fail_at]
    last = {w: t - fail_at for t, w in after}
    return {
        "stop_seconds": max(last.values(), default=0.0),
        "requests_after_failure": len(after),
        "per_process": len(after) / processes,
    }


async def _load(url: str, store: Any, concurrency: int, seconds: float) -> tuple[float, float, int]:
    from fastapi_retry_http import CircuitBreaker, Client

    latencies: list[float] = []
    async with store, Client(url, name="billing", circuit_breaker=CircuitBreaker(), store=store) as c:
        for _ in range(50):  # warm the pool
            await c.get("/")
        stop = time.monotonic() + seconds

        async def one() -> None:
            while time.monotonic() < stop:
                started = time.perf_counter()
                await c.get("/")
                latencies.append(time.perf_counter() - started)

        started = time.monotonic()
        await asyncio.gather(*(one() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    latencies.sort()
    return len(latencies) / elapsed, latencies[int(0.99 * (len(latencies) - 1))], len(latencies)


def load_cell(url: str, redis_url: str | None, concurrency: int, seconds: float) -> tuple[float, float, int]:
    """One throughput cell, in a fresh process."""
    return asyncio.run(_load(url, _store(redis_url, f"bench-{uuid.uuid4().hex[:8]}"), concurrency, seconds))


#: Commands a client sends (round trips); the others counted by INFO run inside the script.
TOP_LEVEL = {"cmdstat_evalsha", "cmdstat_eval", "cmdstat_script|load", "cmdstat_ping", "cmdstat_hello"}


def commands(redis_url: str) -> tuple[int, int]:
    """Round trips and commands executed (inside the script included) since the last reset."""
    import redis

    r = redis.Redis.from_url(redis_url)
    stats = r.info("commandstats")
    r.close()
    executed = {k: v["calls"] for k, v in stats.items() if not k.startswith(("cmdstat_info", "cmdstat_config"))}
    return sum(v for k, v in executed.items() if k in TOP_LEVEL), sum(executed.values())


def reset_stats(redis_url: str) -> None:
    import redis

    r = redis.Redis.from_url(redis_url)
    r.config_resetstat()
    r.close()


def throughput(redis_url: str, rounds: int, concurrency: int, seconds: float) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    ports: Any = ctx.Queue()
    server = ctx.Process(target=serve_forever, args=(ports,), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{ports.get(timeout=30)}"
    cells: dict[str, list[tuple[float, float]]] = {"memory": [], "redis": []}
    per_request: list[tuple[float, float]] = []
    try:
        with ctx.Pool(1, maxtasksperchild=1) as pool:
            for round_ in range(rounds):
                # Alternate which store goes first, so that drift in the machine hits both alike.
                for kind in ("memory", "redis") if round_ % 2 == 0 else ("redis", "memory"):
                    reset_stats(redis_url)
                    rps, p99, n = pool.apply_async(
                        load_cell, (url, redis_url if kind == "redis" else None, concurrency, seconds)
                    ).get(timeout=120)
                    cells[kind].append((rps, p99))
                    if kind == "redis":
                        trips, executed = commands(redis_url)
                        per_request.append((trips / n, executed / n))
    finally:
        server.kill()
        server.join(10)
    medians = {k: (statistics.median(r for r, _ in v), statistics.median(p for _, p in v)) for k, v in cells.items()}
    return {
        "concurrency": concurrency,
        "rounds": rounds,
        "memory": {"rps": medians["memory"][0], "p99_ms": medians["memory"][1] * 1000},
        "redis": {"rps": medians["redis"][0], "p99_ms": medians["redis"][1] * 1000},
        "rps_ratio": medians["redis"][0] / medians["memory"][0],
        "p99_ratio": medians["redis"][1] / medians["memory"][1],
        "cells": cells,
        "redis_round_trips_per_request": statistics.median(t for t, _ in per_request),
        "redis_commands_per_request": statistics.median(e for _, e in per_request),
    }


def path_cost(n: int = 300_000) -> dict[str, float]:
    """
    Nanoseconds per request spent in the budget and breaker state (one request counted, one
    attempt recorded), local objects against the fleet ones: the request path's only change.
    """
    from fastapi_retry_http import CircuitBreaker, RetryBudget
    from fastapi_retry_http._stores.fleet import FleetBreakerState, FleetBudgetCounter
    from fastapi_retry_http._strategies.breaker import BreakerState
    from fastapi_retry_http._strategies.budget import BudgetCounter

    def cost(counter: BudgetCounter, state: BreakerState) -> float:
        best, no_jitter = float("inf"), float
        for _ in range(5):
            started = time.perf_counter()
            for i in range(n):
                now = i * 1e-5
                counter.sent(now)
                state.count(now, False, no_jitter)
            best = min(best, time.perf_counter() - started)
        return best / n * 1e9

    fleet_counter, fleet_state = FleetBudgetCounter(RetryBudget()), FleetBreakerState(CircuitBreaker())
    fleet_counter.fleet = fleet_state.fleet = (0, 0)
    local = cost(BudgetCounter(RetryBudget()), BreakerState(CircuitBreaker()))
    fleet = cost(fleet_counter, fleet_state)
    return {"memory_ns": local, "redis_ns": fleet, "added_ns": fleet - local}


def chart(results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [row["processes"] for row in results["budget"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for shared, label, style in ((False, "per-process (MemoryStore)", "o--"), (True, "shared (RedisStore)", "s-")):
        key = "shared" if shared else "local"
        left.plot(ns, [row[key]["per_call"] for row in results["budget"]], style, label=label)
        right.plot(ns, [row[key]["stop_seconds"] for row in results["breaker"]], style, label=label)
    left.set(
        title="Retry budget: all-503 upstream",
        xlabel="processes",
        ylabel="upstream requests per call",
        xticks=ns,
        ylim=(0, 3.2),
    )
    right.set(
        title="Circuit breaker: upstream fails at t=0",
        xlabel="processes",
        ylabel="seconds until the last process stops",
        xticks=ns,
    )
    right.set_ylim(bottom=0)
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(CHART, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--rate", type=float, default=10.0, help="calls a second per process (budget run)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each budget run")
    parser.add_argument("--breaker-rate", type=float, default=5.0, help="calls a second per process")
    parser.add_argument("--breaker-seconds", type=float, default=6.0, help="length of each breaker run")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--load-seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--throughput-only", action="store_true", help="skip the fleet simulations")
    parser.add_argument("--quick", action="store_true", help="2 and 4 processes, shorter runs (about 1 minute)")
    args = parser.parse_args()
    if args.quick:
        args.processes, args.seconds, args.breaker_seconds, args.rounds = [2, 4], 3.0, 4.0, 2
    sys.path.insert(0, str(ROOT))
    from tests.redis_server import RedisServer, redis_server_path

    executable = redis_server_path()
    if executable is None:
        sys.exit("redis-server is not installed: apt-get install redis-server")
    server = RedisServer(executable)
    server.start()
    results: dict[str, Any] = {"budget": [], "breaker": []}
    try:
        results["path_cost"] = path_cost()
        print(json.dumps(results["path_cost"]), file=sys.stderr)
        results["throughput"] = throughput(server.url, args.rounds, args.concurrency, args.load_seconds)
        print(json.dumps(results["throughput"], indent=1), file=sys.stderr)
        for n in [] if args.throughput_only else args.processes:
            row: dict[str, Any] = {"processes": n}
            for shared in (False, True):
                row["shared" if shared else "local"] = fleet_budget(server.url, n, shared, args.rate, args.seconds)
            results["budget"].append(row)
            print(json.dumps(row), file=sys.stderr)
            row = {"processes": n}
            for shared in (False, True):
                row["shared" if shared else "local"] = fleet_breaker(
                    server.url, n, shared, args.breaker_rate, args.breaker_seconds
                )
            results["breaker"].append(row)
            print(json.dumps(row), file=sys.stderr)
    finally:
        server.stop()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fleet.json").write_text(json.dumps(results, indent=1))
    if results["budget"]:
        chart(results)
    print(f"written: {RESULTS / 'fleet.json'}, {CHART}", file=sys.stderr)


if __name__ == "__main__":
    main()
