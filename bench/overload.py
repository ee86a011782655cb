"""
Overload, measured: an upstream of fixed capacity offered three times what it can serve.

A loopback upstream in its own process serves `workers` requests at once at `service` seconds
each (capacity C = workers / service requests a second); a short queue, then 503. Four caller
processes offer 3 x C calls a second between them for `--seconds`, every call with 3 attempts
and a 1 s deadline, then half of C for two throttle windows. Rows, each a fresh run:

- retries only (no budget);
- retries + budget (today's default);
- adaptive throttle, per process (each process its own `MemoryStore`);
- adaptive throttle + adaptive concurrency limit, throttle shared through one `RedisStore`.

Reported: goodput (200s within the deadline, per second, as % of C), requests reaching the
upstream per second / C, and the share of attempts refused in the first and the second
throttle window after the overload ends. Median of `--repeats` runs.

`uv run --group bench python -m bench.overload` (about 15 minutes; `--quick`: about 4).
Needs redis-server. Writes bench/results/overload.json and docs/overload-chart.png.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench import overload_processes

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CHART = ROOT / "docs" / "overload-chart.png"
ROWS = ("retries only", "retries + budget", "throttle, per process", "throttle + adaptive limit, shared")
CALLERS = 4


def run_row(row: str, redis_url: str, args: argparse.Namespace) -> dict[str, Any]:
    """One fresh upstream and four callers for `row`; the raw counts."""
    ctx = multiprocessing.get_context("spawn")
    port_out, results, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    server = ctx.Process(
        target=overload_processes.upstream,
        args=(port_out, stop, results, args.workers, args.service, args.queue),
        daemon=True,
    )
    server.start()
    url = f"http://127.0.0.1:{port_out.get(timeout=30)}"
    capacity = args.workers / args.service
    offsets = {  # seconds from the start; the start is set once every caller is ready
        "start": 0.0,
        "overload_end": args.seconds,
        "end": args.seconds + 2 * args.window,
        "rate_over": 3 * capacity / CALLERS,
        "rate_after": 0.5 * capacity / CALLERS,
        "deadline": 1.0,
        "window": args.window,
    }
    shared = redis_url if row.endswith("shared") else None
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    ready, go, start = ctx.Queue(), ctx.Event(), ctx.Value("d", 0.0)
    sync = (ready, go, start, results)
    callers = [
        ctx.Process(target=overload_processes.caller, args=(url, shared, prefix, row, offsets, sync), daemon=True)
        for _ in range(CALLERS)
    ]
    for process in callers:
        process.start()
    for _ in callers:
        ready.get(timeout=120)
    start.value = time.time() + 0.5
    go.set()
    plan = {**offsets, **{key: start.value + offsets[key] for key in ("start", "overload_end", "end")}}
    outputs = [results.get(timeout=plan["end"] - time.time() + 60) for _ in callers]
    stop.set()
    upstream = results.get(timeout=30)
    for process in [*callers, server]:
        process.join(10)
        if process.is_alive():
            process.kill()
    return {"plan": plan, "capacity": capacity, "upstream": upstream, "callers": outputs}


def summary(raw: dict[str, Any]) -> dict[str, float]:
    """Goodput and upstream load during the overload (its first second left out), refusals after."""
    plan, capacity = raw["plan"], raw["capacity"]
    begin, end = plan["start"] + 1.0, plan["overload_end"]
    seconds = end - begin
    good = sum(
        1
        for caller in raw["callers"]
        for started, took, kind in caller["calls"]
        if begin <= started < end and kind == "ok" and took <= plan["deadline"]
    )
    received = sum(counts[0] for b, counts in raw["upstream"].items() if begin * 10 <= b < end * 10)

    def refused_share(lo: float, hi: float) -> tuple[float, float]:
        def total(key: str) -> int:
            return sum(n for caller in raw["callers"] for b, n in caller[key].items() if lo * 10 <= b < hi * 10)

        refused = total("refused")
        return 100 * refused / max(1, total("sent") + refused), 100 * total("limited") / max(1, refused)

    window = plan["window"]
    first, _ = refused_share(end, end + window)
    second, by_limit = refused_share(end + window, end + 2 * window)
    return {
        "goodput_pct": 100 * good / seconds / capacity,
        "upstream_x": received / seconds / capacity,
        "refused_first_window_pct": first,
        "refused_second_window_pct": second,
        "second_window_by_limit_pct": by_limit,
    }


def series(raw: dict[str, Any]) -> dict[str, list[float]]:
    """Per second from the start: upstream requests / C, and goodput / C (by call start)."""
    plan, capacity = raw["plan"], raw["capacity"]
    seconds = int(plan["end"] - plan["start"])
    received = [0.0] * seconds
    good = [0.0] * seconds
    for b, counts in raw["upstream"].items():
        at = int(b / 10 - plan["start"])
        if 0 <= at < seconds:
            received[at] += counts[0] / capacity
    for caller in raw["callers"]:
        for started, took, kind in caller["calls"]:
            at = int(started - plan["start"])
            if 0 <= at < seconds and kind == "ok" and took <= plan["deadline"]:
                good[at] += 1 / capacity
    return {"upstream": received, "goodput": good}


def chart(results: dict[str, Any], overload_seconds: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    for row in ROWS:
        line = results["rows"][row]["series"]
        xs = range(len(line["upstream"]))
        top.plot(xs, line["upstream"], label=row)
        bottom.plot(xs, [100 * g for g in line["goodput"]], label=row)
    top.set(title="Requests reaching the upstream, per second / capacity C", ylabel="x C")
    bottom.set(title="Goodput: 200s within the 1 s deadline, % of C", ylabel="% of C", xlabel="seconds")
    for ax in (top, bottom):
        ax.axvline(overload_seconds, color="grey", linestyle="--", linewidth=1)
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    top.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(CHART, dpi=100)


def table(results: dict[str, Any]) -> str:
    lines = [
        "| row | goodput, % of C | upstream requests/s ÷ C | refused, 1st window after | refused, 2nd window after |",
        "|---|---|---|---|---|",
    ]
    for row in ROWS:
        m = results["rows"][row]["median"]
        lines.append(
            f"| {row} | {m['goodput_pct']:.0f}% | {m['upstream_x']:.2f} | "
            f"{m['refused_first_window_pct']:.2f}% | {m['refused_second_window_pct']:.2f}% |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 s of overload, 5 s windows, one run")
    parser.add_argument("--workers", type=int, default=8, help="requests the upstream serves at once")
    parser.add_argument("--service", type=float, default=0.05, help="seconds per request")
    parser.add_argument("--queue", type=int, default=8, help="requests waiting for a worker before 503s")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the overload")
    parser.add_argument("--window", type=float, default=10.0, help="the throttle's window (its default: 10)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.window, args.repeats = 10.0, 5.0, 1
    sys.path.insert(0, str(ROOT))
    from tests.redis_server import RedisServer, redis_server_path

    executable = redis_server_path()
    if executable is None:
        sys.exit("redis-server is not installed: apt-get install redis-server")
    redis = RedisServer(executable)
    redis.start()
    results: dict[str, Any] = {"args": vars(args), "rows": {}}
    try:
        for row in ROWS:
            runs = [run_row(row, redis.url, args) for _ in range(args.repeats)]
            summaries = [summary(raw) for raw in runs]
            median = {key: statistics.median(s[key] for s in summaries) for key in summaries[0]}
            middle = min(range(len(runs)), key=lambda i: abs(summaries[i]["goodput_pct"] - median["goodput_pct"]))
            results["rows"][row] = {"runs": summaries, "median": median, "series": series(runs[middle])}
            print(row, json.dumps(median), file=sys.stderr)
    finally:
        redis.stop()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "overload.json").write_text(json.dumps(results, indent=1))
    chart(results, args.seconds)
    print(table(results))
    print(f"written: {RESULTS / 'overload.json'}, {CHART}", file=sys.stderr)


if __name__ == "__main__":
    main()
