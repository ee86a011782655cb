"""Settings that each backend must honour the same way: timeouts, proxy, HTTP/2 fallback, secrets in errors."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import socket
from collections.abc import Iterator

import httpx
import pytest

from fastapi_retry_http import Client
from fastapi_retry_http._backends.httpx_pool import CancelSafeTransport
from fastapi_retry_http.exceptions import ConfigurationError
from tests.servers import RawServer, ok

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("backend")]


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """A port whose accept queue is full: the kernel drops new SYNs, so connecting hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    yield port
    for sock in [*fillers, listener]:
        sock.close()


async def test_connect_timeout_is_retried_even_for_post(full_backlog: int, waits: list[float]) -> None:
    timeout = httpx.Timeout(5.0, connect=0.1)
    async with Client(f"http://127.0.0.1:{full_backlog}", timeout=timeout) as c:
        with pytest.raises(httpx.ConnectTimeout):
            await c.post("/charge", json={})
    assert len(waits) == 2


async def test_the_proxy_is_used() -> None:
    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await ok(reader, writer)

    async with RawServer(proxy) as server, Client("http://billing.invalid/api/", proxy=server.url) as c:
        assert (await c.get("items", params={"page": "2"})).text == "ok"
    request_line = server.heads[0].split(b"\r\n")[0]
    assert request_line == b"GET http://billing.invalid/api/items?page=2 HTTP/1.1"


async def test_http2_falls_back_to_httpxs_transport(backend: str) -> None:
    async with Client("https://billing.internal", http2=True) as c:
        assert isinstance(c.transport.inner, CancelSafeTransport)


def test_http2_without_h2_is_a_clear_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "h2" else real(name, *a))
    with pytest.raises(ConfigurationError, match=r"'billing': http2=True needs the 'h2' package"):
        Client("https://billing.internal", name="billing", http2=True)


async def test_failures_never_carry_query_or_header_values(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(b"HTTP/1.1 abc Nope\r\n\r\n" if n % 2 else b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort")
        await writer.drain()
        writer.close()

    messages: list[str] = []
    async with RawServer(garbage) as server:
        headers = {"Authorization": "Bearer hdr-secret"}
        async with Client(server.url, headers=headers, timeout=2.0) as c:
            for path in ("/a", "/b"):
                try:
                    await c.get(path, params={"token": "q-secret"})
                except httpx.HTTPError as error:
                    # The chain as tracebacks and error trackers print it.
                    chain: BaseException | None = error
                    while chain is not None:
                        messages.append(f"{chain!s} {chain!r}")
                        chain = chain.__cause__ or (None if chain.__suppress_context__ else chain.__context__)
    assert len(messages) >= 2
    text = "\n".join(messages) + caplog.text
    assert "q-secret" not in text
    assert "hdr-secret" not in text
