"""
HTTP/2 refusals: a request the server did not process, told apart from every other reset.

RFC 9113 (section 8.7) says a stream reset with `REFUSED_STREAM`, or a stream above the
last-stream-id of a GOAWAY, was not processed: it may be sent again whatever its method.
httpcore turns every reset and every GOAWAY into one `RemoteProtocolError`, but keeps h2's
event (with its error code and last-stream-id) as the error's argument; the stream an attempt
was sent on comes from httpcore's documented `trace` extension. This module reads both and
raises [`StreamRefused`][fastapi_retry_http.exceptions.StreamRefused] for those requests, which
the retry policy resends whatever the method. httpcore already resends on its own a request
it finds above a GOAWAY's (non-zero) last-stream-id before reading its response; what reaches
this module is a refusal, a GOAWAY with last-stream-id 0, or a GOAWAY seen while sending.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import h2.errors
import h2.events
import httpcore
import httpx

from ..exceptions import StreamRefused

__all__ = ["h2_event", "refusal", "send_noting_refusals"]

Trace = Callable[[str, dict[str, Any]], Awaitable[None]]

#: httpcore's trace event announcing the stream a request's headers go out on.
_HEADERS_SENT = "http2.send_request_headers.started"


def h2_event(error: BaseException) -> h2.events.Event | None:
    """
    The h2 event behind an httpx `RemoteProtocolError` on HTTP/2, if there is one.

    The one place that relies on how httpcore raises (1.0: `RemoteProtocolError(event)` for a
    `StreamReset` or a `ConnectionTerminated`, mapped by httpx to its own error `from` it);
    `tests/test_h2_refusals.py` pins it against a real h2 server, and fails loudly if it changes.
    """
    cause = error.__cause__
    if isinstance(cause, httpcore.RemoteProtocolError) and cause.args:
        event = cause.args[0]
        if isinstance(event, h2.events.StreamReset | h2.events.ConnectionTerminated):
            return event
    return None


def refusal(error: httpx.RemoteProtocolError, stream_id: int | None) -> StreamRefused | None:
    """`StreamRefused` when `error` says the server did not process stream `stream_id`, else `None`."""
    event = h2_event(error)
    if isinstance(event, h2.events.StreamReset) and event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM:
        return StreamRefused(
            "The HTTP/2 server refused the stream (REFUSED_STREAM): the request was not processed.",
            error_code=int(event.error_code),
            stream_id=stream_id,
        )
    if isinstance(event, h2.events.ConnectionTerminated):
        last = event.last_stream_id
        if stream_id is not None and last is not None and stream_id > last:
            return StreamRefused(
                f"The HTTP/2 server went away (GOAWAY, last stream {last}) before stream {stream_id}:"
                " the request was not processed.",
                error_code=int(event.error_code or 0),
                stream_id=stream_id,
                last_stream_id=last,
            )
    return None


async def send_noting_refusals(inner: httpx.AsyncBaseTransport, request: httpx.Request) -> httpx.Response:
    """Send `request` on `inner`, raising `StreamRefused` for a request the server did not process."""
    stream: list[int] = []
    theirs: Trace | None = request.extensions.get("trace")

    async def trace(name: str, info: dict[str, Any]) -> None:
        if name == _HEADERS_SENT:
            stream.append(info["stream_id"])  # the last one counts: httpcore may resend elsewhere
        if theirs is not None:
            await theirs(name, info)

    # A copy per attempt: hedged attempts of one request run at once, each on its own stream.
    attempt = httpx.Request(
        request.method,
        request.url,
        headers=request.headers,
        stream=request.stream,
        extensions={**request.extensions, "trace": trace},
    )
    try:
        return await inner.handle_async_request(attempt)
    except httpx.RemoteProtocolError as error:
        refused = refusal(error, stream[-1] if stream else None)
        if refused is None:
            raise
        raise refused from error
