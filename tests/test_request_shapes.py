"""
Every shape of request and response goes through each backend, and each request path of
`Client` (lean and full), identically. The upstream records what it received (body, content
type, framing): that is the oracle, not the client.

`SHAPES` is a plain list of cases so that another request path can be run over the same
cases: `case.send(client, path)` sends one with any object that has httpx's `request()`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from fastapi_retry_http import Client
from tests.servers import Reply, Upstream

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("backend", "request_path")]


async def _chunks() -> AsyncIterator[bytes]:
    for part in (b"one,", b"", b"two,", b"three"):
        yield part


@dataclass(frozen=True)
class Shape:
    """One request shape and what the upstream must receive for it."""

    name: str
    method: str = "POST"
    #: Keyword arguments of `request()`, made fresh per send (an async iterator is read once).
    kwargs: Callable[[], dict[str, Any]] = dict
    #: The body the upstream must receive; `None` to check with `check_body` instead.
    body: bytes | None = b""
    content_type: str | None = None
    #: "length" (Content-Length matches the body), "chunked", or "none" (neither header).
    framing: str = "length"
    #: Status the upstream answers with, and the body the caller must get back.
    status: int = 200
    response: bytes | None = None  # None: the echo of the body
    reply_headers: dict[str, str] = field(default_factory=dict)
    check_body: Callable[[bytes], bool] | None = None

    @property
    def path(self) -> str:
        # /echo paths echo the body (or the query); others answer from the script.
        return f"/echo/{self.name}" if self.status == 200 else f"/status/{self.name}"

    async def send(self, client: Any, path: str) -> httpx.Response:
        response: httpx.Response = await client.request(self.method, path, **self.kwargs())
        return response


SHAPES: list[Shape] = [
    Shape("bytes", kwargs=lambda: {"content": b"\x00raw\xff"}, body=b"\x00raw\xff"),
    Shape("str", kwargs=lambda: {"content": "h\u00e9llo"}, body="h\u00e9llo".encode()),
    Shape("json", kwargs=lambda: {"json": {"a": [1, 2]}}, body=b'{"a":[1,2]}', content_type="application/json"),
    Shape(
        "form",
        kwargs=lambda: {"data": {"a": "1", "b": "x y&z"}},
        body=b"a=1&b=x+y%26z",
        content_type="application/x-www-form-urlencoded",
    ),
    Shape(
        "multipart",
        kwargs=lambda: {"files": {"f": ("a.txt", b"file-bytes", "text/plain")}, "data": {"k": "v"}},
        body=None,
        content_type="multipart/form-data",
        check_body=lambda b: b'filename="a.txt"' in b and b"file-bytes" in b and b'name="k"' in b,
    ),
    Shape("stream", kwargs=lambda: {"content": _chunks()}, body=b"one,two,three", framing="chunked"),
    Shape("empty-post", kwargs=lambda: {"content": b""}, body=b""),
    Shape("get", method="GET", body=b"", framing="none"),
    Shape(
        "query", method="GET", kwargs=lambda: {"params": {"q": "a b", "n": 1}}, framing="none", response=b"q=a+b&n=1"
    ),
    Shape("head", method="HEAD", framing="none", response=b""),
    Shape("no-content", method="DELETE", framing="none", status=204, response=b""),
    Shape("not-modified", method="GET", framing="none", status=304, response=b"", reply_headers={"ETag": '"v1"'}),
]


@pytest.mark.parametrize("shape", SHAPES, ids=[s.name for s in SHAPES])
async def test_each_request_shape_reaches_the_upstream_intact(upstream: Upstream, shape: Shape) -> None:
    upstream.script(shape.path, Reply(shape.status, b"", shape.reply_headers))
    async with Client(upstream.url) as c:
        response = await shape.send(c, shape.path)

    assert upstream.hits[shape.path] == 1
    headers, body = upstream.seen[shape.path][0]
    if shape.check_body is not None:
        assert shape.check_body(body)
    else:
        assert body == shape.body
    content_type = headers.get("content-type")
    if shape.content_type is None:
        assert content_type is None
    else:
        assert content_type is not None
        assert content_type.startswith(shape.content_type)
    framing = {
        "length": (str(len(body)), None),
        "chunked": (None, "chunked"),
        "none": (None, None),
    }[shape.framing]
    assert (headers.get("content-length"), headers.get("transfer-encoding")) == framing

    assert response.status_code == shape.status
    assert response.content == (body if shape.response is None else shape.response)
    for name, value in shape.reply_headers.items():
        assert response.headers[name] == value


async def test_the_callers_request_headers_are_not_changed(upstream: Upstream) -> None:
    async with Client(upstream.url) as c:
        request = c.httpx.build_request("POST", "/echo/stream", content=_chunks())
        before = list(request.headers.raw)
        response = await c.httpx.send(request)
    assert response.content == b"one,two,three"
    assert list(request.headers.raw) == before
    assert request.headers["transfer-encoding"] == "chunked"


async def test_userinfo_in_an_absolute_url_is_sent_once_as_basic_auth(
    upstream: Upstream, backend: str, request_path: str
) -> None:
    """
    httpx turns a URL's user information into an `Authorization` header and httpcore leaves
    it out of the request line; every backend and request path sends exactly that, once.
    """
    async with Client(upstream.url, allow_absolute_urls=True) as client:
        response = await client.get(upstream.url.replace("http://", "http://user:pw@") + "/who")
    assert response.status_code == 200
    ((headers, _),) = upstream.seen["/who"]
    assert headers["authorization"] == "Basic dXNlcjpwdw=="
