"""
Coalescing and the cache measured. Run alone with `uv run python -m bench.reuse` (about a
minute; `--quick`: about 15 s); it prints markdown tables (medians of three runs) and writes
bench/results/reuse.json.

The upstream is a small asyncio HTTP server in its own process on loopback that counts every
request it receives (the oracle for "upstream requests") and answers after a set latency with
`Cache-Control` by path: `/cold/...` max-age=60 after 50 ms, `/mix/...` max-age=1, `/hit`
max-age=3600.

1. Herd: 100 concurrent identical GETs on a cold path (a new path each run).
2. Mix: 80% of calls read one of 10 hot paths again, 20% a path never seen; `max-age=1`;
   req/s and upstream requests per call, against no cache and against hishel alone on httpx
   (its `AsyncCacheTransport`, RFC 9111 shared mode, SQLite storage), in the same run.
3. Cost of a hit, one call at a time, against raw aiohttp's cost per request to the upstream.
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import json
import multiprocessing
import random
import socket
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from hishel import AsyncSqliteStorage, CacheOptions
from hishel.httpx import AsyncCacheTransport

from fastapi_retry_http import Client
from fastapi_retry_http.cache import HttpCache

RESULTS = Path(__file__).resolve().parent / "results"
COLD_LATENCY = 0.05


def serve(port: int, count: Any, mix_latency: float, ready: Any) -> None:
    """The upstream: counts each request, waits its path's latency, answers with its Cache-Control."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1]
                with count.get_lock():
                    count.value += 1
                if path.startswith(b"/cold"):
                    latency, control = COLD_LATENCY, b"max-age=60"
                elif path.startswith(b"/mix"):
                    latency, control = mix_latency, b"max-age=1"
                else:
                    latency, control = 0.0, b"max-age=3600"
                if latency:
                    await asyncio.sleep(latency)
                date = email.utils.formatdate(usegmt=True).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nCache-Control: "
                    + control
                    + b"\r\nDate: "
                    + date
                    + b"\r\n\r\nok"
                )
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


