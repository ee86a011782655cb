"""`Client`: a named httpx client whose every request goes through `RetryTransport`."""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Protocol, Self, Unpack

import httpx

from ._arguments import checked_arguments, checked_timeout
from ._backends import BackendName, default_transport
from ._defaults import DEFAULT_BUDGET, DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_TIMEOUT, MAX_REDIRECTS
from ._lean import LeanPath
from ._methods import HttpMethods
from ._pipeline.events import Instrument
from ._pipeline.policy import RetryPolicy
from ._pipeline.send import STREAM_EXTENSION
from ._pipeline.transport import POLICY_EXTENSION, RetryTransport
from ._safety.headers import header_problem
from ._safety.redact import install_httpx_log_redactor
from ._safety.redirects import guard_redirect, remember_origin
from ._safety.size_cap import ACCEPT_ENCODING
from ._safety.urls import check_path
from ._stores.memory import StateStore
from ._strategies.breaker import CircuitBreaker, CircuitStatus
from ._strategies.budget import RetryBudget
from ._strategies.rate_limit import RateLimit
from ._types import (
    USE_CLIENT_DEFAULT,
    BodyOptions,
    QueryParams,
    RequestContent,
    RequestData,
    RequestFiles,
    TimeoutValue,
    UseClientDefault,
)
from .exceptions import ClientClosedError, ConfigurationError

__all__ = ["Client"]

logger = logging.getLogger("fastapi_retry_http")

#: Whether clients that need nothing of `httpx.AsyncClient.send` skip it (see `_lean.py`).
#: Read once per client, at construction; tests turn it off to run the same cases on both paths.
LEAN_PATH = True


