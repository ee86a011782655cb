"""
Chaos measured: how exact the injected shares are, what chaos costs per attempt (off and on,
side by side in one run), and the Testing-your-resilience page's worked example at three fault
rates. Run with `uv run python -m bench.chaos` (a minute or two; `--quick`: under a minute); it
prints markdown tables and writes bench/results/chaos.json.

Everything runs in this process, with no network: the cost is measured over an in-process
transport that answers at once, so the figures are the library's own work; the shares are
counted from outside the strategy (faults raised, statuses returned, latencies waited).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from fastapi_retry_http import (
    AttemptEvent,
    CircuitBreaker,
    CircuitEvent,
    Client,
    ClientRegistry,
    ClientSettings,
    RetryPolicy,
    clients_lifespan,
    get_client,
)
from fastapi_retry_http._pipeline.attempts import Call
from fastapi_retry_http._strategies.chaos import Deck
from fastapi_retry_http.chaos import Chaos
from fastapi_retry_http.exceptions import InjectedFault
from fastapi_retry_http.testing import chaos_for, no_sleep, override_transport

RESULTS = Path(__file__).resolve().parent / "results"
ONCE = RetryPolicy(attempts=1)
RATES = (0.01, 0.1, 0.3)


class Instant(httpx.AsyncBaseTransport):
    """An upstream in this process: a 200 at once, and a count of what reached it."""

    def __init__(self) -> None:
        self.requests = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return httpx.Response(200, content=b"ok")


async def shares(rate: float, seed: int, attempts: int) -> dict[str, float]:
    """Injected shares over `attempts` attempts, each kind at `rate`, counted from outside."""
    chaos = Chaos(fault_rate=rate, status_rate=rate, status=503, latency_rate=rate, latency=0.001, seed=seed)
    faults = statuses = 0
    with no_sleep() as waits:
        async with Client("http://upstream", transport=Instant(), retry=ONCE, chaos=chaos) as client:
            for _ in range(attempts):
                try:
                    statuses += (await client.get("/x")).status_code == 503
                except InjectedFault:
                    faults += 1
    return {"fault": faults / attempts, "status": statuses / attempts, "latency": len(waits) / attempts}


def coin_flip_spread(rate: float, attempts: int, seeds: int) -> tuple[float, float]:
    """The widest miss of the share over `seeds` runs: independent coin flips, then the decks."""
    flips = decks = 0.0
    for seed in range(seeds):
        generator = random.Random(seed)
        flipped = sum(generator.random() < rate for _ in range(attempts))
        deck = Deck((rate,), random.Random(seed))
        dealt = sum(deck.draw() == 0 for _ in range(attempts))
        flips = max(flips, abs(flipped / attempts - rate))
        decks = max(decks, abs(dealt / attempts - rate))
    return flips, decks


async def cost(rounds: int, calls: int) -> dict[str, tuple[float, float]]:
    """
    µs per attempt (one attempt per call), median and best round: short rounds in which the
    configurations take turns (in reverse order every other round), so the load of a shared
    machine falls on all of them alike.
    """
    configs: dict[str, Chaos | None] = {
        "off (not built)": None,
        "on, nothing injected (rates 0)": Chaos(seed=1),
        "on, 10% each of fault, status and latency (0 s)": Chaos(
            fault_rate=0.1, status_rate=0.1, latency_rate=0.1, latency=0.0, seed=1
        ),
    }
    clients = {name: Client("http://upstream", transport=Instant(), retry=ONCE, chaos=c) for name, c in configs.items()}
    times: dict[str, list[float]] = {name: [] for name in configs}
    for round_number in range(rounds + 1):
        turns = list(clients.items())
        for name, client in turns if round_number % 2 else reversed(turns):
            started = time.perf_counter()
            for _ in range(calls):
                with contextlib.suppress(InjectedFault):
                    await client.get("/x")
            if round_number:  # the first round warms up
                times[name].append((time.perf_counter() - started) / calls * 1e6)
    for client in clients.values():
        await client.aclose()
    figures = {name: (statistics.median(values), min(values)) for name, values in times.items()}
    off, on = times["off (not built)"], times["on, nothing injected (rates 0)"]
    paired = [b - a for a, b in zip(off, on, strict=True)]
    figures["on minus off, paired by round"] = (statistics.median(paired), min(on) - min(off))
    alone = await interceptor_alone(calls * 10)
    figures["the interceptor alone (nothing injected)"] = alone
    return figures


async def interceptor_alone(draws: int) -> tuple[float, float]:
    """µs per `intercept` of a chaos that injects nothing: the median and best of five runs."""
    client = Client("http://upstream", transport=Instant(), chaos=Chaos(seed=1))
    interceptor = client.transport.strategies.by_option["chaos"]
    call = Call(httpx.Request("GET", "http://upstream/x"), ONCE, "upstream", None, False, attempt=1)
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(draws):
            await interceptor.intercept(call)
        runs.append((time.perf_counter() - started) / draws * 1e6)
    await client.aclose()
    return statistics.median(runs), min(runs)


class Tally:
    """Attempts and breaker openings, heard as an instrument."""

    def __init__(self) -> None:
        self.attempts = 0
        self.openings = 0

    def on_attempt(self, event: AttemptEvent) -> None:
        self.attempts += event.outcome != "refused"

    def on_circuit(self, event: CircuitEvent) -> None:
        self.openings += event.state == "open"


def worked_example(fault_rate: float, calls: int) -> dict[str, float]:
    """The docs' /checkout with billing failing `fault_rate` of its calls (attempts=4, a breaker)."""
    tally = Tally()
    billing = ClientSettings(
        base_url="https://billing.internal/api/", retry=RetryPolicy(attempts=4), circuit_breaker=CircuitBreaker()
    )
    registry = ClientRegistry()
    app = FastAPI(lifespan=clients_lifespan({"billing": billing}, registry=registry, instrumentation=[tally]))

    @app.post("/checkout")
    async def checkout(client: Annotated[Client, Depends(get_client("billing"))]) -> dict[str, bool]:
        charge = await client.post("charges", json={"amount": 42})
        return {"charged": charge.status_code == 200}

    upstream = Instant()
    with (
        no_sleep(),
        override_transport("billing", upstream, registry=registry),
        chaos_for(registry, billing=Chaos(fault_rate=fault_rate, seed=1)),
        TestClient(app, raise_server_exceptions=False) as http,
    ):
        answered = sum(http.post("/checkout").status_code == 200 for _ in range(calls))
    return {
        "success_rate": answered / calls,
        "attempts_per_call": tally.attempts / calls,
        "upstream_per_call": upstream.requests / calls,
        "breaker_openings": tally.openings,
    }


