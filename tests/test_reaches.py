"""
Every reach into another library's private parts, pinned: each test asserts that the private
name still exists with the shape the library relies on, so that an upgrade that moves it fails
here, loudly, rather than quietly changing behaviour. docs/architecture.md ("Reaches into other
libraries") says where each is used and why no public route does the job; the behaviour each
one buys is proven by the tests the table names.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import re
import ssl
import sys
from collections import defaultdict
from types import ModuleType
from typing import Any

import aiohttp
import aiohttp.client_proto
import aiohttp.connector
import fastapi.routing
import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.dependencies.utils import get_dependant
from fastapi.routing import APIRoute, APIWebSocketRoute
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource
from pydantic_settings.sources import EnvSettingsSource
from starlette.routing import Host, Mount, Route, WebSocketRoute

from fastapi_retry_http._backends.aiohttp_pool import AiohttpTransport
from fastapi_retry_http._backends.aiohttp_session import Request
from fastapi_retry_http._backends.aiohttp_upload import Upload
from fastapi_retry_http._backends.httpx_pool import STOP_POINTS
from fastapi_retry_http._pipeline.httpx_parts import headers_from_raw, mark_read
from fastapi_retry_http._tasks import task_of

pytestmark = pytest.mark.anyio

#: httpcore's modules whose trace events the httpx backend follows.
STEPS = ("connection", "http11", "http2")


def parameters(function: Any) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


class TestAsyncio:
    async def test_the_running_task_is_looked_up_where_asyncio_keeps_it(self) -> None:
        if sys.version_info < (3, 12):  # 3.11: the dict `current_task` reads (from 3.12 it is C, and used)
            assert asyncio.tasks._current_tasks is importlib.import_module("_asyncio")._current_tasks  # type: ignore[attr-defined]
        assert task_of(asyncio.get_running_loop()) is asyncio.current_task()
        other = asyncio.new_event_loop()
        try:
            assert task_of(other) is None  # no task runs there
        finally:
            other.close()


class TestAiohttp:
    async def test_the_exchange_follows_the_sessions_own_steps(self) -> None:
        """
        `_backends/aiohttp_exchange.py` sends as `ClientSession._request` does, step for step:
        the same request-class keywords (the ones it leaves at their defaults are the session's
        features it does not use), the same connection parameters, the same calls.
        """
        source = inspect.getsource(aiohttp.ClientSession._request)
        made = re.search(r"req = self\._request_class\((.*?)\n\s*\)\n", source, re.S)
        assert made is not None
        assert set(re.findall(r"(\w+)=", made.group(1))) == {
            *("params", "headers", "skip_auto_headers", "data", "cookies", "auth", "version", "compress"),
            *("chunked", "expect100", "loop", "response_class", "proxy", "proxy_auth", "timer", "session"),
            *("ssl", "server_hostname", "proxy_headers", "traces", "trust_env"),
        }
        given = re.search(r"conn\.protocol\.set_response_params\((.*?)\)\n", source, re.S)
        assert given is not None
        for step in (
            "conn = await self._connector.connect(",
            "except asyncio.TimeoutError as exc:",
            "resp = await req.send(conn)",
            "await resp.start(conn)",
            "raise ClientOSError(*exc.args) from exc",
            "await req._body.close()",
        ):
            assert step in source, step
        transport = AiohttpTransport(ssl_context=ssl.create_default_context(), limits=httpx.Limits(), proxy=None)
        try:
            exchange, _ = transport._open()
            names = set(exchange._params) | {"skip_payload", "read_timeout"}
            assert set(re.findall(r"(\w+)=", given.group(1))) == names
            assert names == set(
                inspect.signature(aiohttp.client_proto.ResponseHandler.set_response_params).parameters
            ) - {"self"}
            session = transport._session
            assert session is not None
            assert (session._request_class, session._response_class) == (Request, aiohttp.ClientResponse)
            assert session._loop is asyncio.get_running_loop()
            assert not session._trace_configs
            assert not session._middlewares
            assert session._default_auth is None
            assert not session._raise_for_status
            assert session._base_url is None
            assert not session.headers
        finally:
            await transport.aclose()

    async def test_the_connector_gives_connections_back_through_release_into_conns(self) -> None:
        """`_backends/aiohttp_session.py` caps idle connections where they go back to the pool."""
        P = inspect.Parameter
        assert parameters(aiohttp.TCPConnector._release) == [
            ("self", P.POSITIONAL_OR_KEYWORD, P.empty),
            ("key", P.POSITIONAL_OR_KEYWORD, P.empty),
            ("protocol", P.POSITIONAL_OR_KEYWORD, P.empty),
            ("should_close", P.KEYWORD_ONLY, False),
        ]
        # A connection given back calls it; it files idle connections in `_conns`.
        assert "self._connector._release(self._key, self._protocol)" in inspect.getsource(aiohttp.connector)
        assert "self._conns" in inspect.getsource(aiohttp.BaseConnector._release)
        connector = aiohttp.TCPConnector()
        try:
            assert isinstance(connector._conns, defaultdict)
            assert not hasattr(connector, "_max_idle")  # our attribute does not shadow one of aiohttp's
        finally:
            await connector.close()

    async def test_connections_are_made_by_factory_and_time_their_reads_through_two_methods(self) -> None:
        """`_backends/aiohttp_session.py` keeps every connection's read timeout behind one timer."""
        connector = aiohttp.TCPConnector()
        try:
            assert connector._factory.func is aiohttp.client_proto.ResponseHandler
        finally:
            await connector.close()
        assert "self._factory" in inspect.getsource(aiohttp.TCPConnector._create_direct_connection)
        handler = inspect.getsource(aiohttp.client_proto.ResponseHandler)
        # Every arming goes through `_reschedule_timeout`, every disarming through `_drop_timeout`;
        # the timer handle is touched nowhere else.
        owners = ("__init__", "_reschedule_timeout", "_drop_timeout")
        sources = [inspect.getsource(getattr(aiohttp.client_proto.ResponseHandler, name)) for name in owners]
        assert handler.count("_read_timeout_handle") == sum(source.count("_read_timeout_handle") for source in sources)
        for method in ("_reschedule_timeout", "_drop_timeout", "_on_read_timeout"):
            assert parameters(getattr(aiohttp.client_proto.ResponseHandler, method)) == [
                ("self", inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.empty)
            ]
        assert "self._read_timeout = read_timeout" in handler

    def test_the_request_class_takes_its_body_through_update_body_from_data(self) -> None:
        """`_backends/aiohttp_session.py` overrides it to leave out `Content-Length: 0`."""
        assert parameters(aiohttp.ClientRequest.update_body_from_data)[1][0] == "body"
        assert "request_class" in inspect.signature(aiohttp.ClientSession).parameters

    def test_the_upload_overrides_only_public_payload_api(self) -> None:
        """`_backends/aiohttp_upload.py` (no reach left): the properties and methods it overrides."""
        payload = aiohttp.payload.Payload
        for name in ("size", "consumed", "autoclose"):
            assert isinstance(inspect.getattr_static(payload, name), property), name
        assert parameters(payload.write_with_length)[1:] == [
            ("writer", inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.empty),
            ("content_length", inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.empty),
        ]


