"""
The request body on the aiohttp backend: written with httpx's write timeout, which aiohttp
lacks, and with a record of how far it got (which tells the phase of a failure).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import AsyncIterablePayload

__all__ = ["Upload", "WriteTimedOut", "upload"]


class WriteTimedOut(TimeoutError):
    """One chunk of the body was not taken by the socket within the write timeout."""


class Upload(AsyncIterablePayload):
    """
    The request body, written with httpx's write timeout and a record of how far it got.

    httpx bounds each chunk handed to the socket by the write timeout; aiohttp has no
    write timeout at all, so a server that stops reading would stall the upload until the
    retry deadline. `sent` tells "being written" from "waiting for the response" for errors.
    """

    def __init__(self, stream: httpx.AsyncByteStream, size: int | None, timeout: float | None) -> None:
        super().__init__(stream)
        self._size = size
        self._timeout = timeout
        self.sent = False
        self.failure: Exception | None = None

    async def write_with_length(self, writer: AbstractStreamWriter, content_length: int | None) -> None:
        self._consumed = True  # a stream is read once; aiohttp must not replay it
        remaining = content_length
        async for chunk in self._chunks():
            if remaining is not None:
                # Never more than the declared length: extra bytes would be read as the
                # next request on this connection.
                chunk, remaining = chunk[:remaining], max(0, remaining - len(chunk))
            try:
                async with asyncio.timeout(self._timeout):
                    await writer.write(chunk)
            except TimeoutError:
                raise WriteTimedOut("Timed out writing the request body.") from None
        self.sent = True

    async def _chunks(self) -> AsyncIterator[bytes]:
        assert self._iter is not None
        while True:
            try:
                chunk = await anext(self._iter)
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