def render(results: dict[str, Any]) -> str:
    attempts = results["attempts"]
    out = [
        f"| rate | fault share | status share | latency share | widest miss over {results['seeds']} seeds |",
        "|---|---|---|---|---|",
    ]
    for rate, row in results["shares"].items():
        out.append(
            f"| {float(rate):.0%} | {row['fault']:.2%} | {row['status']:.2%} | {row['latency']:.2%} "
            f"| {row['widest_miss']:.3%} |"
        )
    out += [
        "",
        f"| rate | widest miss over {results['flip_seeds']} runs of {attempts:,}: coin flips | shuffled decks |",
        "|---|---|---|",
    ]
    for rate, (flips, decks) in results["spread"].items():
        out.append(f"| {float(rate):.0%} | {flips:.2%} | {decks:.2%} |")
    out += ["", "| chaos (in-process upstream, one attempt per call) | µs per attempt, median | best round |"]
    out += ["|---|---|---|"]
    out += [f"| {name} | {median:.1f} | {best:.1f} |" for name, (median, best) in results["cost"].items()]
    out += [
        "",
        "| billing fails | /checkout 200 | attempts per call | upstream requests per call | breaker openings |",
        "|---|---|---|---|---|",
    ]
    for rate, row in results["example"].items():
        out.append(
            f"| {float(rate):.0%} | {row['success_rate']:.1%} | {row['attempts_per_call']:.2f} "
            f"| {row['upstream_per_call']:.2f} | {row['breaker_openings']:.0f} |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="one seed, fewer rounds and calls")
    args = parser.parse_args()
    seeds, rounds, calls, example_calls = (1, 20, 200, 500) if args.quick else (5, 100, 200, 1000)
    attempts = 10_000
    results: dict[str, Any] = {"attempts": attempts, "seeds": seeds, "flip_seeds": 200, "shares": {}, "spread": {}}
    for rate in RATES:
        runs = [asyncio.run(shares(rate, seed, attempts)) for seed in range(seeds)]
        row = {kind: statistics.mean(run[kind] for run in runs) for kind in ("fault", "status", "latency")}
        row["widest_miss"] = max(abs(run[kind] - rate) for run in runs for kind in ("fault", "status", "latency"))
        results["shares"][str(rate)] = row
        results["spread"][str(rate)] = coin_flip_spread(rate, attempts, results["flip_seeds"])
    results["cost"] = asyncio.run(cost(rounds, calls))
    results["example"] = {str(rate): worked_example(rate, example_calls) for rate in (0.1, 0.3, 0.6)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "chaos.json").write_text(json.dumps(results, indent=1))
    print(render(results))


if __name__ == "__main__":
    main()
