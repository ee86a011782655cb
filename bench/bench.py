"""
Side-by-side benchmark: our `Client` against raw aiohttp, raw httpx (and httpx2), and the
retrying clients a user would pick instead, same nginx, same run.

Each measurement runs in a fresh process pinned to one core (nginx gets the other), rounds
are interleaved so that machine noise hits every client alike, and ratios are taken against
raw aiohttp *from the same round*. Run it with `bash bench/run` (about 4 minutes).
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

#: name -> what it measures, in table order. "bare" is an httpx.AsyncClient on our inner
#: transport: the Client row on the same transport shows what the retry layer itself costs.
KINDS = {
    "raw aiohttp": "aiohttp.ClientSession: the practical Python limit",
    "raw httpx": "httpx.AsyncClient, httpx's own pool (httpcore)",
    "raw httpx2": "httpx2.AsyncClient, its own pool",
    "httpx on httpx-aiohttp": "httpx.AsyncClient(transport=httpx_aiohttp.AiohttpTransport())",
    "bare httpx on our aiohttp transport": "httpx.AsyncClient(transport=AiohttpTransport)",
    "httpx + httpx-retries": "httpx.AsyncClient(transport=httpx_retries.RetryTransport(...))",
    "httpx + tenacity decorator": "httpx.AsyncClient, each call in a tenacity @retry",
    "aiohttp + aiohttp-retry": "aiohttp_retry.RetryClient(ExponentialRetry(...))",
    "Client (default: aiohttp)": "our Client, default backend",
    "Client + uvloop": "our Client, default backend, on uvloop",
    "Client (backend=httpx)": "our Client on httpx's pool",
    "Client (round 2)": "our Client as round 2 left it (bash bench/run --baseline REV)",
}
#: The rows of a plain run; the others with --kinds (the run stays under 5 minutes).
DEFAULT_KINDS = [kind for kind in KINDS if kind not in ("Client (backend=httpx)", "Client (round 2)")]
#: Where `bench/run --baseline REV` unpacks an earlier version of the package, for its row.
BASELINE = os.environ.get("BENCH_BASELINE", "")
#: The rows that retry, each configured like `RetryPolicy()`: 3 attempts, 0.1 s x 2^n full
#: jitter backoff, on 408/429/502/503/504.
RETRYING = [
    "httpx + httpx-retries",
    "httpx + tenacity decorator",
    "aiohttp + aiohttp-retry",
    "Client (default: aiohttp)",
]
STATUSES = frozenset({408, 429, 502, 503, 504})


def available(kind: str) -> bool:
    """Whether the packages a row needs are installed (httpx2 is optional, the baseline too)."""
    if kind == "Client (round 2)":
        return bool(BASELINE) and (Path(BASELINE) / "fastapi_retry_http").is_dir()
    import importlib.util

    needs = {"raw httpx2": "httpx2", "Client + uvloop": "uvloop"}.get(kind)
    return needs is None or importlib.util.find_spec(needs) is not None


# --------------------------------------------------------------------------- worker side


def last_result(state: Any) -> Any:
    """tenacity's `retry_error_callback` returning the last attempt's result."""
    return state.outcome.result()


async def make_sender(kind: str, url: str, concurrency: int) -> tuple[Callable[[], Awaitable[int]], Any]:
    import aiohttp
    import httpx

    limits = httpx.Limits(max_connections=max(concurrency, 1), max_keepalive_connections=max(concurrency, 1))
    if kind in ("raw aiohttp", "aiohttp + aiohttp-retry"):
        session: Any = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))
        if kind == "aiohttp + aiohttp-retry":
            from aiohttp_retry import ExponentialRetry, RetryClient

            options = ExponentialRetry(attempts=3, start_timeout=0.1, factor=2, statuses=set(STATUSES))
            session = RetryClient(client_session=session, retry_options=options)

        async def send_aiohttp() -> int:
            async with session.get(url) as response:
                await response.read()
                return int(response.status)

        return send_aiohttp, session.close
    if kind == "raw httpx2":
        import httpx2

        limits2 = httpx2.Limits(max_connections=max(concurrency, 1), max_keepalive_connections=max(concurrency, 1))
        client: Any = httpx2.AsyncClient(limits=limits2)
    elif kind == "raw httpx":
        client = httpx.AsyncClient(limits=limits)
    elif kind == "httpx on httpx-aiohttp":
        import httpx_aiohttp

        client = httpx.AsyncClient(transport=httpx_aiohttp.AiohttpTransport(limits=limits))
    elif kind == "bare httpx on our aiohttp transport":
        from fastapi_retry_http._backends.aiohttp_pool import AiohttpTransport
        from fastapi_retry_http._backends.tls import tls_context

        client = httpx.AsyncClient(transport=AiohttpTransport(ssl_context=tls_context(True, False), limits=limits))
    elif kind == "httpx + httpx-retries":
        from httpx_retries import Retry, RetryTransport

        retry = Retry(total=2, backoff_factor=0.1, backoff_jitter=1.0, status_forcelist=STATUSES)
        inner = httpx.AsyncHTTPTransport(limits=limits)
        client = httpx.AsyncClient(transport=RetryTransport(transport=inner, retry=retry))
    elif kind == "httpx + tenacity decorator":
        import tenacity

        client = httpx.AsyncClient(limits=limits)

        @tenacity.retry(
            stop=tenacity.stop_after_attempt(3),
            wait=tenacity.wait_random_exponential(multiplier=0.1, max=10),
            retry=tenacity.retry_if_exception_type(httpx.TransportError)
            | tenacity.retry_if_result(lambda r: r.status_code in STATUSES),
            retry_error_callback=last_result,  # the last response, as the other rows return it
        )
        async def get() -> httpx.Response:
            response: httpx.Response = await client.get(url)
            return response

        async def send_tenacity() -> int:
            return int((await get()).status_code)

        return send_tenacity, client.aclose
    else:
        from fastapi_retry_http import Client

        # As the Client is meant to be used: a base URL, and each call a path relative to it.
        base, path = url.rsplit("/", 1)
        url = path or "/"
        if kind in ("Client (default: aiohttp)", "Client + uvloop"):
            client = Client(base, limits=limits)
        elif kind == "Client (no retry budget)":
            client = Client(base, limits=limits, retry_budget=None)
        elif kind == "Client (backend=httpx)":
            client = Client(base, limits=limits, backend="httpx")
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

    stop_at = time.perf_counter() + min(0.5, seconds / 4)  # warm up: connections, caches, JIT-free paths
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
    if args.command == "memory":
        print(json.dumps(asyncio.run(memory(args.kind, args.url))))
        return
    running = measure(args.kind, args.url, args.concurrency, args.seconds)
    if args.kind.endswith("+ uvloop"):
        import uvloop

        print(json.dumps(uvloop.run(running)))
    else:
        print(json.dumps(asyncio.run(running)))


#: Clients in the idle-memory measurement, as a service with many upstreams would have.
IDLE_CLIENTS = 50
#: Requests held in flight at once in the in-flight memory measurement.
IN_FLIGHT = 200


async def memory(kind: str, url: str) -> dict[str, float]:
    """
    tracemalloc: bytes per idle client (50 in one lifespan) and per request in flight (200
    held by a server that never answers). The shared TLS context is built before counting:
    clients with equal TLS settings share it.
    """
    import tracemalloc

    from fastapi import FastAPI

    from fastapi_retry_http import Client, ClientRegistry, clients_lifespan

    result: dict[str, float] = {}
    if kind == "Client (default: aiohttp)":
        Client("https://warm.internal")  # the shared TLS context, built once per process
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        configs = {f"s{i}": {"base_url": f"https://s{i}.internal"} for i in range(IDLE_CLIENTS)}
        life = clients_lifespan(configs, registry=ClientRegistry())
        async with life(FastAPI()):
            result["idle_client_bytes"] = (tracemalloc.get_traced_memory()[0] - before) / IDLE_CLIENTS
        tracemalloc.stop()
    send, close = await make_sender(kind, url, IN_FLIGHT)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    tasks = [asyncio.ensure_future(send()) for _ in range(IN_FLIGHT)]
    await asyncio.sleep(1.0)  # all connected and sent; the server holds them
    result["in_flight_request_bytes"] = (tracemalloc.get_traced_memory()[0] - before) / IN_FLIGHT
    tracemalloc.stop()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await close()
    return result


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


def run_worker(kind: str, url: str, concurrency: int, seconds: float) -> dict[str, Any]:
    cwd = ROOT
    if kind == "Client (round 2)":
        # The earlier package, first on the path (the current directory), with this bench.
        cwd, kind = Path(BASELINE), "Client (default: aiohttp)"
    command = [sys.executable, "-m", "bench.bench", "worker", kind, url, str(concurrency), str(seconds)]
    out = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=seconds * 10 + 30)
    if out.returncode != 0:
        raise SystemExit(f"worker {kind} C={concurrency} failed:\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


HOLDING_SERVER = """
import asyncio, socket, sys
async def hold(reader, writer):
    await reader.read(65536)
    await asyncio.sleep(3600)
