"""
The two backends read every setting the same way: timeouts at their edges here; header
validation in test_safety.py, proxies and TLS contexts in their own files.
"""

from __future__ import annotations

import asyncio
import math

import httpx
import pytest

from fastapi_retry_http import Client
from fastapi_retry_http.exceptions import ConfigurationError
from tests.servers import RawServer, ok, response_bytes

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("backend")]


@pytest.mark.parametrize(
    ("timeout", "phase"),
    [
        (0, "connect"),
        (-1.0, "connect"),
        (math.nan, "connect"),
        (httpx.Timeout(5, read=0), "read"),
        (httpx.Timeout(5, write=-2), "write"),
        (httpx.Timeout(5, pool=0.0), "pool"),
    ],
)
def test_zero_negative_and_nan_timeouts_are_refused_at_construction(timeout: object, phase: str) -> None:
    # Zero meant "no timeout" on aiohttp and an immediate ConnectTimeout on httpx.
    with pytest.raises(ConfigurationError, match=f"'up': timeout.{phase} must be a positive number"):
        Client("http://127.0.0.1:1/", name="up", timeout=timeout)  # type: ignore[arg-type]


async def test_a_per_call_timeout_is_checked_the_same_way() -> None:
    async with Client("http://127.0.0.1:1/") as c:
        with pytest.raises(ValueError, match=r"timeout\.read must be a positive number"):
            await c.get("/x", timeout=httpx.Timeout(5, read=0))


@pytest.mark.parametrize("timeout", [math.inf, None, httpx.Timeout(math.inf)])
async def test_infinity_and_none_mean_no_timeout(timeout: object) -> None:
    # math.inf raised a bare OverflowError on aiohttp.
    async def late(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await asyncio.sleep(0.05)
        writer.write(response_bytes(200, b"late"))
        await writer.drain()

    async with RawServer(late) as server, Client(server.url, timeout=timeout) as c:  # type: ignore[arg-type]
        assert (await c.get("/x")).text == "late"
        assert (await c.get("/x", timeout=math.inf)).text == "late"


async def test_a_short_positive_timeout_is_a_read_timeout_on_both() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await asyncio.sleep(1)

    async with RawServer(silent) as server, Client(server.url, timeout=0.05) as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.get("/x")
    async with RawServer(lambda r, w, n: ok(r, w)) as server, Client(server.url, timeout=0.05) as c:
        assert (await c.get("/x")).status_code == 200


@pytest.mark.parametrize("proxy", ["not a url", "ftp://user:s3cret@proxy.internal", "http://", "http://[::1"])
def test_an_invalid_proxy_is_refused_at_construction_without_showing_it(proxy: str) -> None:
    # aiohttp refused it only at the first request, httpx at construction: now both at once.
    with pytest.raises(ConfigurationError, match="'up': proxy: ") as caught:
        Client("http://127.0.0.1:1/", name="up", proxy=proxy)
    assert "s3cret" not in str(caught.value)
