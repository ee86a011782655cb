"""
The errors fastapi-retry-http raises itself.

Transport failures are never wrapped: when retries are spent, the caller gets the original
`httpx` exception (or the last response), exactly as plain httpx would raise or return it.
The library's own errors each subclass the closest built-in, so existing `except` clauses
keep working:

```
Exception
├── LookupError
│   └── KeyError
│       └── UnknownClientError    a client name that is not configured
├── ValueError
│   ├── ConfigurationError        bad client configuration, naming the client and field
│   └── UnsafePathError           a path that would leave the client's base URL
├── RuntimeError
│   ├── ClientClosedError         a request on a closed client
│   └── LifespanNotRunError       a client asked for while no lifespan ran
└── httpx.RequestError
    ├── UnsafeRedirectError       a redirect from https to http, refused
    └── httpx.TransportError
        ├── DeadlineExceeded      (httpx.TimeoutException) the policy's overall deadline passed
        ├── AttemptTimeout        (httpx.ReadTimeout) one attempt took longer than attempt_timeout
        ├── CircuitOpenError      the client's circuit breaker is open: nothing was sent
        ├── ThrottledError        the client's throttle or concurrency limit refused: nothing was sent
        ├── RateLimitedError      no slot of the client's rate limit in time: nothing was sent
        ├── ResponseTooLargeError the response body is over max_response_bytes
        ├── InjectedFault         (httpx.ConnectError) a fault injected by chaos: nothing was sent
        └── httpx.RemoteProtocolError
            └── StreamRefused     an HTTP/2 server refused the stream unprocessed: resent
```
"""

from __future__ import annotations

import httpx

__all__ = [
    "AttemptTimeout",
    "CircuitOpenError",
    "ClientClosedError",
    "ConfigurationError",
    "DeadlineExceeded",
    "InjectedFault",
    "LifespanNotRunError",
    "RateLimitedError",
    "ResponseTooLargeError",
    "StreamRefused",
    "ThrottledError",
    "UnknownClientError",
    "UnsafePathError",
    "UnsafeRedirectError",
]


class UnknownClientError(KeyError):
    """
    A client name that the registry does not hold.

    The message lists the configured names, so a typo is easy to spot. It is a `KeyError`,
    so the registry behaves as a mapping (`registry.get(name)` returns `None`).
    """

    def __str__(self) -> str:
        # KeyError's own str() would wrap the message in quotes.
        return str(self.args[0]) if self.args else ""


class ConfigurationError(ValueError):
    """
    A client's configuration is invalid.

    The message names the client and the field, never the value (values may be secrets).
    """


class UnsafePathError(ValueError):
    """
    A request path that would leave the client's base URL.

    Raised before any I/O for absolute URLs, `//host` paths, backslashes, control characters
    and `..` segments that climb out of the base path.
    """


class ClientClosedError(RuntimeError):
    """A request was made on a client that has been closed."""


class LifespanNotRunError(RuntimeError):
    """
    A client was asked for, but the app's clients lifespan has not run.

    Usually a `TestClient` used without `with`, or an ASGI transport without a lifespan
    manager.
    """


class DeadlineExceeded(httpx.TimeoutException):
    """
    The retry policy's overall deadline passed while an attempt was in flight.

    It is an `httpx.TimeoutException`, so code that already handles httpx timeouts handles
    it too. httpx's own timeouts are per operation: a server that drips one byte a second
    never trips them, this does.
    """


class ResponseTooLargeError(httpx.TransportError):
    """
    The response body is larger than the client's `max_response_bytes`.

    The limit is checked on decoded bytes while reading, so a compressed body cannot expand
    past it in memory.
    """


class UnsafeRedirectError(httpx.RequestError):
    """
    A redirect that would downgrade from `https` to `http`, refused before it is followed.

    Only raised with `follow_redirects=True`: the request and its credentials would cross
    the network in clear text.
    """