async def main():
    server = await asyncio.start_server(hold, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()
asyncio.run(main())
"""


def memory_rows(kinds: list[str]) -> dict[str, dict[str, float]]:
    """Per kind, the tracemalloc figures of `memory()`, against a server that never answers."""
    server = subprocess.Popen([sys.executable, "-c", HOLDING_SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{server.stdout.readline().strip()}/"
        rows = {}
        for kind in kinds:
            command = [sys.executable, "-m", "bench.bench", "memory", kind, url]
            out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
            if out.returncode != 0:
                raise SystemExit(f"memory {kind} failed:\n{out.stderr}")
            rows[kind] = json.loads(out.stdout)
        return rows
    finally:
        server.terminate()
        server.wait(10)


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
    kinds = [k for k in (args.kinds or [*DEFAULT_KINDS, "Client (round 2)"]) if available(k)]
    retrying = [k for k in RETRYING if k in kinds]
    nginx = Nginx()
    rows: dict[tuple[str, int], list[dict[str, Any]]] = {}
    flaky: dict[str, tuple[dict[str, Any], int]] = {}
    try:
        started = time.monotonic()
        for round_ in range(args.rounds if not args.scenarios_only else 0):
            for concurrency in args.concurrency:
                for kind in kinds if round_ % 2 == 0 else reversed(kinds):
                    result = run_worker(kind, nginx.url + "/", concurrency, args.seconds)
                    rows.setdefault((kind, concurrency), []).append({**result, "round": round_})
            print(f"round {round_ + 1}/{args.rounds} done ({time.monotonic() - started:.0f}s)", file=sys.stderr)
        for kind in retrying:
            before = len(nginx.flaky_log())
            result = run_worker(kind, nginx.url + "/flaky", 16, args.seconds)
            flaky[kind] = (result, len(nginx.flaky_log()) - before)
        down = outage(nginx, args.outage_seconds) if args.outage_seconds > 0 else {}
    finally:
        nginx.stop()
    memory = memory_rows([k for k in MEMORY_KINDS if k in kinds]) if not args.quick else {}
    report = render(rows, args, client_build_costs())
    report += "\n\n" + render_flaky(flaky, args.seconds)
    if memory:
        report += "\n\n" + render_memory(memory)
    if down:
        report += "\n\n" + render_outage(down, args.outage_seconds)
    print(report)
    print(f"\ntotal {time.monotonic() - started:.0f} s", file=sys.stderr)
    (RESULTS / "results.md").write_text(report + "\n")
    (RESULTS / "results.json").write_text(json.dumps({f"{k}|{c}": v for (k, c), v in rows.items()}, indent=1))
    if rows:
        chart(rows, args.concurrency, RESULTS / "chart.png")
    print(f"written: {RESULTS / 'results.md'}, {RESULTS / 'chart.png'}", file=sys.stderr)


#: The rows whose memory is measured.
MEMORY_KINDS = ["raw aiohttp", "raw httpx", "bare httpx on our aiohttp transport", "Client (default: aiohttp)"]


def render_flaky(flaky: dict[str, tuple[dict[str, Any], int]], seconds: float) -> str:
    out = [
        f"Upstream answering 503 to 20% of requests, C=16 for {seconds:g} s, each retrying row configured as "
        "`RetryPolicy()` (3 attempts, 0.1 s exponential backoff, full jitter):",
        "",
        "| client | calls | success rate | upstream requests per call |",
        "|---|---|---|---|",
    ]
    for kind, (result, requests) in flaky.items():
        ok = result["statuses"].get("200", 0)
        out.append(
            f"| {kind} | {result['calls']:,} | {ok / max(result['calls'], 1):.2%} | "
            f"{requests / max(result['calls_with_warmup'], 1):.3f} |"
        )
    return "\n".join(out)


def render_memory(memory: dict[str, dict[str, float]]) -> str:
    out = [
        f"Memory (tracemalloc): per idle client, {IDLE_CLIENTS} clients in one lifespan; per request in flight, "
        f"{IN_FLIGHT} held at once by a server that never answers (connection included):",
        "",
        "| client | per idle client | per request in flight |",
        "|---|---|---|",
    ]
    for kind, figures in memory.items():
        idle = figures.get("idle_client_bytes")
        idle_text = f"{idle / 1024:.1f} KiB" if idle is not None else "-"
        out.append(f"| {kind} | {idle_text} | {figures['in_flight_request_bytes'] / 1024:.1f} KiB |")
    return "\n".join(out)


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
    return float(statistics.median(r["rps"] / base_by_round[r["round"]] for r in rows[(kind, concurrency)]))


def render(rows: dict[tuple[str, int], list[dict[str, Any]]], args: argparse.Namespace, costs: dict[str, float]) -> str:
    kinds = sorted({k for k, _ in rows}, key=lambda k: [*KINDS, k].index(k))
    cs = args.concurrency
    base = "raw aiohttp" if any(k == "raw aiohttp" for k, _ in rows) else kinds[0] if kinds else ""
    out = [
        f"Requests per second (median of {args.rounds} interleaved rounds, {args.seconds:g} s each; "
        f"in brackets the ratio to {base} in the same round, median over rounds):",
        "",
        "| client | " + " | ".join(f"C={c}" for c in cs) + f" | CPU µs/req C={cs[-1]} | p50 / p99 ms C={cs[-1]} |",
        "|---|" + "---|" * (len(cs) + 2),
    ]
    for kind in kinds:
        cells = []
        for c in cs:
            rps = statistics.median(r["rps"] for r in rows[(kind, c)])
            cells.append(f"{rps:,.0f} ({ratio(rows, kind, base, c):.2f}×)")  # noqa: RUF001
        last = rows[(kind, cs[-1])]
        cpu = statistics.median(r["cpu_us"] for r in last)
        p50 = statistics.median(r["p50_ms"] for r in last)
        p99 = statistics.median(r["p99_ms"] for r in last)
        name = f"**{kind}**" if kind.startswith("Client (default") else kind
        out.append(f"| {name} | " + " | ".join(cells) + f" | {cpu:,.0f} | {p50:.1f} / {p99:.1f} |")
    bare, ours = "bare httpx on our aiohttp transport", "Client (default: aiohttp)"
    if any(k == bare for k, _ in rows) and any(k == ours for k, _ in rows):
        out += ["", "`Client` over a bare `httpx.AsyncClient` on the same transport, same round:", ""]
        out += [f"- C={c}: {ratio(rows, ours, bare, c):.3f}×" for c in cs]  # noqa: RUF001
    out += ["", "Building clients: " + ", ".join(f"{k}: {v:.2f}" for k, v in costs.items()) + "."]
    return "\n".join(out)


def chart(rows: dict[tuple[str, int], list[dict[str, Any]]], cs: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = sorted({k for k, _ in rows}, key=lambda k: [*KINDS, k].index(k))
    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / len(kinds)
    colors = plt.get_cmap("tab20")  # a colour per row: the default ten would repeat
    for i, kind in enumerate(kinds):
        values = [statistics.median(r["rps"] for r in rows[(kind, c)]) for c in cs]
        ax.bar([x + i * width for x in range(len(cs))], values, width, label=kind, color=colors(i % colors.N))
    ax.set_xticks([x + width * (len(kinds) - 1) / 2 for x in range(len(cs))], [f"C={c}" for c in cs])
    ax.set_ylabel("requests per second")
    ax.set_title("GET of a 2-byte body from nginx on loopback, client pinned to one core")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the bars, not over them
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
    m = sub.add_parser("memory")
    m.add_argument("kind")
    m.add_argument("url")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0, help="measured seconds per cell")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 128])
    parser.add_argument("--kinds", nargs="+", choices=list(KINDS), help="only these rows")
    parser.add_argument("--outage-seconds", type=float, default=5.0, help="length of the all-503 run (0: none)")
    parser.add_argument("--scenarios-only", action="store_true", help="skip the throughput table")
    parser.add_argument("--quick", action="store_true", help="1 round of 0.5 s, no outage nor memory: to iterate")
    parser.add_argument("--profile", action="store_true", help="profile the Client instead (bench/profile.py)")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds, args.outage_seconds = 1, 0.5, 0.0
    return args


if __name__ == "__main__":
    arguments = parse()
    if arguments.command in ("worker", "memory"):
        worker(arguments)
    elif arguments.profile:
        from bench import profile

        sys.argv = sys.argv[:1]
        profile.main()
    else:
        main(arguments)
