"""
HTTP/2 refusals against a real h2 server on loopback that counts what it receives: a stream
refused with REFUSED_STREAM, or a GOAWAY whose last-stream-id is below it, was not processed
and is sent again whatever the method, within `attempts`, on a new stream or connection; any
other reset of a request that may not be resent is never retried.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import h2.errors
import h2.events
import httpx
import pytest
import trustme

from fastapi_retry_http import Client, RetryPolicy
from fastapi_retry_http._backends import default_transport
from fastapi_retry_http._backends.h2_refusals import h2_event, refusal
from fastapi_retry_http._backends.httpx_pool import CancelSafeTransport
from fastapi_retry_http._pipeline.attempts import Outcome
from fastapi_retry_http._pipeline.policy import error_phase
from fastapi_retry_http._strategies.breaker import is_failure
from fastapi_retry_http.exceptions import StreamRefused
from tests.h2_server import H2Server, Script

pytestmark = pytest.mark.anyio


def first(action: str, times: int = 1) -> Script:
    """The first `times` requests get `action`, the others an answer."""
    return lambda n: action if n <= times else "ok"


def h2c() -> CancelSafeTransport:
    """The httpx backend on HTTP/2 with prior knowledge (the server speaks no TLS)."""
    return CancelSafeTransport(httpx.AsyncHTTPTransport(http1=False, http2=True), http2=True)


def client(server: H2Server, **kwargs: Any) -> Client:
    return Client(server.url, transport=h2c(), **kwargs)


class TestRefusedRequestsAreSentAgain:
    async def test_a_refused_post_goes_again_on_a_new_stream(self) -> None:
        async with H2Server(first("refuse")) as server, client(server) as c:
            response = await c.post("/orders", content=b"order 1")
        assert (response.status_code, response.text, response.http_version) == (200, "answer 2", "HTTP/2")
        assert [(r.method, r.body, r.stream_id, r.connection) for r in server.received] == [
            ("POST", b"order 1", 1, 1),
            ("POST", b"order 1", 3, 1),  # the same connection, the next stream
        ]
        assert len(server.processed) == 1

    async def test_a_post_above_a_goaway_last_stream_id_goes_again_on_a_new_connection(self) -> None:
        async with H2Server(first("goaway")) as server, client(server) as c:
            response = await c.post("/orders", content=b"order 1")
        assert (response.status_code, response.text) == (200, "answer 2")
        assert [(r.stream_id, r.connection, r.action) for r in server.received] == [(1, 1, "goaway"), (1, 2, "ok")]

    async def test_refusals_are_retried_within_attempts_only(self) -> None:
        async with H2Server(lambda n: "refuse") as server, client(server, retry=RetryPolicy(attempts=3)) as c:
            with pytest.raises(StreamRefused) as caught:
                await c.post("/orders", content=b"order 1")
        assert len(server.received) == 3
        assert (caught.value.error_code, caught.value.stream_id, caught.value.last_stream_id) == (7, 5, None)
        assert "attempt 3 of at most 3" in str(caught.value.__notes__)

    async def test_with_one_attempt_a_refusal_is_raised(self) -> None:
        async with H2Server(first("refuse")) as server, client(server, retry=RetryPolicy(attempts=1)) as c:
            with pytest.raises(StreamRefused):
                await c.put("/orders/1", content=b"order 1")
        assert len(server.received) == 1

    async def test_a_refused_get_goes_again_too(self) -> None:
        async with H2Server(first("refuse", 2)) as server, client(server) as c:
            response = await c.get("/orders/1")
        assert (response.text, len(server.received)) == ("answer 3", 3)


class TestOtherResetsAreNotRefusals:
    async def test_a_reset_post_is_never_retried(self) -> None:
        async with H2Server(first("reset")) as server, client(server) as c:
            with pytest.raises(httpx.RemoteProtocolError) as caught:
                await c.post("/orders", content=b"order 1")
        assert not isinstance(caught.value, StreamRefused)
        assert len(server.received) == 1

    async def test_a_reset_get_is_retried_as_any_reset_of_an_idempotent_request(self) -> None:
        async with H2Server(first("reset")) as server, client(server) as c:
            response = await c.get("/orders/1")
        assert (response.text, len(server.received)) == ("answer 2", 2)

    def test_a_goaway_at_or_above_the_stream_may_have_processed_it(self) -> None:
        event = h2.events.ConnectionTerminated()
        event.error_code, event.last_stream_id = h2.errors.ErrorCodes.NO_ERROR, 5
        error = _from_httpcore(event)
        assert refusal(error, 5) is None
        assert refusal(error, None) is None  # the stream is unknown: nothing is assumed
        refused = refusal(error, 7)
        assert refused is not None
        assert (refused.stream_id, refused.last_stream_id) == (7, 5)

    @pytest.mark.parametrize(
        "error",
        [
            httpx.RemoteProtocolError("Server disconnected without sending a response."),
            httpx.RemoteProtocolError("<StreamReset stream_id:1, error_code:7, remote_reset:True>"),
        ],
    )
    def test_the_message_alone_is_never_read(self, error: httpx.RemoteProtocolError) -> None:
        # The second spells a refusal in its text but carries no h2 event: not a refusal.
        assert (h2_event(error), refusal(error, 1)) == (None, None)


class TestHttpcoreContract:
    async def test_httpcore_still_carries_h2s_event_in_its_error(self) -> None:
        """If this fails, httpcore changed how it raises resets: update `h2_refusals.h2_event`."""
        raw = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(http1=False, http2=True))
        async with H2Server(first("refuse")) as server, raw:
            with pytest.raises(httpx.RemoteProtocolError) as caught:
                await raw.post(server.url, content=b"x")
        event = h2_event(caught.value)
        assert isinstance(event, h2.events.StreamReset), (
            "httpcore no longer raises RemoteProtocolError(h2 event): HTTP/2 refusals would go unnoticed"
        )
        assert event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM

    async def test_a_callers_own_trace_extension_still_hears_everything(self) -> None:
        heard: list[str] = []

        async def trace(name: str, info: dict[str, Any]) -> None:
            heard.append(name)

        async with H2Server(first("refuse")) as server, client(server) as c:
            response = await c.httpx.post("/orders", content=b"x", extensions={"trace": trace})
        assert response.status_code == 200
        assert heard.count("http2.send_request_headers.started") == 2  # both attempts

    def test_a_refusal_is_retried_like_a_failure_to_connect_and_counts_for_the_breaker(self) -> None:
        refused = StreamRefused("refused", error_code=7, stream_id=1)
        assert error_phase(refused) == "connect"
        assert is_failure(Outcome(error=refused))
        assert (refused.client, refused.retry_after) == ("", 0.0)
        assert RetryPolicy().retries_error(httpx.Request("POST", "http://x"), refused)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def bundle(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


class TestThroughTheClientsOwnBackend:
    async def test_http2_true_over_tls_retries_a_refused_post(self, ca: trustme.CA, bundle: str) -> None:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(tls)
        tls.set_alpn_protocols(["h2"])
        async with H2Server(first("refuse"), tls=tls) as server:
            c = Client(server.url, http2=True, verify=bundle)
            async with c:
                response = await c.post("/orders", content=b"order 1")
        assert (response.text, response.http_version, len(server.received)) == ("answer 2", "HTTP/2", 2)

    def test_http1_clients_do_not_pay_for_it(self) -> None:
        transport = default_transport(backend="httpx", http2=False)
        assert isinstance(transport, CancelSafeTransport)
        assert transport._refusals is None


def _from_httpcore(event: h2.events.Event) -> httpx.RemoteProtocolError:
    """An httpx error raised as httpx raises it from httpcore's."""
    import httpcore

    try:
        try:
            raise httpcore.RemoteProtocolError(event)
        except httpcore.RemoteProtocolError as cause:
            raise httpx.RemoteProtocolError(str(cause)) from cause
    except httpx.RemoteProtocolError as error:
        return error
