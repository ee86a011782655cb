"""
An HTTP/2 server on loopback (cleartext with prior knowledge, or TLS with ALPN), written with the `h2` library: each
request it receives is counted, then answered, refused (RST_STREAM REFUSED_STREAM), reset with
another code, or met with a GOAWAY, as its script says.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions

#: What the server does with request number n (from 1): `"ok"`, `"refuse"`, `"reset"` (with
#: INTERNAL_ERROR), `"goaway"` (GOAWAY with last-stream-id 0, then close).
Script = Callable[[int], str]


@dataclass
class Received:
    """One request as the server got it."""

    method: str
    path: str
    body: bytes
    stream_id: int
    connection: int
    action: str = ""


@dataclass
class H2Server:
    script: Script
    #: A TLS context offering h2 by ALPN; cleartext (prior knowledge) without one.
    tls: ssl.SSLContext | None = None
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def processed(self) -> list[Received]:
        """The requests answered: the ones the server acted on."""
        return [r for r in self.received if r.action == "ok"]

    async def __aenter__(self) -> H2Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
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
        number = self.connections
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        heads: dict[int, dict[str, str]] = {}
        bodies: dict[int, bytearray] = {}
        try:
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        heads[event.stream_id] = {k.decode(): v.decode() for k, v in event.headers or []}
                        bodies[event.stream_id] = bytearray()
                    elif isinstance(event, h2.events.DataReceived) and event.stream_id in bodies:
                        bodies[event.stream_id] += event.data or b""
                        conn.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded) and event.stream_id in heads:
                        head, body = heads.pop(event.stream_id), bytes(bodies.pop(event.stream_id))
                        keep = self._act(conn, Received(head[":method"], head[":path"], body, event.stream_id, number))
                        if not keep:
                            writer.write(conn.data_to_send())
                            await writer.drain()
                            return
                writer.write(conn.data_to_send())
                await writer.drain()
        except (ConnectionError, h2.exceptions.ProtocolError):
            pass
        except asyncio.CancelledError:
            pass  # the server is shutting down; asyncio would log a cancelled handler
        finally:
            self._tasks.discard(task)
            writer.close()

    def _act(self, conn: h2.connection.H2Connection, request: Received) -> bool:
        """Count a whole request and act on it; `False` when the connection is to be closed."""
        request.action = action = self.script(len(self.received) + 1)
        self.received.append(request)
        stream = request.stream_id
        if action == "refuse":
            conn.reset_stream(stream, error_code=h2.errors.ErrorCodes.REFUSED_STREAM)
        elif action == "reset":
            conn.reset_stream(stream, error_code=h2.errors.ErrorCodes.INTERNAL_ERROR)
        elif action == "goaway":
            conn.close_connection(error_code=h2.errors.ErrorCodes.NO_ERROR, last_stream_id=0)
            return False
        else:
            answer = f"answer {len(self.received)}".encode()
            conn.send_headers(stream, [(":status", "200"), ("content-length", str(len(answer)))])
            conn.send_data(stream, answer, end_stream=True)
        return True
