"""
The same contract over HTTP/2 (what every `http2=True` client uses: httpx's pool): an attempt
abandoned while it waits for a stream is never sent afterwards, and one cut by its attempt
timeout leaves the connection to healthy calls. Against a small h2 server over TLS that counts
the requests it receives and allows one stream at a time.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import pytest
import trustme

from fastapi_retry_http import Client, RetryPolicy
from fastapi_retry_http.exceptions import AttemptTimeout
from tests.test_abandoned import count_entries, until

pytestmark = pytest.mark.anyio

#: What a stream's handler does with its request: `(path, reply)`, where `reply(status, body,
#: end)` sends headers and data.
Reply = Callable[[bytes, bool], None]
Handler = Callable[[str, Reply], Awaitable[None]]


class H2Server:
    """An HTTP/2 server over TLS allowing `streams` at a time per connection; `paths` lists what it received."""

    def __init__(self, ca: trustme.CA, handler: Handler, streams: int = 1) -> None:
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(self._context)
        self._context.set_alpn_protocols(["h2"])
        self._handler = handler
        self._streams = streams
        self.paths: list[str] = []
        self.connections = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def __aenter__(self) -> H2Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        config = h2.config.H2Configuration(client_side=False)
        connection = h2.connection.H2Connection(config)
        connection.local_settings = h2.settings.Settings(
            client=False, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self._streams}
        )
        connection.initiate_connection()
        writer.write(connection.data_to_send())
        try:
            while data := await reader.read(65536):
                for event in connection.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        path = dict(event.headers)[b":path"].decode()
                        self.paths.append(path)
                        self._spawn(self._answer(connection, writer, event.stream_id, path))
                writer.write(connection.data_to_send())
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(
        self, connection: h2.connection.H2Connection, writer: asyncio.StreamWriter, stream: int, path: str
    ) -> None:
        started = False

        def reply(body: bytes, end: bool) -> None:
            nonlocal started
            if writer.is_closing():
                return
            try:
                if not started:
                    headers = [(":status", "200"), ("content-length", "1000" if not end else str(len(body)))]
                    connection.send_headers(stream, headers)
                    started = True
                connection.send_data(stream, body, end_stream=end)
            except h2.exceptions.StreamClosedError:
                return  # the client reset it
            writer.write(connection.data_to_send())

        await self._handler(path, reply)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def bundle(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


async def test_a_post_abandoned_while_waiting_for_a_stream_is_never_sent(ca: trustme.CA, bundle: str) -> None:
    release = asyncio.Event()

    async def held_first(path: str, reply: Reply) -> None:
        if path == "/hold":
            await release.wait()
        reply(b"ok", True)

    async with H2Server(ca, held_first) as server, Client(server.url, verify=bundle, http2=True) as c:
        entered = count_entries(c)
        first = asyncio.create_task(c.get("/hold"))
        await until(lambda: server.paths == ["/hold"])
        post = asyncio.create_task(c.post("/charge", content=b"42 EUR"))
        await until(lambda: entered == ["/hold", "/charge"])  # the one stream is taken: it waits
        post.cancel()
        with pytest.raises(asyncio.CancelledError):
            await post
        release.set()
        response = await first
        assert (response.http_version, response.status_code) == ("HTTP/2", 200)
        assert (await c.get("/after")).status_code == 200  # on the same connection, after the POST
    assert server.paths == ["/hold", "/after"]


async def test_an_attempt_cut_on_a_dripping_stream_leaves_the_connection_to_healthy_calls(
    ca: trustme.CA, bundle: str
) -> None:
    """
    Cancelled mid-body, the stream is given up and the connection goes on serving. (httpcore
    ends a stream early without RST_STREAM, for any early close: the server's stream stays
    open until it ends it, so this server allows a second one. See docs/architecture.md.)
    """

    async def drip(path: str, reply: Reply) -> None:
        if path == "/drip":
            reply(b"x", False)
            await asyncio.Event().wait()  # never ends the stream
        reply(b"ok", True)

    policy = RetryPolicy(attempts=1, attempt_timeout=0.05)
    async with (
        H2Server(ca, drip, streams=2) as server,
        Client(server.url, verify=bundle, http2=True, retry=policy) as c,
    ):
        with pytest.raises(AttemptTimeout):
            await c.get("/drip")
        for _ in range(3):
            assert (await c.get("/healthy")).status_code == 200
    assert server.paths == ["/drip", "/healthy", "/healthy", "/healthy"]
    assert server.connections == 1
