"""`Client`: a named httpx client whose every request goes through `RetryTransport`."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Self, cast

import httpx

from ._arguments import checked_arguments
from ._backends import BackendName, default_transport
from ._defaults import DEFAULT_BUDGET, DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_TIMEOUT
from ._lean import LeanPath
from ._methods import HttpMethods
from ._pipeline.events import Instrument
from ._pipeline.policy import RetryPolicy
from ._pipeline.transport import RetryTransport
from ._safety.redact import install_httpx_log_redactor
from ._service_httpx import service_httpx_client
from ._stores.memory import StateStore
from ._strategies import OPTIONS, StrategyOptions
from ._strategies.breaker import CircuitBreaker, CircuitStatus
from ._strategies.budget import RetryBudget
from ._strategies.caching import HttpCache
from ._strategies.overload import AdaptiveThrottle, ConcurrencyLimit, OverloadStatus, overload_status
from ._strategies.rate_limit import RateLimit
from ._types import (
    ClientConfig,
    EventHooks,
)
from .chaos import Chaos
from .exceptions import ConfigurationError

__all__ = ["Client"]

logger = logging.getLogger("fastapi_retry_http")

#: Whether clients that need nothing of `httpx.AsyncClient.send` skip it (see `_lean.py`).
#: Read once per client, at construction; tests turn it off to run the same cases on both paths.
LEAN_PATH = True


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
        chaos: Faults, statuses and latency to inject ([`Chaos`][fastapi_retry_http.chaos.Chaos]); off by default.
        cache: An RFC 9111 shared cache ([`HttpCache`][fastapi_retry_http.cache.HttpCache]); off by default.
        coalesce: Concurrent identical GET and HEAD calls share one upstream call; off by default.
        store: Where the budget, the breaker, the throttle and the rate limit keep their state (the
            client's own by default; a `RedisStore` shares it with the fleet).
        throttle: Refuse attempts while the upstream sheds load: an `AdaptiveThrottle`.
        concurrency: Cap and adapt the attempts in flight: a `ConcurrencyLimit`.
        rate_limit: A slot for every attempt ([`RateLimit`][fastapi_retry_http.RateLimit]); off by default.
        instrumentation: Objects with `on_attempt(event)`, told about every attempt
            ([`AttemptEvent`][fastapi_retry_http.AttemptEvent]).
        keep_cookies: Store cookies from responses (`Set-Cookie`) and send them on later calls.
            Off by default: a client shared by a service's callers must not carry one end
            user's upstream session into another's call. Cookies put on `.httpx.cookies` are
            sent either way.
    """

    # long: a line per keyword; the body is the wiring of what they configure.
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
        keep_cookies: bool = False,
        chaos: Chaos | None = None,
        cache: HttpCache | None = None,
        coalesce: bool = False,
        throttle: AdaptiveThrottle | None = None,
        concurrency: ConcurrencyLimit | None = None,
    ) -> None:
        # The strategies' options, by name (declared once, in `_strategies.OPTIONS`), passed on as they are.
        options = cast(StrategyOptions, {key: value for key, value in locals().items() if key in OPTIONS})
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
            store=store,
            instrumentation=instrumentation,
            **options,
        )
        self.httpx = service_httpx_client(
            base_url=base,
            headers=headers,
            timeout=timeout,
            transport=self._transport,
            follow_redirects=follow_redirects,
            event_hooks=event_hooks,
            keep_cookies=keep_cookies,
        )
        self._allow_absolute_urls = allow_absolute_urls or not str(base)
        self._closed = False
        # Chosen once: event hooks and kept cookies need httpx's send loop (see `request`);
        # redirects are checked per call, as they can be turned on later.
        lean = LEAN_PATH and not keep_cookies and not any((event_hooks or {}).values())
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
    def overload(self) -> OverloadStatus:
        """The throttle's probability, the concurrency limit and the attempts in flight, now."""
        return overload_status(self._transport.strategies.by_option)

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
