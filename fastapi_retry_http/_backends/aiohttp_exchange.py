"""
One request sent over aiohttp's connector, up to its response's head: the steps of
`ClientSession._request` this transport's session needs, in aiohttp's order, and none of the rest.

Why: `ClientSession._request` serves every feature of aiohttp's client (cookies, auth from the
URL or netrc, redirects, traces, middlewares, proxies from the environment, a total timeout, a
hidden re-send of idempotent requests). The session under `AiohttpTransport` has them all off:
the cookie jar is a dummy, redirects and auth are httpx's, re-sending is the retry policy's.
Going through it anyway cost 57,000 CPU instructions a call, a sixth of what a whole call to
raw aiohttp costs (callgrind, `bench/instructions.py`). What is left here is aiohttp's own
sequence, step for step: make the request, connect through the connector (a connect timeout
raised as aiohttp raises it), set the connection's response parameters from the session's,
send, read the head, and close what was opened when a step fails.

Every private name used here is pinned in `tests/test_reaches.py`.
"""

from __future__ import annotations

from typing import Any, Final

import aiohttp
from aiohttp.helpers import EMPTY_BODY_METHODS, TimerNoop
from multidict import CIMultiDict
from yarl import URL

from .aiohttp_upload import Upload

__all__ = ["Exchange"]

#: The session has no total timeout: aiohttp then times nothing with the request's timer.
_NO_TIMER: Final = TimerNoop()


class Exchange:
    """Sends requests through `session`'s connector, as `session.request` would with its features off."""

    __slots__ = ("_connector", "_params", "_proxy", "_proxy_url", "_session")

    def __init__(self, session: aiohttp.ClientSession, proxy: str | None) -> None:
        connector = session.connector
        assert connector is not None
        self._session = session
        self._connector = connector
        self._proxy = proxy
        self._proxy_url: URL | None = None
        # What `_request` hands every connection, from the session's settings.
        self._params: dict[str, Any] = {
            "timer": _NO_TIMER,
            "read_until_eof": True,
            "auto_decompress": session.auto_decompress,
            "read_bufsize": session._read_bufsize,
            "timeout_ceil_threshold": connector._timeout_ceil_threshold,
            "max_line_size": session._max_line_size,
            "max_field_size": session._max_field_size,
            "max_headers": session._max_headers,
        }

    async def __call__(
        self,
        method: str,
        url: URL,
        headers: CIMultiDict[str],
        skip_auto_headers: frozenset[str] | None,
        data: Upload | None,
        timeout: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        """Send the request; return its response once its head is read (the body is left to read)."""
        session = self._session  # its closing is the transport's to tell (ClientClosedError)
        proxy = self._proxy_url if self._proxy is None or self._proxy_url is not None else self._parse_proxy()
        request = session._request_class(
            method,
            url,
            headers=headers,
            skip_auto_headers=skip_auto_headers,
            data=data,
            loop=session._loop,
            response_class=session._response_class,
            proxy=proxy,
            # A new one per request: the connector adds the proxy's own headers to it.
            proxy_headers=None if proxy is None else CIMultiDict(),
            timer=_NO_TIMER,
            session=session,
        )
        try:
            return await self._send(request, timeout)
        finally:
            if request._body is not None:  # sent or not, as `_request` closes it
                await request._body.close()

    async def _send(self, request: aiohttp.ClientRequest, timeout: aiohttp.ClientTimeout) -> aiohttp.ClientResponse:
        try:
            try:
                connection = await self._connector.connect(request, traces=[], timeout=timeout)
            except TimeoutError as error:
                raise aiohttp.ConnectionTimeoutError("Timed out connecting.") from error  # no URL: it may hold a secret
            protocol = connection.protocol
            assert protocol is not None
            protocol.set_response_params(
                skip_payload=request.method in EMPTY_BODY_METHODS, read_timeout=timeout.sock_read, **self._params
            )
            try:
                response = await request.send(connection)
                try:
                    await response.start(connection)
                except BaseException:
                    response.close()
                    raise
            except BaseException:
                connection.close()
                raise
        except aiohttp.ClientError:
            raise
        except OSError as error:  # as `_request` words an OS error: aiohttp's own type
            if error.errno is None and isinstance(error, TimeoutError):
                raise
            raise aiohttp.ClientOSError(*error.args) from error
        return response

    def _parse_proxy(self) -> URL:
        assert self._proxy is not None
        try:
            self._proxy_url = URL(self._proxy)
        except ValueError as error:
            raise aiohttp.InvalidURL(self._proxy) from error
        return self._proxy_url
