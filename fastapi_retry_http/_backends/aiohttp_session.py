"""
The parts of the aiohttp session under `AiohttpTransport`: its connector, its request class,
and when to tell aiohttp which headers of its own to leave out.
"""

from __future__ import annotations

import asyncio
import functools
import math
from typing import Any, Final

import aiohttp
import httpx
from aiohttp.client_proto import ResponseHandler
from multidict import CIMultiDict
from yarl import URL

from .._pipeline.deadlines import Expiries
from .._pipeline.httpx_parts import header_list
from .aiohttp_upload import Upload

__all__ = ["SKIP_AUTO_HEADERS", "Connector", "Request", "RequestParts", "keepalive", "seconds"]

# aiohttp adds these unless told not to; httpx already set the ones it wants.
SKIP_AUTO_HEADERS: Final = frozenset({"Accept", "Accept-Encoding", "User-Agent", "Content-Type"})
#: The methods aiohttp gives a `Content-Type` even without a body.
_POST_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})
#: The schemes a request may have (httpcore's: aiohttp's session would also send `ws` as HTTP).
_SCHEMES: Final = frozenset({"http", "https"})


class Connector(aiohttp.TCPConnector):
    """
    aiohttp's connector, keeping at most `max_idle` idle connections, as httpcore does, its
    connections' read timeouts behind one event-loop timer (see `_Reading`).
    """

    def __init__(self, *, max_idle: int | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # No cap to keep when the pool cannot hold more connections than it may keep idle.
        limit = kwargs.get("limit") or 0
        self._max_idle = None if max_idle is not None and 0 < limit <= max_idle else max_idle
        # aiohttp makes each connection's protocol with `_factory`; no public knob for its class.
        self._factory = functools.partial(_Reading, loop=self._loop, reads=Expiries(_read_timed_out))  # type: ignore[assignment]

    def _release(self, key: Any, protocol: Any, *, should_close: bool = False) -> None:
        # aiohttp has no public knob for this: its pool keeps every released connection
        # (up to `limit`) until the keep-alive timeout. `_release` is where a connection goes
        # back to the pool; one that would exceed the cap is closed instead.
        if self._max_idle is not None and sum(map(len, self._conns.values())) >= self._max_idle:
            should_close = True
        super()._release(key, protocol, should_close=should_close)


class _Reading(ResponseHandler):
    """
    aiohttp's connection protocol, its read timeout (`sock_read`, httpx's `read`) kept in the
    connector's `Expiries`: aiohttp re-arms a loop timer of its own on every chunk received (a
    new `TimerHandle` pushed on the loop's heap, the last one cancelled), which cost 34,000
    instructions a call, a tenth of the client's (callgrind, bench/instructions.py). Here a
    chunk moves the connection's deadline in a dict; when one passes, aiohttp's own handler
    raises its own error, as before.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, reads: Expiries[ResponseHandler]) -> None:
        super().__init__(loop)
        self._reads = reads

    def _reschedule_timeout(self) -> None:
        timeout = self._read_timeout
        if timeout:
            self._reads.set(self, timeout, self._loop)
        else:
            self._reads.discard(self, None)

    def _drop_timeout(self) -> None:
        self._reads.discard(self, None)


def _read_timed_out(protocol: ResponseHandler) -> None:
    protocol._on_read_timeout()


class Request(aiohttp.ClientRequest):
    """aiohttp's request, minus the framing headers httpx did not ask for."""

    def update_body_from_data(self, body: Any, *args: Any, **kwargs: Any) -> None:
        # With no body aiohttp adds `Content-Length: 0` for DELETE and other methods that are
        # not GET-like; httpx sets it itself where it wants it (POST, PUT, PATCH), and only there.
        # (*args: the signature changed between aiohttp 3.11 and 3.12.)
        if body is not None:
            super().update_body_from_data(body, *args, **kwargs)


def seconds(value: float | None) -> float | None:
    """httpx's seconds as aiohttp's: `None` for no limit."""
    # httpx spells "no limit" None; inf would overflow aiohttp's and asyncio's timers.
    return None if value is None or value == math.inf else value


def keepalive(value: float | None) -> float:
    """httpx's keep-alive expiry as aiohttp's keep-alive timeout."""
    # httpx spells "idle connections never expire" None; aiohttp 3.14.0 compares with
    # its keep-alive timeout, so None fails there: a day stands for "never".
    limit = seconds(value)
    return 24 * 3600.0 if limit is None else limit


class RequestParts:
    """An `httpx.Request`'s headers and URL as aiohttp takes them, the last of each kept."""

    __slots__ = ("_complete", "_last_headers", "_last_raw", "_last_url", "_last_yarl")

    def __init__(self) -> None:
        self._last_raw: list[tuple[bytes, bytes, bytes]] = []
        self._last_headers: CIMultiDict[str] = CIMultiDict()
        self._last_url: httpx.URL | None = None
        self._last_yarl = URL()
        self._complete = False

    def headers(self, headers: httpx.Headers) -> CIMultiDict[str]:
        """
        The request's headers as aiohttp takes them, the last ones kept: most calls send the
        headers the call before sent (aiohttp copies them, never changes them).
        """
        listed = header_list(headers)
        if listed != self._last_raw:
            # Not the caller's Transfer-Encoding: aiohttp chunks a body of unknown length
            # itself and refuses the header alongside its own. A multidict, which aiohttp
            # takes as it is (a list it copies into one).
            self._last_headers = CIMultiDict(
                [(k.decode("latin-1"), v.decode("latin-1")) for k, lower, v in listed if lower != b"transfer-encoding"]
            )
            self._last_raw = list(listed)  # a copy: httpx changes its list in place
            found = self._last_headers
            self._complete = "Accept" in found and "Accept-Encoding" in found and "User-Agent" in found
        return self._last_headers

    def adds_headers(self, method: str, payload: Upload | None) -> bool:
        """
        Whether aiohttp would add a header of its own to the last headers: `Accept`,
        `Accept-Encoding` or `User-Agent` when missing (httpx's client sets all three),
        `Content-Type` when missing from a body or from a POST, PUT or PATCH. Only then is it
        told which to skip: telling it costs a merge of header sets per request.
        """
        return not (
            self._complete
            and ("Content-Type" in self._last_headers or (payload is None and method not in _POST_METHODS))
        )

    def url(self, url: httpx.URL) -> URL:
        """
        httpx's URL as yarl's, the last one kept (a client calls the same paths over and over),
        checked as aiohttp's session would check it, without its user information: httpx
        sent that as an `Authorization` header already, and httpcore leaves it out too.
        """
        if url is not self._last_url:  # the lean path hands the same URL object for a path
            converted = URL(str(url), encoded=True)
            if converted.scheme not in _SCHEMES or not converted.raw_host:  # as httpcore: unsupported
                raise aiohttp.NonHttpUrlClientError(converted)
            if converted.raw_user is not None or converted.raw_password is not None:
                converted = converted.with_user(None)
            self._last_yarl, self._last_url = converted, url
        return self._last_yarl
