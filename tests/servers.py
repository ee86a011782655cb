"""
Loopback servers for the tests. Every one binds 127.0.0.1 on port 0 and counts what it
receives: the count at the server is the oracle for how many attempts were made.

- `Upstream`: a real HTTP server (uvicorn in a thread) that answers each path by a script.
- `RawServer`: an asyncio TCP server in the test's own loop, for faults no HTTP framework
  will produce on purpose (resets, truncated bodies, garbage, hangs, disconnects).
"""

from __future__ import annotations

import asyncio
import email.utils
import socket
import struct
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.requests import Request
from starlette.responses import Response


@dataclass
class Reply:
    """One scripted answer."""

    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)


class Upstream:
    """
    An HTTP server answering each path from a script, then with 200 "ok".

    `upstream.script("/flaky", 503, 503, 200)` answers the next three requests to `/flaky`
    with those statuses. `upstream.hits["/flaky"]` counts the requests it received, and
    `upstream.seen[path]` keeps their headers and bodies, `upstream.client_ports` tells how
    many connections they came on.
    """

    def __init__(self) -> None:
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self._cycles: dict[str, list[int]] = {}
        self.hits: Counter[str] = Counter()
        self.seen: dict[str, list[tuple[dict[str, str], bytes]]] = defaultdict(list)
        self.client_ports: set[int] = set()
        self._holds: dict[str, threading.Event] = {}
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, path: str, *replies: int | Reply) -> None:
        self._scripts[path].extend(r if isinstance(r, Reply) else Reply(status=r) for r in replies)

    def hold(self, path: str) -> threading.Event:
        """
        Requests to `path` are counted, then held until the returned event is set (10 s at
        most): concurrent calls overlap for as long as a test needs, with no sleep.
        """
        event = self._holds[path] = threading.Event()
        return event

    def cycle(self, path: str, *statuses: int) -> None:
        """Answer `path` with `statuses` in turn, over and over (after its script), until reset."""
        self._cycles[path] = list(statuses)

    def reset(self) -> None:
        for event in self._holds.values():
            event.set()
        self._holds.clear()
        self._scripts.clear()
        self._cycles.clear()
        self.hits.clear()
        self.seen.clear()
        self.client_ports.clear()

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        request = Request(scope, receive)
        body = await request.body()
        path = request.url.path
        self.hits[path] += 1
        self.client_ports.add(scope["client"][1])
        self.seen[path].append((dict(request.headers), body))
        held = self._holds.get(path)
        if held is not None:
            await asyncio.to_thread(held.wait, 10)
        script = self._scripts[path]
        cycle = self._cycles.get(path)
        reply = script.popleft() if script else Reply(cycle[(self.hits[path] - 1) % len(cycle)]) if cycle else Reply()
        if path.startswith("/echo"):
            reply = Reply(body=body or request.url.query.encode())
        # The Date uvicorn would add is written here instead, so that a script can set its own.
        headers = {"date": email.utils.formatdate(usegmt=True), **reply.headers}
        await Response(reply.body, reply.status, headers)(scope, receive, send)

    def start(self) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", interface="asgi3", date_header=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        assert self._server is not None
        assert self._thread is not None
        self._server.should_exit = True
        self._thread.join(10)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class RawServer:
    """
    A TCP server in the running loop; `handler(reader, writer, n)` serves request number `n`.

    The server reads each request's head itself (and counts it) before calling the handler,
    so the handler decides only what goes back on the wire. Use as `async with`.
    """

    def __init__(self, handler: Handler, ssl: Any = None) -> None:
        self._handler = handler
        self._ssl = ssl
        self.requests = 0
        self.connections = 0
        self.heads: list[bytes] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"{'https' if self._ssl else 'http'}://127.0.0.1:{self.port}"

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._ssl)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = _content_length(head)
                if length:
                    await reader.readexactly(length)
                self.requests += 1
                self.heads.append(head)
                await self._handler(reader, writer, self.requests)
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            pass  # the server is shutting down; asyncio would log a cancelled handler
        finally:
            self._tasks.discard(task)
            writer.close()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


def response_bytes(status: int = 200, body: bytes = b"ok", headers: dict[str, str] | None = None) -> bytes:
    """A complete HTTP/1.1 response with a Content-Length."""
    lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(response_bytes())
    await writer.drain()


def reset(writer: asyncio.StreamWriter) -> None:
    """Abort the connection with a TCP RST instead of a FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
