"""
Abandoned attempts (issue 20): what reaches a loopback server after the callers have gone, per
backend, and what following each attempt costs on the httpx backend.

    python -m bench.abandoned            # issue 20's sizes (about 30 s)
    python -m bench.abandoned --quick    # smaller, to check it runs (about 10 s)

Figures from a shared machine are noisy; the counts are not. See docs/architecture.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from collections.abc import Awaitable, Callable

import httpx

from fastapi_retry_http import Client, RetryPolicy
from fastapi_retry_http._backends import BackendName
from fastapi_retry_http._backends.httpx_pool import CancelSafeTransport

Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Server:
    """Reads each request's head, records its path, and lets `handler(path, reader, writer)` answer."""

    def __init__(self, handler: Callable[[str, Reader, Writer], Awaitable[None]]) -> None:
        self.handler = handler
        self.paths: list[str] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: Reader, writer: Writer) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        await reader.readexactly(int(line.split(b":")[1]))
                self.paths.append(head.split(b" ")[1].decode())
                await self.handler(self.paths[-1], reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, OSError, asyncio.CancelledError):
            pass  # the client went away, or the server is closing
        finally:
            self._tasks.discard(task)
            writer.close()


async def answer(path: str, reader: Reader, writer: Writer) -> None:
    writer.write(OK)
    await writer.drain()


async def until_eof(reader: Reader) -> None:
    while await reader.read(1024):
        pass


async def late_post(backend: BackendName, size: int) -> str:
    release = asyncio.Event()

    async def held_first(path: str, reader: Reader, writer: Writer) -> None:
        if path == "/hold":
            await release.wait()
        await answer(path, reader, writer)

    async with (
        Server(held_first) as server,
        Client(server.url, backend=backend, limits=httpx.Limits(max_connections=1)) as c,
    ):
        first = asyncio.create_task(c.get("/hold"))
        await asyncio.sleep(0.1)
        try:
            async with asyncio.timeout(0.2):
                await c.post("/charge", content=b"42 EUR")
        except TimeoutError:
            pass
        release.set()
        await first
        await asyncio.sleep(0.5)
    return "sent after its caller left" if "/charge" in server.paths else "never sent"


async def mass_cancel(backend: BackendName, size: int) -> str:
    async def slow(path: str, reader: Reader, writer: Writer) -> None:
        await asyncio.sleep(0.5)
        await answer(path, reader, writer)

    timeout = httpx.Timeout(10, pool=2)
    async with Server(slow) as server, Client(server.url, backend=backend, timeout=timeout) as c:
        tasks = [asyncio.create_task(c.get(f"/{i}")) for i in range(size)]
        await asyncio.sleep(0.2)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        gone = len(server.paths)
        await asyncio.sleep(1.5)
        late = len(server.paths) - gone
        started = time.monotonic()
        try:
            await c.get("/next")
            after = f"next call {time.monotonic() - started:.2f} s"
        except httpx.HTTPError as error:
            after = f"next call: {type(error).__name__}"
    return f"{late} of {size} sent after every caller left; {after}"


async def hedged(backend: BackendName, size: int) -> str:
    async def first_of_each_hangs(path: str, reader: Reader, writer: Writer) -> None:
        if server.paths.count(path) == 1:
            await until_eof(reader)
            return
        await answer(path, reader, writer)

    policy = RetryPolicy(attempts=2, hedge_after=0.02, deadline=5)
    limits, timeout = httpx.Limits(max_connections=4), httpx.Timeout(5, pool=1)
    failed = 0
    async with (
        Server(first_of_each_hangs) as server,
        Client(server.url, backend=backend, retry=policy, limits=limits, timeout=timeout) as c,
    ):
        for i in range(20):
            try:
                await c.get(f"/{i}")
            except httpx.HTTPError:
                failed += 1
    return f"{failed} of 20 failed"


async def drip(backend: BackendName, size: int) -> str:
    async def dripping(path: str, reader: Reader, writer: Writer) -> None:
        if path != "/drip":
            await answer(path, reader, writer)
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        while not writer.is_closing():
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.05)

    policy = RetryPolicy(attempts=1, attempt_timeout=0.5)
    failed = 0
    async with (
        Server(dripping) as server,
        Client(server.url, backend=backend, retry=policy, limits=httpx.Limits(max_connections=2)) as c,
    ):
        for _ in range(2):
            with contextlib.suppress(httpx.HTTPError):
                await c.get("/drip")
        for _ in range(5):
            try:
                await c.get("/healthy")
            except httpx.HTTPError:
                failed += 1
    return f"{failed} of 5 healthy calls failed"


SCENARIOS = {
    "POST timed out while queued for the only connection": late_post,
    "{size} calls cancelled after 0.2 s (server answers in 0.5 s)": mass_cancel,
    "20 sequential hedged GETs, first attempts hang, max_connections=4": hedged,
    "attempt_timeout=0.5 on 2 dripping bodies, max_connections=2, then 5 healthy calls": drip,
}


class _Untraced(CancelSafeTransport):
    """The httpx backend without following attempts: what the tracing costs, by difference."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.inner.handle_async_request(request)


async def tracing_cost(requests: int, runs: int) -> str:
    cpu: dict[str, list[float]] = {"followed": [], "not followed": []}
    async with Server(answer) as server:
        for _ in range(runs):
            for kind, found in cpu.items():
                async with Client(server.url, backend="httpx", retry_budget=None) as c:
                    if kind == "not followed":
                        inner = c.transport.inner
                        assert isinstance(inner, CancelSafeTransport)
                        c.transport.inner = _Untraced(inner.inner)
                    await c.get("/warm")
                    started = time.process_time()
                    for _ in range(requests):
                        await c.get("/x")
                    found.append((time.process_time() - started) / requests * 1e6)
    return ", ".join(f"{kind} {statistics.median(found):.0f} µs" for kind, found in cpu.items())


async def main(quick: bool) -> None:
    size = 100 if quick else 500
    print("| Scenario | httpx backend | aiohttp backend |\n|---|---|---|")
    for name, scenario in SCENARIOS.items():
        cells = [await scenario(backend, size) for backend in ("httpx", "aiohttp")]
        print(f"| {name.format(size=size)} | {cells[0]} | {cells[1]} |")
    requests, runs = (300, 3) if quick else (3000, 9)
    cost = await tracing_cost(requests, runs)
    print(f"\nCPU per request on the httpx backend (client and server in one process, median of {runs}): {cost}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, to check it runs")
    asyncio.run(main(parser.parse_args().quick))
