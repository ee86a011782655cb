"""
The request body on the aiohttp backend: written with httpx's write timeout, which aiohttp
lacks, and with a record of how far it got (which tells the phase of a failure).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

__all__ = ["Upload", "WriteTimedOut", "upload"]


class WriteTimedOut(TimeoutError):
    """One chunk of the body was not taken by the socket within the write timeout."""


class Upload(Payload):
    """
    The request body, written with httpx's write timeout and a record of how far it got.

    httpx bounds each chunk handed to the socket by the write timeout; aiohttp has no
    write timeout at all, so a server that stops reading would stall the upload until the
    retry deadline. `sent` tells "being written" from "waiting for the response" for errors.
    Built on aiohttp's public `Payload` API (`size`, `consumed`, `autoclose`,
    `write_with_length`), none of its private attributes.
    """

    def __init__(self, stream: httpx.AsyncByteStream, size: int | None, timeout: float | None) -> None:
        super().__init__(stream)
        self._source = stream.__aiter__()
        self._length = size
        self._write_timeout = timeout
        self._started = False
        self.sent = False
        self.failure: Exception | None = None

    @property
    def size(self) -> int | None:
        """The body's length, when httpx knows it (else aiohttp sends it chunked)."""
        return self._length

    @property
    def consumed(self) -> bool:
        """Whether writing began: a stream is read once, so aiohttp must not replay it."""
        return self._started

    @property
    def autoclose(self) -> bool:
        """Nothing to close here: httpx closes its request stream itself."""
        return True

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        """Not offered: reading a streamed body to show it would leave nothing to send."""
        raise TypeError("A streamed request body cannot be decoded before it is sent.")

    async def write(self, writer: AbstractStreamWriter) -> None:
        """Write the whole body."""
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer: AbstractStreamWriter, content_length: int | None) -> None:
        """Write the body, at most `content_length` bytes of it, each chunk within the write timeout."""
        self._started = True
        remaining = content_length
        async for chunk in self._chunks():
            if remaining is not None:
                # Never more than the declared length: extra bytes would be read as the
                # next request on this connection.
                chunk, remaining = chunk[:remaining], max(0, remaining - len(chunk))
            try:
                async with asyncio.timeout(self._write_timeout):
                    await writer.write(chunk)
            except TimeoutError:
                raise WriteTimedOut("Timed out writing the request body.") from None
        self.sent = True

    async def _chunks(self) -> AsyncIterator[bytes]:
        while True:
            try:
                chunk = await anext(self._source)
            except StopAsyncIteration:
                return
            except Exception as error:
                self.failure = error  # aiohttp wraps it in a connection error; raised as it was
                raise
            yield chunk


def upload(request: httpx.Request, write_timeout: float | None) -> Upload | None:
    stream = request.stream
    if isinstance(stream, httpx.ByteStream):
        body = b"".join(stream)
        return Upload(stream, len(body), write_timeout) if body else None
    assert isinstance(stream, httpx.AsyncByteStream)  # as httpx's own transport requires
    return Upload(stream, None, write_timeout)
