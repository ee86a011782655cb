"""
CPU instructions per request, counted by valgrind (callgrind), not timed: the same figure
whatever else the machine is doing, so a change to the request path can be judged on a busy
machine. Each kind runs N1 and then N2 requests (C concurrent) against nginx on loopback in a
fresh process; (instructions(N2) - instructions(N1)) / (N2 - N1) is the cost of one request,
start-up and imports cancelled out.

    uv run --group bench python -m bench.instructions [--kinds ...] [--n1 300] [--n2 1300]

With `BENCH_BASELINE` set to a directory holding an earlier `fastapi_retry_http` (what
`bash bench/run --baseline REV` makes), a row counts that version too.

Needs valgrind (Debian's package). Python under valgrind runs about 50x slower: keep N small.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.bench import BASELINE, ROOT, Nginx, make_sender

KINDS = ["raw aiohttp", "Client (default: aiohttp)", "Client (round 2)", "bare httpx on our aiohttp transport"]


async def run(kind: str, url: str, count: int, concurrency: int) -> None:
    send, close = await make_sender(kind, url, concurrency)
    left = count

    async def loop() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await send()

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    await close()


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
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=1200)
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
    args = parser.parse_args()
    nginx = Nginx()
    try:
        url = nginx.url + "/"
        rows = {}
        for kind in [k for k in args.kinds if k != "Client (round 2)" or BASELINE]:
            low = instructions(kind, url, args.n1, args.concurrency)
            high = instructions(kind, url, args.n2, args.concurrency)
            rows[kind] = (high - low) / (args.n2 - args.n1)
    finally:
        nginx.stop()
    base = rows.get("raw aiohttp")
    print(f"Instructions per request (callgrind), C={args.concurrency}, {args.n2 - args.n1} requests\n")
    print("| client | instructions per request | against raw aiohttp |")
    print("|---|---|---|")
    for kind, count in rows.items():
        against = f"{count / base:.2f}x" if base else ""
        print(f"| {kind} | {count:,.0f} | {against} |")


if __name__ == "__main__":
    main()
