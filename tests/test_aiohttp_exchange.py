"""
The aiohttp backend's own send (`_backends/aiohttp_exchange.py`), where it does what
`ClientSession._request` did: the URL checks, and OS errors made aiohttp's own before they are
mapped to httpx's. The faults a real server produces are in `test_aiohttp_backend.py`.
"""

from __future__ import annotations

import errno
from typing import Any

import aiohttp
import httpx
import pytest

from fastapi_retry_http._backends.aiohttp_pool import AiohttpTransport
from fastapi_retry_http._backends.aiohttp_session import Request
from fastapi_retry_http._backends.tls import tls_context
from fastapi_retry_http._pipeline.policy import error_phase
from tests.servers import Upstream

pytestmark = pytest.mark.anyio


def transport() -> AiohttpTransport:
    return AiohttpTransport(ssl_context=tls_context(True, False), limits=httpx.Limits())


async def test_a_url_without_a_host_is_unsupported_as_httpx_client_says() -> None:
    async with transport() as sender:
        with pytest.raises(httpx.UnsupportedProtocol) as caught:
            await sender.handle_async_request(httpx.Request("GET", "http:/x"))
    assert error_phase(caught.value) == "never"


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (ConnectionResetError(errno.ECONNRESET, "reset"), httpx.ReadError),
        (TimeoutError(errno.ETIMEDOUT, "timed out"), httpx.ReadError),  # an OS timeout has an errno
    ],
)
async def test_an_os_error_while_sending_is_mapped_as_aiohttps_own(
    upstream: Upstream, monkeypatch: pytest.MonkeyPatch, raised: OSError, expected: type[httpx.HTTPError]
) -> None:
    async def send(self: Request, connection: Any) -> aiohttp.ClientResponse:
        raise raised

    monkeypatch.setattr(Request, "send", send)
    async with httpx.AsyncClient(transport=transport()) as client:
        with pytest.raises(expected) as caught:
            await client.get(f"{upstream.url}/x")
    assert isinstance(caught.value.__context__, aiohttp.ClientOSError)
    assert str(caught.value) == f"Connection lost while receiving the response ({errno.errorcode[raised.errno or 0]})."


async def test_a_timeout_without_an_errno_is_left_as_it_is(upstream: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    """As `ClientSession._request` leaves it: asyncio's own timeouts are not OS errors."""

    async def send(self: Request, connection: Any) -> aiohttp.ClientResponse:
        raise TimeoutError

    monkeypatch.setattr(Request, "send", send)
    async with httpx.AsyncClient(transport=transport()) as client:
        with pytest.raises(TimeoutError):
            await client.get(f"{upstream.url}/x")
    assert upstream.hits["/x"] == 0
