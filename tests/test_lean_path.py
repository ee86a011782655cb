"""
The lean request path of `Client` (no `httpx.AsyncClient.send`) gives the caller what the full
path gives, and hands over to the full path whenever the httpx client has something to add.
The request-shape and client tests run on both paths (the `request_path` fixture); these are
the cases only the lean path has: its caches, and what sends a call down the full path.
"""

from __future__ import annotations

import asyncio
import datetime
import logging

import httpx
import pytest

from fastapi_retry_http import Client, RetryPolicy, _client, _lean
from fastapi_retry_http._backends import aiohttp_pool
from fastapi_retry_http._backends.aiohttp_pool import AiohttpTransport
from fastapi_retry_http._backends.tls import tls_context
from fastapi_retry_http._pipeline.attempts import OPTIONS_EXTENSION, CallOptions
from fastapi_retry_http.exceptions import ClientClosedError, ResponseTooLargeError
from tests.servers import RawServer, Reply, Upstream

pytestmark = [pytest.mark.anyio]


def recording(status: int = 200, headers: dict[str, str] | None = None) -> tuple[list[httpx.Request], Client]:
    """A client on a mock upstream, and the requests the upstream received."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, headers=headers, content=b"ok")

    return seen, Client("http://upstream/base/", transport=httpx.MockTransport(handler))


async def send_spy(client: Client) -> list[httpx.Request]:
    """Records the requests that go through `httpx.AsyncClient.send` (the full path)."""
    sent: list[httpx.Request] = []
    original = client.httpx.send

    async def spy(request: httpx.Request, **kwargs: object) -> httpx.Response:
        sent.append(request)
        return await original(request, **kwargs)  # type: ignore[arg-type]

    client.httpx.send = spy  # type: ignore[method-assign]
    return sent


async def no_op_hook(request: httpx.Request) -> None:
    pass


class TestChoice:
    async def test_a_default_client_skips_httpx_send(self) -> None:
        seen, client = recording()
        async with client:
            full = await send_spy(client)
            response = await client.get("items")
        assert (len(seen), full) == (1, [])
        assert response.request is seen[0]
        assert str(response.request.url) == "http://upstream/base/items"

    @pytest.mark.parametrize(
        "setup",
        [
            lambda c: setattr(c.httpx, "auth", ("user", "pw")),
            lambda c: c.httpx.cookies.set("session", "1"),
            lambda c: setattr(c.httpx, "params", {"k": "v"}),
            lambda c: setattr(c.httpx, "follow_redirects", True),
            lambda c: c.httpx.event_hooks["request"].append(no_op_hook),
        ],
        ids=["auth", "cookies", "params", "redirects", "hooks"],
    )
    async def test_what_httpx_send_would_add_takes_the_full_path(self, setup: object) -> None:
        _seen, client = recording()
        async with client:
            full = await send_spy(client)
            setup(client)  # type: ignore[operator]
            await client.get("items")
        assert len(full) == 1

    async def test_cookies_set_through_httpx_are_sent(self) -> None:
        seen, client = recording()
        async with client:
            client.httpx.cookies.set("session", "1")
            await client.get("items")
        assert seen[0].headers["cookie"] == "session=1"

    async def test_set_cookie_is_not_kept_on_the_lean_path(self) -> None:
        # One client serves every caller of a service: a cookie one upstream answer sets
        # would go out with everyone's later calls. Cookies are set explicitly, through .httpx.
        seen, client = recording(headers={"Set-Cookie": "session=1"})
        async with client:
            await client.get("a")
            await client.get("b")
            assert not client.httpx.cookies
        assert "cookie" not in seen[1].headers

    async def test_hooks_or_kept_cookies_at_construction_choose_the_full_path_once(self) -> None:
        async def hook(request: httpx.Request) -> None:
            pass

        assert Client("http://upstream/")._lean is not None
        assert Client("http://upstream/", event_hooks={"request": [hook]})._lean is None
        assert Client("http://upstream/", keep_cookies=True)._lean is None
        assert Client("http://upstream/", event_hooks={"request": []})._lean is not None
        # Redirects are decided per call: they can be turned on later through `.httpx`.
        redirecting = Client("http://upstream/", follow_redirects=True)
        assert redirecting._lean is not None
        assert not redirecting._lean.plain()

    async def test_userinfo_in_an_absolute_url_takes_the_full_path(self) -> None:
        seen, client = recording()
        async with client:
            client._allow_absolute_urls = True
            full = await send_spy(client)
            await client.get("http://user:pw@other/x")
        assert len(full) == 1
        assert seen[0].headers["authorization"].startswith("Basic ")

    async def test_the_forced_full_path_switch(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(_client, "LEAN_PATH", False)
        assert Client("http://upstream/")._lean is None


class TestSameRequest:
    """Requests built on the lean path are those httpx's `build_request` builds."""

    @pytest.mark.parametrize(
        ("method", "path", "kwargs"),
        [
            ("GET", "items", {}),
            ("get", "items", {}),
            ("HEAD", "/items?x=1", {}),
            ("DELETE", "a/b", {"params": {"q": "a b"}}),
            ("GET", "items", {"headers": {"X-Call": "1"}}),
            ("GET", "items", {"headers": {"Host": "virtual"}}),
            ("POST", "items", {}),
            ("PUT", "items", {"json": {"a": 1}}),
            ("PATCH", "items", {"content": b"x", "headers": {"Content-Type": "text/plain"}}),
            ("POST", "items", {"data": {"a": "1"}}),
            ("GET", "http://other:8080/p", {}),
        ],
    )
    async def test_method_url_headers_body_and_timeout(self, method: str, path: str, kwargs: dict[str, object]) -> None:
        seen, client = recording()
        async with client:
            client.httpx.headers["X-Team"] = "a"
            client._allow_absolute_urls = True
            await client.request(method, path, **kwargs)  # type: ignore[arg-type]
            expected = client.httpx.build_request(method, path, **kwargs)  # type: ignore[arg-type]
        request = seen[0]
        assert (request.method, request.url) == (expected.method, expected.url)
        assert request.headers.raw == expected.headers.raw
        assert request.content == expected.content
        assert request.extensions["timeout"] == expected.extensions["timeout"]

    async def test_per_call_timeout_and_policy(self) -> None:
        seen, client = recording()
        policy = RetryPolicy(attempts=1)
        async with client:
            await client.get("items", timeout=3, retry=policy)
        assert seen[0].extensions["timeout"] == {"connect": 3.0, "read": 3.0, "write": 3.0, "pool": 3.0}
        assert seen[0].extensions["fastapi_retry_http.options"].retry is policy

    async def test_client_headers_changed_or_replaced_apply_to_later_calls(self) -> None:
        seen, client = recording()
        async with client:
            await client.get("a")
            client.headers["X-Team"] = "b"
            await client.get("a")
            client.httpx.headers = {"X-Other": "c"}
            await client.get("a")
        assert [r.headers.get("x-team") for r in seen] == [None, "b", None]
        assert seen[2].headers["x-other"] == "c"
        assert seen[2].headers["host"] == "upstream"

    async def test_urls_follow_a_replaced_base_url_and_the_cache_stays_bounded(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(_lean, "URL_CACHE_SIZE", 2)
        seen, client = recording()
        async with client:
            for path in ("a", "b", "c", "a"):
                await client.get(path)
            assert client._lean is not None
            assert len(client._lean._urls) <= 2
            client.httpx.base_url = "http://elsewhere/v2/"
            await client.get("a")
        assert [str(r.url) for r in seen] == [
            "http://upstream/base/a",
            "http://upstream/base/b",
            "http://upstream/base/c",
            "http://upstream/base/a",
            "http://elsewhere/v2/a",
        ]


class TestSameResponse:
    async def test_request_elapsed_raise_for_status_and_extensions(self) -> None:
        seen, client = recording(status=503)
        async with client:
            response = await client.get("items", retry=RetryPolicy(attempts=2, jitter=False))
        assert response.request is seen[-1]
        assert isinstance(response.elapsed, datetime.timedelta)
        assert response.extensions["fastapi_retry_http.attempts"] == 2
        with pytest.raises(httpx.HTTPStatusError) as raised:
            response.raise_for_status()
        assert raised.value.request is seen[-1]

    async def test_errors_carry_the_request(self) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("refused")  # no request given, as a transport may do

        async with Client("http://upstream/", transport=httpx.MockTransport(handler)) as client:
            with pytest.raises(httpx.ConnectError) as raised:
                await client.get("x", retry=RetryPolicy(attempts=1))
        assert raised.value.request.url == "http://upstream/x"

    async def test_a_sync_body_is_refused_as_httpx_refuses_it(self) -> None:
        seen, client = recording()
        async with client:
            with pytest.raises(RuntimeError, match="sync request"):
                await client.post("items", content=iter([b"x"]))
        assert seen == []

    async def test_httpx_request_log_line_is_written_redacted(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.INFO, logger="httpx")
        _seen, client = recording()
        async with client:
            await client.get("items", params={"api_key": "secret"})
        assert 'HTTP Request: GET http://upstream/base/items?api_key=[redacted] "HTTP/1.1 200 OK"' in caplog.text
        assert "secret" not in caplog.text


class TestEagerBodies:
    """The aiohttp backend reads small identity bodies within the attempt."""

    @pytest.fixture
    async def transport(self) -> AiohttpTransport:
        return AiohttpTransport(ssl_context=tls_context(True, False), limits=httpx.Limits(max_connections=None))

    async def test_a_small_body_arrives_read_and_its_connection_is_reused(
        self, upstream: Upstream, transport: AiohttpTransport
    ) -> None:
        upstream.script("/small", Reply(200, b"x" * 10))
        async with httpx.AsyncClient(transport=transport) as c:
            response = await transport.handle_async_request(c.build_request("GET", upstream.url + "/small"))
            assert (response.is_stream_consumed, response.is_closed, response.content) == (True, True, b"x" * 10)
            await c.get(upstream.url + "/again")
        assert len(upstream.client_ports) == 1

    async def test_streamed_calls_and_large_bodies_are_not_read_eagerly(
        self, upstream: Upstream, transport: AiohttpTransport, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(aiohttp_pool, "EAGER_BYTES", 1)
        async with httpx.AsyncClient(transport=transport) as c:
            large = await transport.handle_async_request(c.build_request("GET", upstream.url + "/x"))
            streamed = c.build_request(
                "GET", upstream.url + "/y", extensions={OPTIONS_EXTENSION: CallOptions(stream=True)}
            )
            small = await transport.handle_async_request(streamed)
            for response in (large, small):
                assert not response.is_stream_consumed
                assert await response.aread() == b"ok"
                await response.aclose()

    async def test_a_body_cut_short_is_a_retried_read_failure(self) -> None:
        async def truncated(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: int) -> None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            await writer.drain()
            writer.close()

        async with RawServer(truncated) as server, Client(server.url) as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get("/x")
        assert server.connections == 3

    async def test_the_size_cap_still_applies(self, upstream: Upstream) -> None:
        upstream.script("/big", Reply(200, b"x" * 100))
        async with Client(upstream.url, max_response_bytes=10) as client:
            with pytest.raises(ResponseTooLargeError):
                await client.get("/big")

    async def test_timeouts_are_shared_and_bounded(
        self, transport: AiohttpTransport, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(aiohttp_pool, "_TIMEOUTS_KEPT", 2)
        first = transport._timeout({"connect": 1.0, "read": 2.0})
        assert transport._timeout({"connect": 1.0, "read": 2.0, "pool": 3.0}) is first
        for read in (3.0, 4.0, 5.0):
            transport._timeout({"connect": 1.0, "read": read})
        assert len(transport._timeouts) <= 2

    async def test_closing_ends_a_streamed_body_being_read(self) -> None:
        hang = asyncio.Event()

        async def partial(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: int) -> None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            await writer.drain()
            await hang.wait()

        async with RawServer(partial) as server:
            client = Client(server.url)
            async with client.stream("GET", "/x") as response:
                chunks = response.aiter_raw()
                assert await anext(chunks) == b"abc"
                reading = asyncio.ensure_future(anext(chunks))
                await asyncio.sleep(0.05)
                await client.aclose()
                with pytest.raises(ClientClosedError):
                    await reading
            hang.set()

    async def test_aiohttp_adds_no_header_of_its_own(self, upstream: Upstream) -> None:
        async with Client(upstream.url) as client:
            del client.headers["User-Agent"]
            del client.headers["Accept"]
            await client.get("/bare")
            await client.post("/bare")
        for headers, _ in upstream.seen["/bare"]:
            assert not {"user-agent", "accept", "content-type"} & set(headers)
