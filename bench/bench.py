"""
Side-by-side benchmark: our `Client` against raw httpx and raw aiohttp, same nginx, same run.

Each measurement runs in a fresh process pinned to one core (nginx gets the other), rounds
are interleaved so that machine noise hits every client alike, and ratios are taken against
raw httpx *from the same round*. Run it with `bash bench/run`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

#: name -> what it measures. "bare" rows are an httpx.AsyncClient on our inner transport:
#: the Client row on the same transport shows what the retry layer itself costs.
KINDS = {
    "raw httpx": "httpx.AsyncClient, httpx's own pool (httpcore)",
    "raw aiohttp": "aiohttp.ClientSession: the practical Python limit",
    "bare httpx on aiohttp transport": "httpx.AsyncClient(transport=AiohttpTransport)",
    "Client (default: aiohttp)": "our Client, default backend",
    "Client (backend=httpx)": "our Client on httpx's pool",
}


# --------------------------------------------------------------------------- worker side


async def make_sender(kind: str, url: str, concurrency: int) -> tuple[Callable[[], Awaitable[int]], Any]:
    import aiohttp
    import httpx

    from fastapi_retry_http import Client
    from fastapi_retry_http._backends.aiohttp_pool import AiohttpTransport
    from fastapi_retry_http._backends.tls import tls_context

    limits = httpx.Limits(max_connections=max(concurrency, 1), max_keepalive_connections=max(concurrency, 1))
    if kind == "raw aiohttp":
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))

        async def send_aiohttp() -> int:
            async with session.get(url) as response:
                await response.read()
                return response.status

        return send_aiohttp, session.close
    if kind == "raw httpx":
        client: Any = httpx.AsyncClient(limits=limits)
    elif kind == "bare httpx on aiohttp transport":
        transport = AiohttpTransport(ssl_context=tls_context(True, False), limits=limits)
        client = httpx.AsyncClient(transport=transport)
    elif kind == "Client (default: aiohttp)":
        client = Client(allow_absolute_urls=True, limits=limits)
    elif kind == "Client (no retry budget)":
        client = Client(allow_absolute_urls=True, limits=limits, retry_budget=None)
    elif kind == "Client (backend=httpx)":
        client = Client(allow_absolute_urls=True, limits=limits, backend="httpx")
    else:
        raise SystemExit(f"unknown kind {kind!r}")

    async def send() -> int:
        response = await client.get(url)
        return int(response.status_code)

    return send, client.aclose


async def measure(kind: str, url: str, concurrency: int, seconds: float) -> dict[str, Any]:
    send, close = await make_sender(kind, url, concurrency)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    stop_at = 0.0
    recording = False
    sent = 0

    async def loop() -> None:
        nonlocal sent
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            status = await send()
            sent += 1
            if recording:
                latencies.append(time.perf_counter() - started)
                statuses[status] = statuses.get(status, 0) + 1

    stop_at = time.perf_counter() + min(0.5, seconds / 4)  # warm up: connections, caches
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    recording = True
    cpu, wall = time.process_time(), time.perf_counter()
    stop_at = wall + seconds
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await close()
    latencies.sort()
    n = len(latencies)
    return {
        "rps": n / wall,
        "cpu_us": cpu / n * 1e6,
        "p50_ms": latencies[n // 2] * 1e3,
        "p99_ms": latencies[min(n - 1, int(n * 0.99))] * 1e3,
        "calls": n,
        "calls_with_warmup": sent,
        "statuses": statuses,
    }


def worker(args: argparse.Namespace) -> None:
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cores[-1]})  # the client on one core; nginx on another
    if args.uvloop:
        import uvloop

        uvloop.install()
    print(json.dumps(asyncio.run(measure(args.kind, args.url, args.concurrency, args.seconds))))


# --------------------------------------------------------------------------- orchestrator


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Nginx:
    """nginx on a random loopback port, from our config, stopped by its PID."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
        self.port = free_port()
        template = (ROOT / "bench" / "nginx.conf.template").read_text()
        (self.dir / "nginx.conf").write_text(template.format(dir=self.dir, port=self.port))
        binary = (
            "nginx" if subprocess.run(["which", "nginx"], capture_output=True).returncode == 0 else "/usr/sbin/nginx"
        )
        cores = sorted(os.sched_getaffinity(0))
        self.process = subprocess.Popen(
            [binary, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf")],
            preexec_fn=lambda: os.sched_setaffinity(0, {cores[0]}),
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise SystemExit("nginx did not start: " + (self.dir / "error.log").read_text()) from None
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def flaky_log(self, name: str = "flaky") -> list[str]:
        """The connection number of each request to /flaky (or /down) so far."""
        path = self.dir / f"{name}.log"
        return path.read_text().split() if path.exists() else []

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def run_worker(kind: str, url: str, concurrency: int, seconds: float, uvloop: bool = False) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.bench", "worker", kind, url, str(concurrency), str(seconds)]
    if uvloop:
        command.append("--uvloop")
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=seconds * 10 + 30)
    if out.returncode != 0:
        raise SystemExit(f"worker {kind} C={concurrency} failed:\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def client_build_costs() -> dict[str, float]:
    script = """
import asyncio, time, httpx
from fastapi import FastAPI
from fastapi_retry_http import Client, ClientRegistry, clients_lifespan
t = time.perf_counter(); httpx.AsyncClient(); raw = time.perf_counter() - t
t = time.perf_counter(); [Client(f"https://s{i}.internal") for i in range(50)]; ours = (time.perf_counter() - t) / 50
configs = {f"s{i}": {"base_url": f"https://s{i}.internal"} for i in range(50)}
async def start():
    app = FastAPI(); life = clients_lifespan(configs, registry=ClientRegistry())
    t = time.perf_counter()
    async with life(app):
        return time.perf_counter() - t
print(raw * 1e3, ours * 1e3, asyncio.run(start()) * 1e3)
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    raw, ours, lifespan = map(float, out.stdout.split())
    return {
        "first raw httpx.AsyncClient (ms)": raw,
        "Client, each of 50 (ms)": ours,
        "lifespan with 50 clients (ms)": lifespan,
    }


def main(args: argparse.Namespace) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    nginx = Nginx()
    rows: dict[tuple[str, int], list[dict[str, Any]]] = {}
    kinds = list(KINDS) + (["Client (default: aiohttp) + uvloop"] if args.uvloop_row else [])
    try:
        started = time.monotonic()
        for round_ in range(args.rounds if not args.scenarios_only else 0):
            for concurrency in args.concurrency:
                for kind in kinds if round_ % 2 == 0 else reversed(kinds):
                    use_uvloop = kind.endswith("+ uvloop")
                    base = kind.removesuffix(" + uvloop")
                    result = run_worker(base, nginx.url + "/", concurrency, args.seconds, use_uvloop)
                    rows.setdefault((kind, concurrency), []).append({**result, "round": round_})
            print(f"round {round_ + 1}/{args.rounds} done ({time.monotonic() - started:.0f}s)", file=sys.stderr)
        before = len(nginx.flaky_log())
        flaky = run_worker("Client (default: aiohttp)", nginx.url + "/flaky", 16, args.seconds)
        log = nginx.flaky_log()[before:]
        down = outage(nginx, args.outage_seconds)
    finally:
        nginx.stop()
    report = render(rows, args, flaky, len(log), len(set(log)), client_build_costs())
    report += "\n\n" + render_outage(down, args.outage_seconds)
    print(report)
    (RESULTS / "results.md").write_text(report)
    (RESULTS / "results.json").write_text(json.dumps({f"{k}|{c}": v for (k, c), v in rows.items()}, indent=1))
    if rows:
        chart(rows, args.concurrency, RESULTS / "chart.png")
    print(f"\nwritten: {RESULTS / 'results.md'}, {RESULTS / 'chart.png'}", file=sys.stderr)


def outage(nginx: Nginx, seconds: float) -> dict[str, tuple[int, int]]:
    """Calls and upstream requests at C=16 against an upstream answering only 503, by budget."""
    counts = {}
    for kind in ("Client (default: aiohttp)", "Client (no retry budget)"):
        before = len(nginx.flaky_log("down"))
        result = run_worker(kind, nginx.url + "/down", 16, seconds)
        counts[kind] = (result["calls_with_warmup"], len(nginx.flaky_log("down")) - before)
    return counts


def render_outage(counts: dict[str, tuple[int, int]], seconds: float) -> str:
    out = [
        f"Upstream down (every answer 503), RetryPolicy() (3 attempts), C=16 for {seconds:g} s:",
        "",
        "| client | calls | upstream requests | requests per call |",
        "|---|---|---|---|",
    ]
    for kind, (calls, requests) in counts.items():
        out.append(f"| {kind} | {calls:,} | {requests:,} | {requests / max(calls, 1):.2f} |")
    return "\n".join(out)


def ratio(rows: dict[tuple[str, int], list[dict[str, Any]]], kind: str, base: str, concurrency: int) -> float:
    """Median over rounds of kind/base, each taken within its own round."""
    base_by_round = {r["round"]: r["rps"] for r in rows[(base, concurrency)]}
    return statistics.median(r["rps"] / base_by_round[r["round"]] for r in rows[(kind, concurrency)])


def render(
    rows: dict[tuple[str, int], list[dict[str, Any]]],
    args: argparse.Namespace,
    flaky: dict[str, Any],
    flaky_requests: int,
    flaky_connections: int,
    costs: dict[str, float],
) -> str:
    kinds = sorted({k for k, _ in rows}, key=lambda k: [*KINDS, k].index(k))
    cs = args.concurrency
    out = [
        f"Requests per second (median of {args.rounds} interleaved rounds, {args.seconds:g} s each; "
        "ratio to raw httpx in the same round):",
        "",
        "| client | " + " | ".join(f"C={c}" for c in cs) + f" | CPU µs/req C={cs[-1]} | p50 / p99 ms C={cs[-1]} |",
        "|---|" + "---|" * (len(cs) + 2),
    ]
    for kind in kinds:
        cells = []
        for c in cs:
            rps = statistics.median(r["rps"] for r in rows[(kind, c)])
            cells.append(f"{rps:,.0f} ({ratio(rows, kind, 'raw httpx', c):.2f}×)")  # noqa: RUF001
        last = rows[(kind, cs[-1])]
        cpu = statistics.median(r["cpu_us"] for r in last)
        p50 = statistics.median(r["p50_ms"] for r in last)
        p99 = statistics.median(r["p99_ms"] for r in last)
        out.append(f"| {kind} | " + " | ".join(cells) + f" | {cpu:,.0f} | {p50:.1f} / {p99:.1f} |")
    out += ["", "Retry layer cost, `Client` over a bare `httpx.AsyncClient` on the same transport:", ""]
    for c in cs if rows else []:
        overhead = ratio(rows, "Client (default: aiohttp)", "bare httpx on aiohttp transport", c)
        out.append(f"- C={c}: {overhead:.3f}×")  # noqa: RUF001
    ok = flaky["statuses"].get("200", 0)
    calls = flaky["calls"]
    out += [
        "",
        f"20% 503s, RetryPolicy() (3 attempts), C=16: {calls} calls, success rate {ok / calls:.2%}, "
        f"{flaky_requests / max(flaky['calls_with_warmup'], 1):.3f} server requests per call, "
        f"{flaky_connections} TCP connections for {flaky_requests} requests.",
        "",
        "Building clients: " + ", ".join(f"{k}: {v:.2f}" for k, v in costs.items()) + ".",
    ]
    return "\n".join(out)


def chart(rows: dict[tuple[str, int], list[dict[str, Any]]], cs: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = sorted({k for k, _ in rows}, key=lambda k: [*KINDS, k].index(k))
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(kinds)
    for i, kind in enumerate(kinds):
        values = [statistics.median(r["rps"] for r in rows[(kind, c)]) for c in cs]
        ax.bar([x + i * width for x in range(len(cs))], values, width, label=kind)
    ax.set_xticks([x + width * (len(kinds) - 1) / 2 for x in range(len(cs))], [f"C={c}" for c in cs])
    ax.set_ylabel("requests per second")
    ax.set_title("GET of a 2-byte body from nginx on loopback, client pinned to one core")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command")
    w = sub.add_parser("worker")
    w.add_argument("kind")
    w.add_argument("url")
    w.add_argument("concurrency", type=int)
    w.add_argument("seconds", type=float)
    w.add_argument("--uvloop", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="measured seconds per cell")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 128])
    parser.add_argument("--uvloop-row", action="store_true", help="add a row for the Client on uvloop")
    parser.add_argument("--outage-seconds", type=float, default=10.0, help="length of the all-503 run")
    parser.add_argument("--scenarios-only", action="store_true", help="skip the throughput table")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    if arguments.command == "worker":
        worker(arguments)
    else:
        main(arguments)
