"""
Quotas, measured: a loopback upstream that allows 100 requests in any 1 s per key (429 with
`Retry-After` beyond, the IETF draft's `RateLimit`/`RateLimit-Policy` on every answer), and
4 OS processes x 16 callers sending as fast as they may, with three set-ups side by side:

- shared: `RateLimit(rate=100)` and one `RedisStore` (the fleet shares one quota);
- per-process: `RateLimit(rate=100, follow_server=False)` in each process (what users do
  today with a per-process limiter such as aiolimiter);
- none: no limiter (the retry policy alone, which honours `Retry-After` per call).

For each: the most upstream requests in any 1 s window (sliding, not aligned), the share of
the quota used (answers 200 / (100 x seconds)), the share answered 429, the limiter's Redis
round trips per request and every Redis command per request (`INFO commandstats`, the
store's background flush included). Then a light run (the fleet at 40% of the quota) for the
wait for a slot when one is free (p99), and a shared run with Redis stopped for 5 s in the
middle: calls failed because of Redis, and the upstream's rate during the outage.

`uv run --group bench python -m bench.quota` (median of `--repeats` runs; about 4 minutes),
`--quick` for a short check. Needs redis-server. Writes bench/results/quota.json and
docs/quota-chart.png.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import multiprocessing
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.fleet import in_processes

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CHART = ROOT / "docs" / "quota-chart.png"
QUOTA = 100
UPSTREAM_BURST = 5
MODES = ("shared", "per-process", "none")


class Upstream:
    """
    `QUOTA` requests a second, enforced as GCRA with a tolerance of `UPSTREAM_BURST` requests
    (a late packet does not cost a 429, as with nginx's `limit_req burst=`): at most
    `QUOTA + UPSTREAM_BURST` in any second. Records (monotonic time, status).
    """

    def __init__(self) -> None:
        self.hits: list[tuple[float, int]] = []
        self._tat = 0.0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

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

    def _answer(self, now: float) -> bytes:
        interval = 1.0 / QUOTA
        tolerance = UPSTREAM_BURST * interval
        # r: requests that would pass right now; t: whole seconds to a full allowance, rounded down.
        policy = f'RateLimit-Policy: "default";q={QUOTA};w=1\r\n'
        if self._tat - tolerance > now:
            self.hits.append((now, 429))
            head = f'HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nRateLimit: "default";r=0;t=0\r\n{policy}'
        else:
            self._tat = max(self._tat, now) + interval
            self.hits.append((now, 200))
            left = max(0, int((now + tolerance - self._tat) / interval) + 1)
            head = f'HTTP/1.1 200 OK\r\nRateLimit: "default";r={left};t=0\r\n{policy}'
        return (head + "Content-Length: 2\r\n\r\nok").encode()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(self._answer(time.monotonic()))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


def worker(
    url: str, redis_url: str | None, prefix: str, mode: str, callers: int, seconds: float, pace: float, sync: Any
) -> Any:
    """One process: once all are ready, `callers` loops calling for `seconds`, as fast as the
    client lets them, or `pace` calls a second each."""
    from fastapi_retry_http import Client, MemoryStore, RateLimit, RetryPolicy
    from fastapi_retry_http.exceptions import RateLimitedError

    limit = {
        "shared": RateLimit(rate=QUOTA, max_wait=10),
        "per-process": RateLimit(rate=QUOTA, max_wait=10, follow_server=False),
        "none": None,
    }[mode]
    store: Any = MemoryStore()
    if redis_url is not None:
        from fastapi_retry_http.redis import RedisStore

        store = RedisStore(redis_url, prefix=prefix)
    calls, errors, admission = collections.Counter[str](), collections.Counter[str](), list[float]()
    end = 0.0

    async def loop(client: Client) -> None:
        while time.monotonic() < end:
            if pace:
                await asyncio.sleep(1 / pace)
            try:
                calls[str((await client.get("/")).status_code)] += 1
            except RateLimitedError:
                errors["RateLimitedError"] += 1
            except Exception as error:  # counted: a failure the limiter must never cause
                errors[type(error).__name__] += 1

    async def main() -> Any:
        async with store, Client(url, name="partner", rate_limit=limit, store=store, retry=RetryPolicy()) as client:
            gate = client.transport.strategies.by_option.get("rate_limit")
            if gate is not None:
                timed(gate, admission)
            ready, go, start = sync
            ready.put(1)
            await asyncio.to_thread(go.wait, 120)
            await asyncio.sleep(max(0.0, start.value - time.time()))
            nonlocal end
            end = time.monotonic() + seconds
            await asyncio.gather(*(loop(client) for _ in range(callers)))
            trips = getattr(gate.limiter, "round_trips", 0) if gate is not None else 0
        return {"calls": dict(calls), "errors": dict(errors), "round_trips": trips, "admission": admission}

    return asyncio.run(main())


def timed(gate: Any, waits: list[float]) -> None:
    """Record how long each admission by `gate` takes (a slot at once, a lease, or a wait)."""
    admit = gate.admit

    def measured(call: Any) -> Any:
        started = time.perf_counter()
        answer = admit(call)
        if answer is None or not hasattr(answer, "__await__"):
            waits.append(time.perf_counter() - started)
            return answer

        async def waiting() -> Any:
            try:
                return await answer
            finally:
                waits.append(time.perf_counter() - started)

        return waiting()

    gate.admit = measured


def most_in_window(times: list[float], span: float = 1.0) -> int:
    ordered, best, first = sorted(times), 0, 0
    for last, t in enumerate(ordered):
        while ordered[first] <= t - span:
            first += 1
        best = max(best, last - first + 1)
    return best


def run(
    redis: Any, mode: str, seconds: float, processes: int, callers: int, outage: float = 0.0, pace: float = 0.0
) -> dict[str, Any]:
    with Upstream() as upstream:
        url, prefix = f"http://127.0.0.1:{upstream.port}", f"bench-{uuid.uuid4().hex[:8]}"
        ctx = multiprocessing.get_context("spawn")
        sync = (ctx.Queue(), ctx.Event(), ctx.Value("d", 0.0))
        shared = redis.url if mode == "shared" else None
        args = [(url, shared, prefix, mode, callers, seconds, pace, sync) for _ in range(processes)]
        commands_before = redis_commands(redis)
        stopped: list[float] = []

        def all_ready() -> None:
            for _ in range(processes):  # spawned, imported, connected
                sync[0].get(timeout=120)
            sync[2].value = start = time.time() + 0.2
            sync[1].set()
            if outage:
                threading.Thread(target=outage_thread, args=(start,), daemon=True).start()

        def outage_thread(start: float) -> None:
            time.sleep(max(0.0, start + (seconds - outage) / 2 - time.time()))
            stopped.append(time.monotonic())
            redis.stop()
            time.sleep(outage)
            redis.start()
            stopped.append(time.monotonic())

        results = in_processes(worker, args, started=all_ready, timeout=seconds + 120)
        hits = list(upstream.hits)
    requests = sum(sum(r["calls"].values()) for r in results)
    ok = sum(1 for _, status in hits if status == 200)
    first, last = min(t for t, _ in hits), max(t for t, _ in hits)
    row: dict[str, Any] = {
        "mode": mode,
        "max_in_1s": most_in_window([t for t, _ in hits]),
        "quota_used": ok / (QUOTA * (last - first)),
        "pct_429": 100 * sum(1 for _, s in hits if s == 429) / max(1, len(hits)),
        "upstream_requests": len(hits),
        "calls": requests,
        "errors": dict(sum((collections.Counter(r["errors"]) for r in results), collections.Counter())),
        "leases_per_request": sum(r["round_trips"] for r in results) / max(1, len(hits)),
        "redis_round_trips_per_request": (redis_commands(redis) - commands_before) / max(1, len(hits))
        if mode == "shared" and not outage
        else 0.0,
        "per_second": per_second(hits, first),
    }
    waits = sorted(w for r in results for w in r["admission"])
    row["p99_admission_ms"] = 1000 * waits[int(0.99 * (len(waits) - 1))] if waits else None
    if outage:
        during = [t for t, _ in hits if stopped[0] <= t < stopped[1]]
        row["outage"] = {"seconds": stopped[1] - stopped[0], "rate": len(during) / (stopped[1] - stopped[0])}
        row["outage"]["from"] = stopped[0] - first
    return row


def per_second(hits: list[tuple[float, int]], first: float) -> list[int]:
    counts = collections.Counter(int(t - first) for t, _ in hits)
    return [counts.get(i, 0) for i in range(max(counts) + 1)]


def redis_commands(redis: Any) -> int:
    reply = redis.command("INFO", "commandstats").decode()
    # Round trips: the commands clients send (those inside a script are not counted apart).
    sent = ("evalsha", "eval", "ping", "hello", "script|load", "client|setinfo", "select")
    lines = [line for line in reply.splitlines() if "calls=" in line]
    calls = {line.split(":")[0][8:]: int(line.split("calls=")[1].split(",")[0]) for line in lines}
    return sum(calls.get(name, 0) for name in sent)


def chart(results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for mode, style in zip(MODES, ("-", "--", ":"), strict=True):
        series = results["runs"][mode][0]["per_second"]
        left.plot(range(len(series)), series, style, label=mode)
    left.axhline(QUOTA, color="grey", linewidth=0.8)
    left.set(title="4 processes x 16 callers, quota 100/s", xlabel="second", ylabel="upstream requests")
    outage = results["outage"]
    series = outage["per_second"]
    right.plot(range(len(series)), series, "-", label="shared, Redis stopped")
    start = outage["outage"]["from"]
    right.axvspan(start, start + outage["outage"]["seconds"], alpha=0.2, color="red", label="Redis down")
    right.axhline(QUOTA, color="grey", linewidth=0.8)
    right.set(title="Redis stopped mid-run", xlabel="second", ylabel="upstream requests")
    for ax in (left, right):
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(CHART, dpi=100)


def table(results: dict[str, Any]) -> str:
    lines = [
        "| set-up | max requests in any 1 s | quota used | answered 429 "
        "| leases / request (the limit) | Redis round trips / request (all) |",
        "|---|---|---|---|---|---|",
    ]
    for mode in MODES:
        row = results["median"][mode]
        lines.append(
            f"| {mode} | {row['max_in_1s']:.0f} | {100 * row['quota_used']:.1f}% | {row['pct_429']:.2f}% "
            f"| {row['leases_per_request']:.3f} | {row['redis_round_trips_per_request']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one short run of each")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--outage", type=float, default=5.0)
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.repeats, args.outage = 6.0, 1, 2.0
    sys.path.insert(0, str(ROOT))
    from tests.redis_server import RedisServer, redis_server_path

    executable = redis_server_path()
    if executable is None:
        sys.exit("redis-server is not installed: apt-get install redis-server")
    redis = RedisServer(executable)
    redis.start()
    results: dict[str, Any] = {"seconds": args.seconds, "runs": {m: [] for m in MODES}, "median": {}}
    try:
        for _ in range(args.repeats):
            for mode in MODES:  # interleaved: a noisy minute hurts every set-up alike
                results["runs"][mode].append(run(redis, mode, args.seconds, 4, 16))
                print(json.dumps({k: v for k, v in results["runs"][mode][-1].items() if k != "per_second"}))
        for mode in MODES:
            runs = results["runs"][mode]
            results["median"][mode] = {
                key: statistics.median(r[key] for r in runs)
                for key in ("max_in_1s", "quota_used", "pct_429", "leases_per_request", "redis_round_trips_per_request")
            }
        light = run(redis, "shared", min(args.seconds, 5.0), 4, 2, pace=5.0)  # 40% of the quota: slots are free
        results["light"] = {"p99_admission_ms": light["p99_admission_ms"], "quota_used": light["quota_used"]}
        results["outage"] = run(redis, "shared", max(args.seconds, 3 * args.outage), 4, 16, outage=args.outage)
        print(json.dumps({k: v for k, v in results["outage"].items() if k != "per_second"}))
    finally:
        redis.stop()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "quota.json").write_text(json.dumps(results, indent=1))
    chart(results)
    print(table(results))
    print(f"p99 wait for a slot when free: {results['light']['p99_admission_ms']:.2f} ms")
    outage = results["outage"]
    down = outage["outage"]
    print(f"Redis down {down['seconds']:.1f} s: upstream {down['rate']:.1f} req/s; errors {outage['errors']}")


if __name__ == "__main__":
    main()
