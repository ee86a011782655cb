"""
Where the microseconds of one request go: cProfile over a benchmark worker, own time grouped
by layer, per request. Run it with `bash bench/run --profile` (or `python -m bench.profile`).

cProfile slows everything down about 2x alike; the shares, not the absolute numbers, are what
it tells.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
from collections import defaultdict

from bench.bench import Nginx, measure

#: Own time of a function is counted under the first layer whose marker is in its file name.
LAYERS = [
    ("fastapi_retry_http/_client.py", "our Client: request building"),
    ("fastapi_retry_http/_methods.py", "our Client: request building"),
    ("fastapi_retry_http/_backends", "our aiohttp transport: conversion httpx <-> aiohttp"),
    ("fastapi_retry_http/_safety", "our pipeline: guards, size cap"),
    ("fastapi_retry_http", "our pipeline: retry, deadline, budget"),
    ("httpx/_client.py", "httpx: AsyncClient.send, build_request, merge, cookies"),
    ("httpx/_models.py", "httpx: Request/Response/Headers models"),
    ("httpx/_urls.py", "httpx: URL parsing and merging"),
    ("httpx/_urlparse.py", "httpx: URL parsing and merging"),
    ("httpx/", "httpx: other (content, decoders, config)"),
    ("http/cookiejar", "httpx: cookie jar (stdlib)"),
    ("urllib/", "httpx: cookie jar (stdlib)"),
    ("aiohttp/", "aiohttp: session, connector, parser"),
    ("yarl/", "aiohttp: yarl URL"),
    ("multidict/", "aiohttp: multidict"),
    ("asyncio/", "asyncio event loop"),
    ("logging/", "logging"),
    ("email/", "httpx: cookie jar (stdlib)"),
]


def layer_of(filename: str) -> str:
    for marker, layer in LAYERS:
        if marker in filename:
            return layer
    return "builtins and C" if filename in ("~", "") else "other Python"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kind", default="Client (default: aiohttp)")
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    import aiohttp  # noqa: F401  (imports are not what is measured)
    import httpx  # noqa: F401

    import fastapi_retry_http  # noqa: F401

    nginx = Nginx()
    try:
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cores[-1]})
        profile = cProfile.Profile()
        profile.enable()
        result = asyncio.run(measure(args.kind, nginx.url + "/", args.concurrency, args.seconds))
        profile.disable()
    finally:
        nginx.stop()
    calls = result["calls_with_warmup"]
    stats = pstats.Stats(profile)
    by_layer: dict[str, float] = defaultdict(float)
    total = 0.0
    for (filename, _line, _name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        by_layer[layer_of(filename)] += tottime
        total += tottime
    print(f"{args.kind}, C={args.concurrency}: {calls} requests, {total / calls * 1e6:.0f} µs each under cProfile\n")
    print("| layer | µs per request | share |")
    print("|---|---|---|")
    for layer, seconds in sorted(by_layer.items(), key=lambda item: -item[1]):
        print(f"| {layer} | {seconds / calls * 1e6:.1f} | {seconds / total:.0%} |")
    print()
    stats.sort_stats("tottime").print_stats(args.top)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
