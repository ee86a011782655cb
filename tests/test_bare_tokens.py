"""
A bare query token (a signed URL's `?s3cr3t-signature`, an API key without `=`) is a value
with no key: it never reaches a span's `url.full`, our log lines, httpx's `HTTP Request:` line
or an error, on either backend and either request path. Keys with `=` stay, values go.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.trace import SpanKind

from fastapi_retry_http import Client, RetryPolicy
from fastapi_retry_http._safety.redact import loggable_url
from fastapi_retry_http.otel import redacted_url
from tests.servers import RawServer, Upstream
from tests.test_otel import Telemetry

pytestmark = pytest.mark.anyio
both_backends_and_paths = pytest.mark.usefixtures("backend", "request_path")

SECRETS = ("s3cr3t-signature", "bare-key", "q-secret")
PATH = "/signed?s3cr3t-signature&page=2&bare-key&token=q-secret"


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    telemetry = Telemetry()
    yield telemetry
    telemetry.tracer_provider.shutdown()
    telemetry.meter_provider.shutdown()


@pytest.mark.parametrize(
    ("url", "for_spans", "for_logs"),
    [
        ("http://h/p?s3cr3t-signature", "http://h/p?REDACTED", "http://h/p?[redacted]"),
        (
            "http://h/p?a=1&tok&b=",
            "http://h/p?a=REDACTED&REDACTED&b=REDACTED",
            "http://h/p?a=[redacted]&[redacted]&b=[redacted]",
        ),
        ("http://h/p?=v", "http://h/p?=REDACTED", "http://h/p?=[redacted]"),
        ("http://h/p?&&", "http://h/p", "http://h/p"),
        (
            "http://u:pw@h:81/p?k%3D=v%26w&t%26k#frag",
            "http://h:81/p?k%3D=REDACTED&REDACTED",
            "http://h:81/p?k%3D=[redacted]&[redacted]",
        ),
    ],
)
def test_every_value_goes_a_bare_token_whole(url: str, for_spans: str, for_logs: str) -> None:
    assert (redacted_url(httpx.URL(url)), loggable_url(httpx.URL(url))) == (for_spans, for_logs)


@both_backends_and_paths
async def test_a_span_never_carries_it(telemetry: Telemetry, upstream: Upstream) -> None:
    async with Client(upstream.url, instrumentation=[telemetry.instrument]) as c:
        assert (await c.get(PATH)).status_code == 200
    (span,) = telemetry.spans(SpanKind.CLIENT)
    assert span.attributes is not None
    assert span.attributes["url.full"] == f"{upstream.url}/signed?REDACTED&page=REDACTED&REDACTED&token=REDACTED"
    assert upstream.seen["/signed"]  # it was sent, with its query, to the upstream


@both_backends_and_paths
async def test_log_lines_never_carry_it(caplog: pytest.LogCaptureFixture, upstream: Upstream) -> None:
    caplog.set_level(logging.DEBUG)
    upstream.script("/signed", 503, 200)
    async with Client(upstream.url, retry=RetryPolicy(jitter=False)) as c:
        assert (await c.get(PATH)).status_code == 200
    text = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert [r.name for r in caplog.records if r.name == "fastapi_retry_http"] == ["fastapi_retry_http"]  # the retry
    for secret in SECRETS:
        assert secret not in text
    # httpx's own line (written by httpx on the full path, by the lean path as httpx would).
    assert f"HTTP Request: GET {upstream.url}/signed?[redacted]&page=[redacted]&[redacted]&token=[redacted]" in text


@both_backends_and_paths
async def test_errors_never_carry_it(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(b"HTTP/1.1 abc Nope\r\n\r\n" if n % 2 else b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort")
        await writer.drain()
        writer.close()

    messages: list[str] = []
    async with RawServer(garbage) as server, Client(server.url, timeout=2.0) as c:
        for _ in range(2):
            with pytest.raises(httpx.HTTPError) as caught:
                await c.get(PATH)
            chain: BaseException | None = caught.value
            while chain is not None:  # the chain as tracebacks and error trackers print it
                messages.append(f"{chain!s} {chain!r}")
                chain = chain.__cause__ or (None if chain.__suppress_context__ else chain.__context__)
    text = "\n".join(messages) + caplog.text
    for secret in SECRETS:
        assert secret not in text