class ClientConfig(Protocol):
    """What `Client.from_settings` needs of a settings object (`ClientSettings` is one)."""

    def client_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of `Client` the settings stand for."""


EventHooks = Mapping[str, list[Callable[..., Any]]]


class Client(HttpMethods):
    """
    An async HTTP client for one upstream, retrying every request by its `RetryPolicy`.

    Build it once (the lifespan does that for configured clients), share it, close it on
    shutdown. Paths are relative to `base_url`; a path that would leave it is refused with
    [`UnsafePathError`][fastapi_retry_http.exceptions.UnsafePathError] before any I/O.

    Without redirects, event hooks, auth, cookies or default query parameters (the defaults),
    calls skip `httpx.AsyncClient.send` for a leaner path with the same results; a `Set-Cookie`
    from upstream is then not kept for later calls (cookies set on `.httpx.cookies` are sent).

    ```python
    async with Client("https://billing.internal/api/", name="billing") as billing:
        response = await billing.get("invoices/42")
    ```

    Args:
        base_url: Every path is resolved against it.
        name: Written in retry log records and errors; defaults to the base URL's host.
        headers: Sent with every request (credentials belong here, never in a path).
        timeout: Per-attempt timeout: seconds for every phase, or an `httpx.Timeout`; each
            phase is a positive number of seconds, or `None` (or `math.inf`) for none.
        limits: Connection pool limits (`httpx.Limits`).
        retry: The retry policy; `RetryPolicy()` if omitted.
        transport: The inner transport that retries wrap; httpx's own if omitted. Pass an
            `httpx.MockTransport` in tests: retries stay in play.
        follow_redirects: Follow redirects (off by default).
        event_hooks: As in httpx: `{"request": [...], "response": [...]}`, called once per
            request, not per attempt.
        verify: Verify TLS certificates: `True`, `False`, a CA bundle path, or an
            `ssl.SSLContext`.
        http2: Allow HTTP/2 (needs the `h2` package).
        proxy: A proxy URL for every request.
        max_response_bytes: Refuse bodies larger than this many decoded bytes. By default
            32 MiB (`DEFAULT_MAX_RESPONSE_BYTES`) for buffered calls, and none for `stream()`;
            a number given here caps both; `None` lifts it.
        allow_absolute_urls: Accept absolute URLs in place of paths.
        backend: The connection pool under the default transport: `"aiohttp"` (the
            default: several times faster, and it survives cancellation churn) or
            `"httpx"` (httpx's own; used anyway with `http2=True`). Ignored when
            `transport` is given.
        retry_budget: Caps this client's retries at a share of its recent requests, so an
            outage upstream does not triple the load on it; `None` for no cap.
        circuit_breaker: Stop sending to an upstream that fails most attempts, for a while
            ([`CircuitBreaker`][fastapi_retry_http.CircuitBreaker]); off by default.
        rate_limit: A slot for every attempt ([`RateLimit`][fastapi_retry_http.RateLimit]); off by default.
        store: Where the budget, the breaker and the rate limit keep their state; the client's own by default.
        instrumentation: Objects with `on_attempt(event)`, told about every attempt
            ([`AttemptEvent`][fastapi_retry_http.AttemptEvent]).
    """

    def __init__(
        self,
        base_url: str | httpx.URL = "",
        *,
        name: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        limits: httpx.Limits | None = None,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        follow_redirects: bool = False,
        event_hooks: EventHooks | None = None,
        verify: bool | str | ssl.SSLContext = True,
        http2: bool = False,
        proxy: str | httpx.URL | None = None,
        max_response_bytes: int | None = DEFAULT_MAX_RESPONSE_BYTES,
        allow_absolute_urls: bool = False,
        backend: BackendName | None = None,
        retry_budget: RetryBudget | None = DEFAULT_BUDGET,
        circuit_breaker: CircuitBreaker | None = None,
        rate_limit: RateLimit | None = None,
        store: StateStore | None = None,
        instrumentation: Iterable[Instrument] = (),
    ) -> None:
        self.retry = retry if retry is not None else RetryPolicy()
        base = httpx.URL(base_url)
        self.name = name if name is not None else (base.host or "client")
        try:
            timeout = checked_arguments(base, headers, timeout, http2, proxy)
            if transport is None:
                transport = default_transport(backend=backend, verify=verify, http2=http2, limits=limits, proxy=proxy)
        except ValueError as error:  # ConfigurationError is one too
            raise ConfigurationError(f"Client {self.name!r}: {error}") from None
        if verify is False:
            logger.warning("%s: TLS certificate verification is off (verify=False).", self.name)
        install_httpx_log_redactor()
        self._transport = RetryTransport(
            transport,
            self.retry,
            name=self.name,
            max_response_bytes=max_response_bytes,
            budget=retry_budget,
            store=store,
            circuit_breaker=circuit_breaker,
            rate_limit=rate_limit,
            instrumentation=instrumentation,
        )
        # Only the codings the transport decodes with bounded memory (see _safety/size_cap.py).
        headers = {"Accept-Encoding": ACCEPT_ENCODING, **(headers or {})}
        hooks = {"request": [], "response": [], **(event_hooks or {})}
        if follow_redirects:
            # First, so that user hooks see the request as it will be sent.
            hooks["request"] = [guard_redirect, *hooks["request"]]
        self.httpx = httpx.AsyncClient(
            base_url=base,
            headers=headers,
            timeout=timeout,
            transport=self._transport,
            follow_redirects=follow_redirects,
            max_redirects=MAX_REDIRECTS,
            event_hooks=hooks,
            # Environment proxies would mount transports of their own and bypass the retries;
            # a proxy is configured explicitly with `proxy=`.
            trust_env=False,
        )
        self._allow_absolute_urls = allow_absolute_urls or not str(base)
        self._closed = False
        # Chosen once: redirects and event hooks need httpx's send loop (see `request`).
        lean = LEAN_PATH and not follow_redirects and not any(hooks.values())
        self._lean = LeanPath(self.httpx, self._transport) if lean else None

    @classmethod
    def from_settings(cls, name: str, settings: ClientConfig, **overrides: Any) -> Self:
        """
        Build the client `name` from its [`ClientSettings`][fastapi_retry_http.ClientSettings].

        `overrides` are `Client` keyword arguments that win over the settings, for example a
        test `transport`.
        """
        return cls(name=name, **{**settings.client_kwargs(), **overrides})

    @property
    def transport(self) -> RetryTransport:
        """The retrying transport every request goes through; its `inner` is the network."""
        return self._transport

    @property
    def circuit(self) -> CircuitStatus | None:
        """The circuit breaker's state now (for health checks), or `None` without a breaker."""
        breaker = self._transport.breaker
        return None if breaker is None else breaker.status()

    @property
    def base_url(self) -> httpx.URL:
        """The URL every path is resolved against."""
        return self.httpx.base_url

    @property
    def headers(self) -> httpx.Headers:
        """Headers sent with every request; changes apply to later requests."""
        return self.httpx.headers

    @property
    def is_closed(self) -> bool:
        """Whether `aclose()` has been called."""
        return self._closed

    def __repr__(self) -> str:
        # Never the headers (credentials), nor userinfo or query of the base URL.
        url = self.base_url.copy_with(userinfo=b"", query=None) if str(self.base_url) else ""
        return f"<Client {self.name!r} base_url={str(url)!r}{' closed' if self._closed else ''}>"

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: QueryParams | None = None,
        content: RequestContent | None = None,
        json: Any = None,
        data: RequestData | None = None,
        files: RequestFiles | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: TimeoutValue | UseClientDefault = USE_CLIENT_DEFAULT,
        retry: RetryPolicy | None = None,
    ) -> httpx.Response:
        """
        Send a request and return its response, body read, after any retries.

        Args:
            method: The HTTP method.
            path: Relative to `base_url`.
            params: Query parameters.
            content: A raw body (`bytes`, `str`, or an async iterator, which is never retried).
            json: A body to send as JSON.
            data: A form body.
            files: Multipart files.
            headers: Headers for this request only, merged over the client's.
            timeout: Per-attempt timeout for this request.
            retry: A policy for this request only.

        Returns:
            The final response: the first that is not retried, or the last one when retries
            are spent. Statuses are not raised; call `raise_for_status()` if you want that.

        Raises:
            httpx.HTTPError: The original httpx error when the last attempt failed.
            UnsafePathError: `path` would leave `base_url`.
            ClientClosedError: The client was closed.
        """
        self._check(path, headers)
        if self._lean is not None and self._lean.plain():
            url = self._lean.url(path)
            if url is not None:
                return await self._lean.send(method, url, params, content, json, data, files, headers, timeout, retry)
        options: BodyOptions = {"params": params, "content": content, "json": json, "data": data, "files": files}
        request = self._build(method, path, {**options, "headers": headers, "timeout": timeout, "retry": retry}, False)
        return await self.httpx.send(request)

    @asynccontextmanager
    async def stream(self, method: str, path: str, **options: Unpack[BodyOptions]) -> AsyncIterator[httpx.Response]:
        """
        Send a request and yield the response before its body is read; takes `request`'s
        keyword arguments.

        Retried until the response headers arrive; once the body is being read, a failure is
        raised to the caller (the bytes already handed out cannot be taken back).

        ```python
        async with client.stream("GET", "exports/1") as response:
            async for chunk in response.aiter_bytes():
                ...
        ```
        """
        self._check(path, options.get("headers"))
        request = self._build(method, path, options, True)
        response = await self.httpx.send(request, stream=True)
        try:
            yield response
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        """Close the connection pool. Idempotent; later requests raise `ClientClosedError`."""
        self._closed = True
        await self.httpx.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def _check(self, path: str, headers: Mapping[str, str] | None) -> None:
        if self._closed:
            raise ClientClosedError(f"Client {self.name!r} is closed; it cannot send requests any more.")
        check_path(path, allow_absolute_urls=self._allow_absolute_urls)
        if headers:
            problem = header_problem(headers.items())
            if problem is not None:
                raise httpx.LocalProtocolError(problem)  # before any I/O, and without the value

    def _build(self, method: str, path: str, options: BodyOptions, stream: bool) -> httpx.Request:
        headers = options.get("headers")
        extensions: dict[str, Any] = {STREAM_EXTENSION: True} if stream else {}
        retry = options.get("retry")
        if retry is not None:
            extensions[POLICY_EXTENSION] = retry
        timeout = options.get("timeout", USE_CLIENT_DEFAULT)
        request = self.httpx.build_request(
            method,
            path,
            params=options.get("params"),
            content=options.get("content"),
            data=options.get("data"),
            files=options.get("files"),
            json=options.get("json"),
            headers=headers,
            timeout=httpx.USE_CLIENT_DEFAULT if timeout is USE_CLIENT_DEFAULT else checked_timeout(timeout),
            extensions=extensions,
        )
        if self.httpx.follow_redirects:
            remember_origin(request, private=[*self.httpx.headers.keys(), *(headers or {}).keys()])
        return request