class AttemptTimeout(httpx.ReadTimeout):
    """
    One attempt took longer than the policy's `attempt_timeout` and was cancelled.

    A `ReadTimeout`, so it is retried where a read timeout would be (idempotent requests),
    and code that handles httpx timeouts handles it too.
    """


class CircuitOpenError(httpx.TransportError):
    """
    The client's circuit breaker is open: the upstream failed too often, and nothing was sent.

    Raised at once, without I/O, and never retried. A call that was already retrying when the
    breaker opened returns its last response or raises its last error instead.

    Attributes:
        client: The client's name.
        retry_after: Seconds until the breaker lets a probe through.
    """

    def __init__(self, message: str, *, client: str, retry_after: float) -> None:
        super().__init__(message)
        self.client = client
        self.retry_after = retry_after


class InjectedFault(httpx.ConnectError):
    """
    A fault injected by chaos ([`Chaos`][fastapi_retry_http.chaos.Chaos]): nothing was sent.

    An `httpx.ConnectError`, so the retry rules, the breaker and your own `except` clauses
    treat it as a connection that failed: it is retried whatever the method.

    Attributes:
        client: The client's name.
        retry_after: Always `0.0` (no hint of when to try again).
    """

    def __init__(self, message: str, *, request: httpx.Request | None = None, client: str) -> None:
        super().__init__(message, request=request)
        self.client = client
        self.retry_after = 0.0


class ThrottledError(httpx.TransportError):
    """
    The client refused the call itself, to give an overloaded upstream room: nothing was sent.

    Raised for a first attempt refused by the client's adaptive throttle (`reason` is
    `"throttle"`) or its concurrency limit (`"concurrency"`: the limit stayed full for
    `max_wait`). Never retried; a call already retrying returns its last outcome instead.

    Attributes:
        client: The client's name.
        retry_after: Seconds after which another call may be let through (`0.0`: unknown;
            a throttled call's chance is random, the next one may go at once).
        reason: `"throttle"` or `"concurrency"`.
    """

    def __init__(self, message: str, *, client: str, retry_after: float = 0.0, reason: str) -> None:
        super().__init__(message)
        self.client = client
        self.retry_after = retry_after
        self.reason = reason


class StreamRefused(httpx.RemoteProtocolError):
    """
    An HTTP/2 server did not process the request (RFC 9113, section 8.7): it reset the stream
    with `REFUSED_STREAM`, or announced a GOAWAY whose last-stream-id is below the stream.

    Raised by the httpx backend with `http2=True`, told apart from other resets by the error
    code and stream ids h2 reports, never by the message. Since nothing was processed, the
    request is retried whatever its method (a `POST` too), within the policy's `attempts`, on
    a new stream or connection. Any other reset is a plain `httpx.RemoteProtocolError`, never
    retried for a request that may not be resent.

    Attributes:
        error_code: The HTTP/2 error code (7, `REFUSED_STREAM`, for a refused stream; the
            GOAWAY's own code otherwise).
        stream_id: The stream the request was sent on, when known.
        last_stream_id: The GOAWAY's last-stream-id, or `None` for a reset stream.
        client: Empty: raised below the client, by its connection pool.
        retry_after: `0.0`: the server said nothing of when to come back.
    """

    def __init__(
        self, message: str, *, error_code: int, stream_id: int | None, last_stream_id: int | None = None
    ) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.stream_id = stream_id
        self.last_stream_id = last_stream_id
        self.client = ""
        self.retry_after = 0.0


class RateLimitedError(httpx.TransportError):
    """
    The client's rate limit has no slot for this call within its `max_wait` (or before its
    deadline), or the upstream asked the client to pause for longer: nothing was sent.

    Raised at once, never after waiting in vain. A retry refused this way is not sent: the
    call returns its last response or raises its last error instead.

    Attributes:
        client: The client's name.
        retry_after: Seconds until the earliest slot (`0.0` when unknown).
    """

    def __init__(self, message: str, *, client: str, retry_after: float) -> None:
        super().__init__(message)
        self.client = client
        self.retry_after = retry_after
