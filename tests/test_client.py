"""`Client` against a real loopback HTTP server: the server's request count is the oracle."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import httpx
import pytest

from fastapi_retry_http import Client, RetryPolicy
from fastapi_retry_http._backends.aiohttp_pool import AiohttpTransport
from fastapi_retry_http.exceptions import ClientClosedError, ConfigurationError, UnsafePathError
from tests.servers import RawServer, Reply, Upstream, ok

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("backend", "request_path")]


@pytest.fixture
async def client(upstream: Upstream) -> AsyncIterator[Client]:
    async with Client(upstream.url, name="up") as c:
        yield c


class TestRetriesCountedAtTheServer:
    async def test_get_is_retried_until_it_succeeds(
        self, client: Client, upstream: Upstream, waits: list[float]
    ) -> None:
        upstream.script("/flaky", 503, 502)
        response = await client.get("/flaky")
        assert (response.status_code, response.text) == (200, "ok")
        assert upstream.hits["/flaky"] == 3
        assert len(waits) == 2

    async def test_retries_spent_return_the_last_response(self, client: Client, upstream: Upstream) -> None:
        upstream.script("/down", 503, 503, Reply(503, b"last"), 200)
        response = await client.get("/down")
        assert (response.status_code, response.content, upstream.hits["/down"]) == (503, b"last", 3)

    async def test_post_is_not_resent(self, client: Client, upstream: Upstream) -> None:
        upstream.script("/charge", 503, 200)
        assert (await client.post("/charge", json={"amount": 5})).status_code == 503
        assert upstream.hits["/charge"] == 1

    async def test_post_with_idempotency_key_is_resent_with_the_same_key_and_body(
        self, client: Client, upstream: Upstream
    ) -> None:
        upstream.script("/charge", 503, 200)
        response = await client.post("/charge", json={"amount": 5}, headers={"Idempotency-Key": "k-1"})
        assert response.status_code == 200
        assert [(h["idempotency-key"], json.loads(b)) for h, b in upstream.seen["/charge"]] == [
            ("k-1", {"amount": 5}),
            ("k-1", {"amount": 5}),
        ]

    async def test_4xx_is_not_retried(self, client: Client, upstream: Upstream) -> None:
        upstream.script("/missing", 404, 200)
        assert (await client.get("/missing")).status_code == 404
        assert upstream.hits["/missing"] == 1

    async def test_retry_after_from_the_server_is_honoured(
        self, client: Client, upstream: Upstream, waits: list[float]
    ) -> None:
        upstream.script("/throttled", Reply(429, headers={"Retry-After": "3"}))
        assert (await client.get("/throttled")).status_code == 200
        assert waits == [3.0]

    async def test_retried_requests_reuse_one_connection_and_never_hit_pool_timeout(self, upstream: Upstream) -> None:
        big = b"x" * 200_000  # larger than any socket buffer: it must be read to free the connection
        limits = httpx.Limits(max_connections=1)
        timeout = httpx.Timeout(5.0, pool=0.5)
        async with Client(upstream.url, limits=limits, timeout=timeout, retry_budget=None) as c:
            for round_ in range(5):
                upstream.script(f"/big{round_}", Reply(503, big), Reply(503, big))
                assert (await c.get(f"/big{round_}")).status_code == 200
                upstream.script("/stream", Reply(503, b"busy"))
                async with c.stream("GET", "/stream") as response:
                    assert (response.status_code, await response.aread()) == (200, b"ok")
            # A discarded body too large to drain costs its connection, never a pool slot.
            upstream.script("/huge", Reply(503, big * 5))
            async with c.stream("GET", "/huge") as response:
                assert (response.status_code, await response.aread()) == (200, b"ok")
        assert sum(upstream.hits.values()) == 5 * 3 + 5 * 2 + 2
        assert len(upstream.client_ports) == 2

    async def test_concurrency_is_bounded_by_max_connections(self) -> None:
        in_flight = peak = 0

        async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.005)
            in_flight -= 1
            await ok(reader, writer)

        async with RawServer(slow) as server, Client(server.url, limits=httpx.Limits(max_connections=10)) as c:
            responses = await asyncio.gather(*(c.get(f"/{i}") for i in range(50)))
        assert [r.status_code for r in responses] == [200] * 50
        assert server.connections <= 10
        assert peak <= 10

    async def test_stream_is_retried_until_the_headers_arrive(self, client: Client, upstream: Upstream) -> None:
        upstream.script("/export", 503, Reply(200, b"a" * 100_000))
        async with client.stream("GET", "/export") as response:
            assert response.status_code == 200
            body = b"".join([chunk async for chunk in response.aiter_bytes()])
        assert (len(body), upstream.hits["/export"]) == (100_000, 2)


class TestRequests:
    @pytest.mark.parametrize("method", ["get", "head", "options", "delete"])
    async def test_methods_without_body(self, client: Client, upstream: Upstream, method: str) -> None:
        response = await getattr(client, method)("/echo", params={"q": "1"}, headers={"X-One": "1"})
        assert response.status_code == 200
        headers, _ = upstream.seen["/echo"][0]
        assert headers["x-one"] == "1"
        if method != "head":
            assert response.text == "q=1"

    @pytest.mark.parametrize("method", ["post", "put", "patch"])
    async def test_methods_with_body(self, client: Client, method: str) -> None:
        send = getattr(client, method)
        assert (await send("/echo", content=b"raw")).content == b"raw"
        assert (await send("/echo", json={"a": 1})).json() == {"a": 1}
        assert (await send("/echo", data={"a": "1"})).content == b"a=1"
        assert b"filebody" in (await send("/echo", files={"f": ("f.txt", b"filebody")})).content

    async def test_paths_resolve_under_the_base_path(self, upstream: Upstream) -> None:
        async with Client(upstream.url + "/api/v1/") as c:
            await c.get("items/1")
            await c.get("./a:b")
        assert set(upstream.hits) == {"/api/v1/items/1", "/api/v1/a:b"}

    async def test_client_headers_are_sent_and_can_change(self, upstream: Upstream) -> None:
        async with Client(upstream.url, headers={"X-Team": "a"}) as c:
            await c.get("/h")
            c.headers["X-Team"] = "b"
            await c.get("/h")
        assert [h["x-team"] for h, _ in upstream.seen["/h"]] == ["a", "b"]

    async def test_event_hooks_run_once_per_request_not_per_attempt(self, upstream: Upstream) -> None:
        seen: list[int] = []

        async def on_response(response: httpx.Response) -> None:
            seen.append(response.status_code)

        upstream.script("/hooked", 503)
        async with Client(upstream.url, event_hooks={"response": [on_response]}) as c:
            await c.get("/hooked")
        assert (seen, upstream.hits["/hooked"]) == ([200], 2)

    async def test_attributes(self, upstream: Upstream) -> None:
        policy = RetryPolicy(attempts=5)
        async with Client(upstream.url + "/api/", name="billing", retry=policy) as c:
            assert (c.name, str(c.base_url), c.retry) == ("billing", upstream.url + "/api/", policy)
            assert isinstance(c.httpx, httpx.AsyncClient)
        assert Client("http://shipping.internal:8080").name == "shipping.internal"


class TestPathGuard:
    @pytest.mark.parametrize(
        "path",
        [
            "http://evil.example/x",
            "https://evil.example",
            "//evil.example/x",
            "https:/evil.example",
            "\\\\evil.example\\x",
            "/a\\..\\..\\admin",
            "../admin",
            "a/../../admin",
            "%2e%2e/admin",
            "%2E%2e%2fadmin",
            "a/%2e%2e/%2e%2e/admin",
            "x\r\nHost: evil",
            "javascript:alert(1)",
            "..%5c..%5cadmin",
            "a%5C..%5Cadmin",
            "..;/..;/admin",
            "a/..;x=1/..;/admin",
            "%2e%2e;/admin",
        ],
    )
    async def test_refused_before_any_io(self, upstream: Upstream, path: str) -> None:
        async with Client(upstream.url + "/api/") as c:
            with pytest.raises(UnsafePathError):
                await c.get(path)
            with pytest.raises(ValueError, match=r"."):
                await c.post(path)
        assert sum(upstream.hits.values()) == 0

    @pytest.mark.parametrize(
        "path", ["a/../b", "./x", "a/b/../../c", "items?next=../../x", "%2e/x", "..a/b", "a;v=1/b", "a/..;/b"]
    )
    async def test_paths_that_stay_inside_are_allowed(self, upstream: Upstream, path: str) -> None:
        async with Client(upstream.url + "/api/") as c:
            assert (await c.get(path)).status_code == 200

    async def test_allow_absolute_urls_lifts_the_host_rule_only(self, upstream: Upstream) -> None:
        async with Client(upstream.url + "/api/", allow_absolute_urls=True) as c:
            assert (await c.get(upstream.url + "/other")).status_code == 200
            with pytest.raises(UnsafePathError):
                await c.get("../../admin")
        assert upstream.hits["/other"] == 1

    async def test_a_client_without_base_url_takes_absolute_urls(self, upstream: Upstream) -> None:
        async with Client() as c:
            assert (await c.get(upstream.url + "/abs")).status_code == 200


class TestLifecycle:
    async def test_a_closed_client_refuses_requests(self, upstream: Upstream) -> None:
        c = Client(upstream.url, name="billing")
        await c.aclose()
        await c.aclose()  # idempotent
        assert c.is_closed
        with pytest.raises(ClientClosedError, match="'billing' is closed"):
            await c.get("/x")
        with pytest.raises(RuntimeError):
            async with c.stream("GET", "/x"):
                pass
        assert sum(upstream.hits.values()) == 0

    def test_repr_carries_no_secrets(self) -> None:
        c = Client("https://billing.internal/api", headers={"Authorization": "tok-secret"})
        assert repr(c) == "<Client 'billing.internal' base_url='https://billing.internal/api/'>"

    def test_a_base_url_with_a_query_is_refused(self) -> None:
        # httpx would glue every path after the query string.
        with pytest.raises(ValueError, match="'billing': base_url: a query or fragment is not allowed") as caught:
            Client("https://billing.internal/api?key=q-secret", name="billing")
        assert "q-secret" not in str(caught.value)

    def test_credentials_in_the_base_url_are_refused_as_in_settings(self) -> None:
        # httpx sent them as Basic auth, aiohttp failed every request: now neither, and the
        # same rule as ClientSettings.
        with pytest.raises(ConfigurationError, match="'billing': base_url: credentials in the URL") as caught:
            Client("https://user:pw-secret@billing.internal/api", name="billing")
        assert "pw-secret" not in str(caught.value)

    @pytest.mark.parametrize("url", ["ftp://files.internal/", "ws://socket.internal/"])
    def test_a_base_url_that_is_not_http_is_refused(self, url: str) -> None:
        with pytest.raises(ConfigurationError, match="'up': base_url: the scheme must be http or https"):
            Client(url, name="up")

    def test_verify_false_warns_once_per_client(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.WARNING, logger="fastapi_retry_http")
        Client("https://a.internal", name="a", verify=False)
        Client("https://b.internal", name="b")
        messages = [r.getMessage() for r in caplog.records]
        assert messages == ["a: TLS certificate verification is off (verify=False)."]

    def test_clients_with_equal_tls_settings_share_one_ssl_context(self) -> None:
        a, b = Client("https://a.internal"), Client("https://b.internal")
        c = Client("https://c.internal", http2=True)
        ctx = [ssl_context_of(x) for x in (a, b, c)]
        assert ctx[0] is ctx[1]
        assert ctx[0] is not ctx[2]


def ssl_context_of(client: Client) -> object:
    inner = client.transport.inner
    if isinstance(inner, AiohttpTransport):
        return inner._ssl_context
    return inner.inner._pool._ssl_context  # type: ignore[attr-defined]