class _Writer:
    """What `Payload.write_with_length` writes to: the chunks it was given."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    async def write(self, chunk: bytes) -> None:
        self.chunks.append(chunk)


class TestUpload:
    """The aiohttp upload, on aiohttp's public `Payload` API where it used to reach into `_iter`."""

    async def test_it_is_consumed_once_writing_begins_and_never_replayed(self) -> None:
        upload = Upload(httpx.ByteStream(b"abc"), 3, None)
        assert (upload.size, upload.consumed, upload.autoclose) == (3, False, True)
        writer = _Writer()
        await upload.write(writer)  # type: ignore[arg-type]
        assert (writer.chunks, upload.consumed, upload.sent) == ([b"abc"], True, True)
        await upload.write(writer)  # type: ignore[arg-type]
        assert writer.chunks == [b"abc"]  # a stream is read once

    def test_it_is_never_decoded_before_it_is_sent(self) -> None:
        with pytest.raises(TypeError, match="cannot be decoded"):
            Upload(httpx.ByteStream(b"abc"), 3, None).decode()


class TestHttpx:
    def test_headers_keep_name_lowercased_name_and_value_in_one_list(self) -> None:
        """`_pipeline/httpx_parts.py` reads `Headers._list` in place and builds one from bytes."""
        headers = httpx.Headers([(b"X-One", b"1"), (b"x-two", b"2")])
        assert headers._list == [(b"X-One", b"x-one", b"1"), (b"x-two", b"x-two", b"2")]
        headers["X-Three"] = "3"  # changed in place: why callers keep a copy to compare with
        assert headers._list[-1] == (b"X-Three", b"x-three", b"3")
        assert httpx.Headers(headers)._list == headers._list  # a Headers is copied by its list
        raw = [(b"Content-Type", b"text/plain"), (b"Set-Cookie", b"a=1"), (b"set-cookie", b"b=2")]
        built = headers_from_raw(raw)
        assert built.raw == raw
        assert built["content-type"] == "text/plain"
        assert built.get_list("Set-Cookie") == ["a=1", "b=2"]
        assert built == httpx.Headers(raw)
        assert built._list == httpx.Headers(raw)._list

    def test_a_request_is_read_once_its_content_is_set(self) -> None:
        """`_lean.py` marks an empty body read as `Request.read()` would, skipping its checks."""
        request = httpx.Request("GET", "http://x/", stream=httpx.ByteStream(b""))
        with pytest.raises(httpx.RequestNotRead):
            _ = request.content
        mark_read(request, b"")
        assert request.content == b""
        assert request.read() == b""
        assert "self._content" in inspect.getsource(httpx.Request.read)

    async def test_a_response_read_elsewhere_is_served_from_content(self) -> None:
        """`_backends/aiohttp_pool.py` hands over a body it read itself, skipping httpx's decoders."""

        class Untouched(httpx.AsyncByteStream):
            async def __aiter__(self) -> Any:
                raise AssertionError("httpx read the stream again")
                yield b""  # pragma: no cover

        response = httpx.Response(200, stream=Untouched(), headers={"Content-Type": "application/json"})
        response._content = b'{"a": 1}'
        response.is_stream_consumed = True
        response.is_closed = True
        assert (response.content, response.text, response.json()) == (b'{"a": 1}', '{"a": 1}', {"a": 1})
        assert await response.aread() == b'{"a": 1}'
        assert b"".join([chunk async for chunk in response.aiter_bytes()]) == b'{"a": 1}'
        await response.aclose()


