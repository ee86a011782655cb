"""
The lean path is a pure optimisation: over a matrix of client shapes and calls, a client that
may take it and one that never does send the same bytes (request line, headers, body), follow
the same redirects, keep the same cookies and tell the same events, on both backends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from fastapi_retry_http import AttemptEvent, Client, _client
from tests.servers import RawServer, response_bytes

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("backend")]


class Recorder:
    def __init__(self) -> None:
        self.events: list[AttemptEvent] = []

    def on_attempt(self, event: AttemptEvent) -> None:
        self.events.append(event)


async def hook(request: httpx.Request) -> None:
    request.headers["X-Hooked"] = "1"


def shape_auth(client: Client) -> None:
    client.httpx.auth = httpx.BasicAuth("user", "pw")


def shape_cookies(client: Client) -> None:
    client.httpx.cookies.set("tenant", "acme")


def shape_redirects(client: Client) -> None:
    client.httpx.follow_redirects = True


def shape_params(client: Client) -> None:
    client.httpx.params = httpx.QueryParams({"v": "2"})


#: name → (Client keywords, a change made through `.httpx` after construction).
SHAPES: dict[str, tuple[dict[str, Any], Callable[[Client], None] | None]] = {
    "plain": ({}, None),
    "headers": ({"headers": {"X-Api-Key": "k"}}, None),
    "event hook": ({"event_hooks": {"request": [hook]}}, None),
    "auth later": ({}, shape_auth),
    "cookies on .httpx": ({}, shape_cookies),
    "redirects later": ({}, shape_redirects),
    "params later": ({}, shape_params),
    "kept cookies": ({"keep_cookies": True}, None),
}

#: name → the call's keywords.
CALLS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "get": ("GET", "/a/b", {}),
    "get with query and headers": ("GET", "/a", {"params": {"q": "1"}, "headers": {"X-Call": "c"}}),
    "post json": ("POST", "/orders", {"json": {"id": 1}}),
    "put bytes": ("PUT", "/blob", {"content": b"\x00\x01"}),
    "delete": ("DELETE", "/a", {}),
}


def upstream() -> Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Any]:
    """Request 1: a cookie, then a same-origin redirect; then 200 for everything."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        if n == 1:
            writer.write(response_bytes(302, b"", {"Location": "/landed", "Set-Cookie": "s=alice; Path=/"}))
        else:
            writer.write(response_bytes(200, b"done"))
        await writer.drain()

    return handler


def normalised(head: bytes) -> tuple[bytes, list[bytes]]:
    line, *headers = head.rstrip(b"\r\n").split(b"\r\n")
    return line, sorted(h.lower() for h in headers)


async def run(shape: str, call: str, lean: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[object, ...]:
    monkeypatch.setattr(_client, "LEAN_PATH", lean)
    keywords, later = SHAPES[shape]
    method, path, options = CALLS[call]
    recorder = Recorder()
    async with RawServer(upstream()) as server:
        async with Client(server.url, instrumentation=[recorder], **keywords) as client:
            if later is not None:
                later(client)
            first = await client.request(method, path, **options)
            second = await client.get("/again")
        port = str(server.port).encode()
        heads = [normalised(head.replace(port, b"PORT")) for head in server.heads]
    events = [(e.attempt, e.status_code, e.outcome, e.url.replace(str(server.port), "PORT")) for e in recorder.events]
    return heads, first.status_code, first.content, second.status_code, events


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("shape", SHAPES)
async def test_the_lean_path_changes_nothing(shape: str, call: str, monkeypatch: pytest.MonkeyPatch) -> None:
    lean = await run(shape, call, True, monkeypatch)
    full = await run(shape, call, False, monkeypatch)
    assert lean == full