def start_upstream(mix_latency: float) -> tuple[Any, Any, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    count = multiprocessing.Value("l", 0)
    ready = multiprocessing.Event()
    process = multiprocessing.Process(target=serve, args=(port, count, mix_latency, ready), daemon=True)
    process.start()
    ready.wait(10)
    return process, count, f"http://127.0.0.1:{port}"


Get = Callable[[str], Awaitable[Any]]


class Subject:
    """One client under test: how it gets a path, and how it is closed."""

    def __init__(self, name: str, get: Get, close: Callable[[], Awaitable[None]]) -> None:
        self.name, self.get, self.close = name, get, close


def ours(url: str, **options: Any) -> Subject:
    client = Client(url, **options)
    return Subject("", client.get, client.aclose)


def hishel_alone(url: str, directory: str) -> Subject:
    storage = AsyncSqliteStorage(database_path=Path(directory) / f"hishel-{random.random()}.db")
    transport = AsyncCacheTransport(httpx.AsyncHTTPTransport(), storage=storage, rfc=CacheOptions(shared=True))
    client = httpx.AsyncClient(base_url=url, transport=transport)

    async def get(path: str) -> Any:
        response = await client.get(path)
        await response.aread()
        return response

    return Subject("", get, client.aclose)


def subjects(url: str, directory: str) -> dict[str, Callable[[], Subject]]:
    sqlite_path = f"{directory}/ours-{random.random()}.db"
    return {
        "Client (no cache, no coalescing)": lambda: ours(url),
        "Client(coalesce=True)": lambda: ours(url, coalesce=True),
        "Client(cache=HttpCache())": lambda: ours(url, cache=HttpCache()),
        "Client(cache=HttpCache(), coalesce=True)": lambda: ours(url, cache=HttpCache(), coalesce=True),
        "Client(cache=HttpCache(storage='sqlite'), coalesce=True)": lambda: ours(
            url, cache=HttpCache(storage="sqlite", path=sqlite_path), coalesce=True
        ),
        "hishel alone (httpx, SQLite)": lambda: hishel_alone(url, directory),
    }


async def herd(subject: Subject, count: Any, run: int) -> dict[str, float]:
    path = f"/cold/{run}-{random.random()}"
    before = count.value
    started = time.perf_counter()
    await asyncio.gather(*(subject.get(path) for _ in range(100)))
    return {"upstream": count.value - before, "seconds": time.perf_counter() - started}


async def mix(subject: Subject, count: Any, calls: int, concurrency: int) -> dict[str, float]:
    rng = random.Random(11)
    paths = [f"/mix/hot{rng.randrange(10)}" if rng.random() < 0.8 else f"/mix/{rng.random()}" for _ in range(calls)]
    queue = iter(paths)
    before = count.value

    async def caller() -> None:
        for path in queue:
            await subject.get(path)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {"req_per_s": calls / elapsed, "upstream_per_call": (count.value - before) / calls}


async def per_call(get: Get, path: str, calls: int) -> float:
    await get(path)  # stored (or the connection made) before timing
    started = time.perf_counter()
    for _ in range(calls):
        await get(path)
    return (time.perf_counter() - started) / calls * 1e6


async def hit_cost(url: str, directory: str, calls: int) -> dict[str, float]:
    costs: dict[str, float] = {}
    async with aiohttp.ClientSession() as session:

        async def raw(path: str) -> bytes:
            async with session.get(url + path) as response:
                return await response.read()

        costs["raw aiohttp, per request (to the upstream)"] = await per_call(raw, "/hit", calls)
    makers: dict[str, Callable[[], Subject]] = {
        "Client, no cache (to the upstream)": lambda: ours(url),
        "Client(cache=HttpCache()), a hit": lambda: ours(url, cache=HttpCache()),
        "Client(cache=HttpCache(storage='sqlite')), a hit": lambda: ours(
            url, cache=HttpCache(storage="sqlite", path=f"{directory}/hit-{random.random()}.db")
        ),
        "hishel alone (httpx, SQLite), a hit": lambda: hishel_alone(url, directory),
    }
    for name, make in makers.items():
        subject = make()
        costs[name] = await per_call(subject.get, "/hit", calls)
        await subject.close()
    return costs


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


async def measure(url: str, count: Any, quick: bool) -> dict[str, Any]:
    calls = 600 if quick else 3000
    results: dict[str, Any] = {"herd": {}, "mix": {}, "hit_cost_us": []}
    with tempfile.TemporaryDirectory() as directory:
        made = subjects(url, directory)
        for name, make in made.items():
            runs = []
            for run in range(3):
                subject = make()
                runs.append(await herd(subject, count, run))
                await subject.close()
            results["herd"][name] = median_of(runs)
        for name, make in made.items():
            runs = []
            for _ in range(3):
                subject = make()
                runs.append(await mix(subject, count, calls, concurrency=16))
                await subject.close()
            results["mix"][name] = median_of(runs)
        results["hit_cost_us"] = [await hit_cost(url, directory, 500 if quick else 3000) for _ in range(3)]
    results["hit_cost_us"] = median_of(results["hit_cost_us"])
    return results


def table(results: dict[str, Any]) -> str:
    lines = ["| 100 concurrent identical GETs, cold, 50 ms upstream | upstream requests | wall time (ms) |"]
    lines.append("| --- | ---: | ---: |")
    for name, row in results["herd"].items():
        lines.append(f"| {name} | {row['upstream']:.0f} | {row['seconds'] * 1000:.0f} |")
    lines += ["", "| 80% repeat reads, max-age=1, 16 callers | req/s | upstream requests per call |"]
    lines.append("| --- | ---: | ---: |")
    for name, row in results["mix"].items():
        lines.append(f"| {name} | {row['req_per_s']:.0f} | {row['upstream_per_call']:.3f} |")
    lines += ["", "| one call at a time | µs per call |", "| --- | ---: |"]
    for name, cost in results["hit_cost_us"].items():
        lines.append(f"| {name} | {cost:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer calls per run (about 15 s)")
    parser.add_argument("--mix-latency", type=float, default=0.005, help="upstream latency of /mix paths (s)")
    args = parser.parse_args()
    process, count, url = start_upstream(args.mix_latency)
    try:
        results = asyncio.run(measure(url, count, args.quick))
    finally:
        process.terminate()
        process.join(5)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "reuse.json").write_text(json.dumps({"quick": args.quick, **results}, indent=2))
    print(table(results))


if __name__ == "__main__":
    main()