def _httpcore_modules() -> list[tuple[str, ModuleType, ModuleType, ModuleType]]:
    found: list[tuple[str, ModuleType, ModuleType, ModuleType]] = []
    for package in ("httpcore", "httpcore2"):
        try:
            connection, http11, http2 = (importlib.import_module(f"{package}._async.{m}") for m in STEPS)
        except ImportError:  # pragma: no cover (httpcore2 comes with httpx2, a development dependency)
            continue
        if all(found_package[1] is not connection for found_package in found):  # httpx2 may alias httpcore
            found.append((package, connection, http11, http2))
    return found


@pytest.mark.parametrize(("package", "connection", "http11", "http2"), _httpcore_modules())
def test_httpcore_still_emits_every_stop_point(
    package: str, connection: ModuleType, http11: ModuleType, http2: ModuleType
) -> None:
    """`_backends/httpx_pool.py` (public: the `trace` extension): a renamed step would stop nothing."""
    sources = {"connection": connection, "http11": http11, "http2": http2}
    for point in STOP_POINTS:
        prefix, step, when = point.split(".")
        module = sources[prefix]
        # The event's prefix is the last part of the step's logger name (`httpcore.http11`).
        assert (module.logger.name.rpartition(".")[2], when) == (prefix, "started")
        source = inspect.getsource(module)
        assert re.search(rf'Trace\(\s*"{step}"', source), point
    # The request's head is told by the request the event carries (a tunnel's CONNECT is not it).
    assert re.search(r'kwargs = \{"request": request\}', inspect.getsource(http11))
    assert re.search(r'kwargs = \{"request": request, "stream_id"', inspect.getsource(http2))


class TestPydanticSettings:
    def test_a_wrapped_source_is_kept_in_step_through_its_state_methods(self) -> None:
        """`_config/app.py`: the value-hiding wrapper passes the build's state to the source it wraps."""
        base = PydanticBaseSettingsSource
        assert [p[0] for p in parameters(base._set_current_state)] == ["self", "state"]
        assert [p[0] for p in parameters(base._set_settings_sources_data)] == ["self", "states"]
        build = inspect.getsource(BaseSettings._settings_build_values)
        assert "._set_current_state(" in build
        assert "._set_settings_sources_data(" in build
        source = EnvSettingsSource(BaseSettings)
        if hasattr(source, "_init_state"):  # newer than the floor (2.13.0): the wrapper copies it then
            assert isinstance(source._init_state, dict)


class TestFastAPI:
    def test_a_router_level_dependency_is_parsed_by_get_dependant(self) -> None:
        """`_fastapi/lifespan.py` parses `dependencies=[Depends(...)]` of routers as FastAPI does."""

        def inner() -> int:
            return 1

        def outer(value: int = Depends(inner)) -> int:
            return value

        P = inspect.Parameter
        assert parameters(get_dependant)[:2] == [("path", P.KEYWORD_ONLY, P.empty), ("call", P.KEYWORD_ONLY, P.empty)]
        dependant = get_dependant(path="", call=outer)
        assert dependant.call is outer
        assert [sub.call for sub in dependant.dependencies] == [inner]

    def test_every_route_is_one_the_startup_walk_knows(self) -> None:
        """`_fastapi/lifespan.py` finds client names in every kind of route FastAPI builds."""

        def guard() -> None:
            pass

        router = APIRouter(dependencies=[Depends(guard)])
        router.add_api_route("/x", guard)
        app = FastAPI()
        app.include_router(router, prefix="/v1", dependencies=[Depends(guard)])
        app.mount("/sub", FastAPI())
        app.add_api_websocket_route("/ws", guard)
        lazily_included = 0
        for route in app.routes:
            if hasattr(route, "original_router"):  # FastAPI's lazily included routers
                lazily_included += 1
                context = route.include_context  # type: ignore[attr-defined]
                assert route.original_router is router
                assert (context.prefix, [d.dependency for d in context.dependencies]) == ("/v1", [guard])
            else:  # FastAPI's routes carry their dependencies; Starlette's have none; mounts are walked
                assert type(route) in {APIRoute, APIWebSocketRoute, Route, WebSocketRoute, Mount, Host}, type(route)
        # Lazily included in the FastAPI versions that have the class (0.165 here); the walk also
        # takes the copied routes older ones make. If that changes, update the table in
        # docs/architecture.md with this pin.
        assert lazily_included == (1 if hasattr(fastapi.routing, "_IncludedRouter") else 0)
