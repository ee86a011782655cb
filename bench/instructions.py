"""
CPU instructions per request, counted by valgrind (callgrind), not timed: the same figure
whatever else the machine is doing, so a change to the request path can be judged on a busy
machine. Each kind runs N1 and then N2 requests (C concurrent) against nginx on loopback in a
fresh process; (instructions(N2) - instructions(N1)) / (N2 - N1) is the cost of one request,
start-up and imports cancelled out.

    uv run --group bench python -m bench.instructions [--kinds ...] [--n1 300] [--n2 1300]
    uv run --group bench python -m bench.instructions --strategies [--rows rate_limit hedge] [--jobs 1]

`--strategies` counts the rows of `bench/strategies.py` instead (the default `Client`, then
each strategy of the round on, or those whose name holds a word of `--rows`), against the
default. Every count runs with one hash seed (`PYTHONHASHSEED=0`), so dict and set probes
repeat: a row repeats to about 0.1% run to run, the rest being how many answers one turn of
the event loop handles. Two counts at once (`--jobs 2`) move that more. Each run sends to
its own path, which nginx logs: the last column is the upstream requests per call (a hedge
is one more).

With `BENCH_BASELINE` set to a directory holding an earlier `fastapi_retry_http` (what
`bash bench/run --baseline REV` makes), a row counts that version too.

Needs valgrind (Debian's package). Python under valgrind runs about 50x slower: keep N small.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.bench import BASELINE, ROOT, Nginx, make_sender
from bench.strategies import ROWS as STRATEGY_ROWS
from bench.strategies import sender as strategy_sender

KINDS = ["raw aiohttp", "Client (default: aiohttp)", "Client (round 2)", "bare httpx on our aiohttp transport"]


async def run(kind: str, url: str, count: int, concurrency: int) -> None:
    if kind in STRATEGY_ROWS:
        send, close = await strategy_sender(kind, url, concurrency)
    else:
        send, close = await make_sender(kind, url, concurrency)
    left = count

    async def loop() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await send()

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    await close()


def upstream_requests(nginx: Nginx, run: str) -> int:
    """The requests nginx logged for one run's path (hedges included)."""
    return nginx.flaky_log("counted").count(f"/counted/{run}")


def instructions(kind: str, url: str, count: int, concurrency: int) -> int:
    cwd = ROOT
    if kind == "Client (round 2)":  # the earlier package first on the path (bench/run --baseline)
        cwd, kind = Path(BASELINE), "Client (default: aiohttp)"
    with tempfile.NamedTemporaryFile() as out:
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out.name}",
            sys.executable,
            "-m",
            "bench.instructions",
            "worker",
            kind,
            url,
            str(count),
            str(concurrency),
        ]
        # One hash seed for every run: dict and set probes then repeat (±1% between runs otherwise).
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"{kind}: valgrind failed:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        kind, url, count, concurrency = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        asyncio.run(run(kind, url, count, concurrency))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kinds", nargs="+", default=KINDS)
    parser.add_argument("--n1", type=int, default=300)
    parser.add_argument("--n2", type=int, default=1300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--strategies", action="store_true", help="each strategy on against the default")
    parser.add_argument("--jobs", type=int, default=1, help="valgrind runs at once (one per core)")
    parser.add_argument("--rows", nargs="+", default=[""], help="with --strategies: rows naming one of these")
    args = parser.parse_args()
    if args.strategies:
        default, *others = STRATEGY_ROWS
        kinds = [default, *(row for row in others if any(word in row for word in args.rows))]
    else:
        kinds = [k for k in args.kinds if k != "Client (round 2)" or BASELINE]
    nginx = Nginx()
    try:
        # Each run on its own logged path: what it sent upstream is counted (a hedge is a request).
        runs = {(kind, n): f"{index}-{n}" for index, kind in enumerate(kinds) for n in (args.n1, args.n2)}
        with ThreadPoolExecutor(args.jobs) as pool:
            counts = {
                key: pool.submit(instructions, key[0], f"{nginx.url}/counted/{run}", key[1], args.concurrency)
                for key, run in runs.items()
            }
            spread = args.n2 - args.n1
            rows = {kind: (counts[kind, args.n2].result() - counts[kind, args.n1].result()) / spread for kind in kinds}
        logged = {key: upstream_requests(nginx, run) for key, run in runs.items()}
        sent = {kind: (logged[kind, args.n2] - logged[kind, args.n1]) / spread for kind in kinds}
    finally:
        nginx.stop()
    base_name = kinds[0] if args.strategies else "raw aiohttp"
    base = rows.get(base_name)
    print(f"Instructions per request (callgrind), C={args.concurrency}, {args.n2 - args.n1} requests\n")
    against_what = "the default" if args.strategies else base_name
    print(f"| client | instructions per request | against {against_what} | upstream requests per call |")
    print("|---|---|---|---|")
    for kind, count in rows.items():
        against = f"{count / base:.3f}x" if base else ""
        print(f"| {kind} | {count:,.0f} | {against} | {sent[kind]:.3f} |")


if __name__ == "__main__":
    main()
