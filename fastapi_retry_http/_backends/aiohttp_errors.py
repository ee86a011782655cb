"""aiohttp's errors as httpx's, by their type and the phase they happened in, never by their text."""

from __future__ import annotations

import errno

import aiohttp
import httpx

from .aiohttp_upload import WriteTimedOut

__all__ = ["httpx_error", "safe_cause"]


def safe_cause(error: Exception) -> BaseException | None:
    # A connector error's OS or TLS error is kept: it tells a TLS failure (never retried)
    # from a refused connection. aiohttp's own errors are not: several print the full URL,
    # query included, or their reprs.
    return error.os_error if isinstance(error, aiohttp.ClientConnectorError) else None


def httpx_error(error: Exception, request: httpx.Request, *, writing: bool, body: bool) -> httpx.RequestError:
    """The httpx error for an aiohttp error, by its type and the phase it happened in."""
    kind: type[httpx.RequestError]
    if isinstance(error, WriteTimedOut):
        kind, message = httpx.WriteTimeout, str(error)
    # Never sent: the connection was not made. The cause chain keeps the OS or TLS error.
    elif isinstance(error, aiohttp.ConnectionTimeoutError):
        kind, message = httpx.ConnectTimeout, "Timed out connecting to the server."
    elif isinstance(error, aiohttp.ClientConnectorError):
        where = "the proxy" if isinstance(error, aiohttp.ClientProxyConnectionError) else "the server"
        kind, message = httpx.ConnectError, f"Cannot connect to {where} {error.host}:{error.port}: {error.os_error}"
    elif isinstance(error, aiohttp.ClientHttpProxyError):
        kind, message = httpx.ProxyError, f"{error.status} {error.message}"  # as httpcore words it
    elif isinstance(error, aiohttp.InvalidURL):  # an invalid proxy URL: its text may hold credentials
        kind, message = httpx.LocalProtocolError, f"aiohttp refused the request: {type(error).__name__}"
    elif isinstance(error, aiohttp.NonHttpUrlClientError):
        kind, message = httpx.UnsupportedProtocol, "Request URL has an unsupported protocol."
    # Maybe sent: the server may have seen the request.
    elif isinstance(error, aiohttp.ServerTimeoutError):
        kind, message = httpx.ReadTimeout, "Timed out reading the response."
    elif isinstance(error, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        # Worded as httpcore words it: the retry policy recognises these texts.
        kind = httpx.RemoteProtocolError
        message = (
            "peer closed connection without sending complete message body"
            if body or isinstance(error, aiohttp.ClientPayloadError)
            else "Server disconnected without sending a response."
        )
    elif isinstance(error, aiohttp.ClientConnectionError):  # ClientOSError and the rest
        code = errno.errorcode.get(getattr(error, "errno", None) or 0, "no errno")
        kind = httpx.WriteError if writing else httpx.ReadError
        doing = "sending the request" if writing else "receiving the response"
        message = f"Connection lost while {doing} ({code})."
    else:
        # A response aiohttp could not parse: the server does not speak HTTP. Not retried.
        # Named by the parser's error type (at the root of aiohttp's chain), not its text: that
        # quotes the server's bytes, which could spell a disconnect phrase the policy retries.
        root: BaseException = error
        while root.__cause__ is not None:
            root = root.__cause__
        kind, message = httpx.RemoteProtocolError, f"Invalid HTTP response ({type(root).__name__})."
    return kind(message, request=request)
