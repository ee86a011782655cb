"""`ClientSettings`: one named client's configuration, validated by pydantic."""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

import httpx
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    HttpUrl,
    PlainSerializer,
    PositiveFloat,
    PositiveInt,
    TypeAdapter,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
)

from .._defaults import DEFAULT_BUDGET, DEFAULT_LIMITS, DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_TIMEOUT
from .._pipeline.policy import RetryPolicy
from .._safety.headers import header_problem
from .._safety.urls import base_url_problem
from .._strategies.breaker import CircuitBreaker
from .._strategies.budget import RetryBudget
from .._strategies.caching import HttpCache
from .._strategies.concurrency import ConcurrencyLimit
from .._strategies.rate_limit import RateLimit
from .._strategies.throttle import AdaptiveThrottle
from ..chaos import ALLOW_CHAOS_ENV, Chaos

__all__ = ["ClientSettings", "PoolLimits"]

_FORBID = ConfigDict(extra="forbid", hide_input_in_errors=True, frozen=True)
_HTTP_URL = TypeAdapter(HttpUrl)


def _http_url(value: str) -> str:
    # Validated as pydantic's HttpUrl, kept as `str` so `ClientSettings(base_url="...")`
    # type-checks in user code; then the same rules as `Client` (one validator for both).
    url = str(_HTTP_URL.validate_python(value))
    problem = base_url_problem(httpx.URL(url))
    if problem is not None:
        raise ValueError(problem)
    return url


def _safe_headers(headers: dict[str, str]) -> dict[str, str]:
    problem = header_problem(headers.items())
    if problem is not None:
        raise ValueError(problem)
    return headers


def _proxy_url(value: str) -> str:
    return str(_HTTP_URL.validate_python(value))  # a proxy URL may carry its credentials


#: What pydantic reads as a bool from a string (any case, surrounding blanks ignored).
_BOOL_WORDS = {
    **dict.fromkeys(("1", "on", "t", "true", "y", "yes"), True),
    **dict.fromkeys(("0", "off", "f", "false", "n", "no"), False),
}


def _verify(value: object) -> object:
    # From the environment every value is a string, and `bool | str` keeps a string as is:
    # VERIFY=false would be the path of a CA bundle named "false". So the words pydantic reads
    # as bools are bools here too, and any other string must name a file or directory.
    if not isinstance(value, str):
        return value
    word = value.strip().lower()
    if word in _BOOL_WORDS:
        return _BOOL_WORDS[word]
    if not os.path.exists(value):
        raise ValueError("CA bundle not found (no such file or directory)")
    return value


def _chaos_allowed(chaos: Chaos | None) -> Chaos | None:
    # Read when the settings are validated, at startup: a stray variable in production must
    # not start injecting faults into real traffic.
    if chaos is not None and os.environ.get(ALLOW_CHAOS_ENV, "").strip() != "1":
        raise ValueError(
            f"chaos would inject faults into real traffic: set {ALLOW_CHAOS_ENV}=1 in the environment to allow it "
            "(tests, game days), or remove the client's chaos settings"
        )
    return chaos


#: How the default size cap is written in a dump, and may be written in the environment.
DEFAULT_CAP_WORD = "default"


def _size_cap(value: object, handler: ValidatorFunctionWrapHandler) -> object:
    # The default cap (buffered calls only) is not the number it reads as: a number caps
    # streams too. So it dumps as "default" and validates back to itself, and a settings
    # round trip (`model_validate(model_dump())`, JSON included) leaves streams uncapped.
    if isinstance(value, type(DEFAULT_MAX_RESPONSE_BYTES)):
        return DEFAULT_MAX_RESPONSE_BYTES
    if isinstance(value, str) and value.strip().lower() == DEFAULT_CAP_WORD:
        return DEFAULT_MAX_RESPONSE_BYTES
    return handler(value)


def _dump_size_cap(value: int | None) -> int | str | None:
    return DEFAULT_CAP_WORD if isinstance(value, type(DEFAULT_MAX_RESPONSE_BYTES)) else value


HttpUrlStr = Annotated[str, AfterValidator(_http_url)]
ProxyUrlStr = Annotated[str, AfterValidator(_proxy_url)]
VerifyValue = Annotated[bool | str, BeforeValidator(_verify)]
SizeCap = Annotated[
    PositiveInt | None,
    WrapValidator(_size_cap),
    PlainSerializer(_dump_size_cap),
    WithJsonSchema(
        {"anyOf": [{"type": "integer", "exclusiveMinimum": 0}, {"const": DEFAULT_CAP_WORD}, {"type": "null"}]}
    ),
]


class PoolLimits(BaseModel):
    """
    Connection pool limits of one client (httpx's `Limits`).

    Attributes:
        max_connections: Connections open at once, in use or idle.
        max_keepalive_connections: Idle connections kept for reuse.
        keepalive_expiry: Seconds an idle connection is kept.
    """

    model_config = _FORBID

    max_connections: PositiveInt | None = DEFAULT_LIMITS.max_connections
    max_keepalive_connections: Annotated[int, Field(ge=0)] | None = DEFAULT_LIMITS.max_keepalive_connections
    keepalive_expiry: Annotated[float, Field(ge=0)] | None = DEFAULT_LIMITS.keepalive_expiry

    def to_httpx(self) -> httpx.Limits:
        """The equivalent `httpx.Limits`."""
        return httpx.Limits(
            max_connections=self.max_connections,
            max_keepalive_connections=self.max_keepalive_connections,
            keepalive_expiry=self.keepalive_expiry,
        )


class ClientSettings(BaseModel):
    """
    The configuration of one named client.

    Use it as the value type of a mapping in your pydantic-settings model, and every client is
    configurable from the environment:

    ```python
    class Settings(HttpClientsSettings):  # env_nested_delimiter="__", inputs hidden in errors
        ...

    # HTTP_CLIENTS__BILLING__BASE_URL=https://billing.internal/api/
    # HTTP_CLIENTS__BILLING__RETRY__ATTEMPTS=5
    # HTTP_CLIENTS__BILLING__HEADERS='{"Authorization": "Bearer ..."}'
    ```

    Unknown fields are errors (a typo is not silently ignored), validation errors never echo
    the input, and `headers` and `proxy` (which carry credentials) are left out of `repr`.

    Attributes:
        base_url: Every path is resolved against it (`http` or `https`, no query).
        headers: Sent with every request.
        timeout: Per-attempt timeout in seconds, for each of connect, read, write and pool.
        limits: Connection pool limits.
        http2: Allow HTTP/2 (needs the `h2` package).
        verify: Verify TLS certificates: `true`, `false` (or any word pydantic reads as a bool:
            `1`/`0`, `yes`/`no`, `on`/`off`, any case), or the path of a CA bundle file or
            directory, which must exist.
        proxy: A proxy URL for every request.
        follow_redirects: Follow redirects (off by default).
        max_response_bytes: Refuse response bodies larger than this (decoded). Unset (or
            `default`, as a dump writes it): 32 MiB for buffered calls, none for streamed
            ones; a number caps both; `null` lifts it.
        retry: The retry policy, [`RetryPolicy`][fastapi_retry_http.RetryPolicy] itself.
        backend: The connection pool: `aiohttp` or `httpx`; unset means the library's
            default (`aiohttp`).
        retry_budget: Caps retries at a share of recent requests
            ([`RetryBudget`][fastapi_retry_http.RetryBudget]); `null` for no cap.
        circuit_breaker: Stop sending while the upstream fails
            ([`CircuitBreaker`][fastapi_retry_http.CircuitBreaker]); unset for none.
        keep_cookies: Store cookies from responses and send them on later calls (off: a
            shared client never carries one caller's upstream session into another's call).
        chaos: Inject faults, statuses and latency ([`Chaos`][fastapi_retry_http.chaos.Chaos]);
            unset for none. Refused at startup unless the environment has
            `HTTP_CLIENTS_ALLOW_CHAOS=1`.
        cache: An RFC 9111 shared cache ([`HttpCache`][fastapi_retry_http.cache.HttpCache],
            the `[cache]` extra); unset for none. `HTTP_CLIENTS__RATES__CACHE__STORAGE=sqlite`.
        coalesce: Concurrent identical GET and HEAD calls share one upstream call.
        throttle: Refuse attempts locally while the upstream sheds load
            ([`AdaptiveThrottle`][fastapi_retry_http.AdaptiveThrottle]); unset for none.
        concurrency: Cap (and adapt) the attempts in flight
            ([`ConcurrencyLimit`][fastapi_retry_http.ConcurrencyLimit]); unset for none.
        rate_limit: Attempts per second, fleet-wide with a shared store, and the upstream's
            quota headers obeyed ([`RateLimit`][fastapi_retry_http.RateLimit]); unset for none.
    """

    model_config = _FORBID

    base_url: HttpUrlStr
    headers: Annotated[dict[str, str], AfterValidator(_safe_headers)] = Field(default_factory=dict, repr=False)
    timeout: PositiveFloat = DEFAULT_TIMEOUT
    limits: PoolLimits = PoolLimits()
    http2: bool = False
    verify: VerifyValue = True
    proxy: ProxyUrlStr | None = Field(default=None, repr=False)
    follow_redirects: bool = False
    # A factory, not a default: pydantic cannot write the default cap's int subclass into a
    # JSON schema (it warns), so the schema states the default as it is dumped.
    max_response_bytes: SizeCap = Field(
        default_factory=lambda: DEFAULT_MAX_RESPONSE_BYTES, json_schema_extra={"default": DEFAULT_CAP_WORD}
    )
    retry: RetryPolicy = RetryPolicy()
    backend: Literal["aiohttp", "httpx"] | None = None
    retry_budget: RetryBudget | None = DEFAULT_BUDGET
    circuit_breaker: CircuitBreaker | None = None
    keep_cookies: bool = False
    chaos: Annotated[Chaos | None, AfterValidator(_chaos_allowed)] = None
    cache: HttpCache | None = None
    coalesce: bool = False
    throttle: AdaptiveThrottle | None = None
    concurrency: ConcurrencyLimit | None = None
    rate_limit: RateLimit | None = None

    def client_kwargs(self) -> dict[str, Any]:
        """
        The keyword arguments of `Client` these settings stand for: every field, by its name
        (a new option is a field here and a keyword of `Client`, nothing more).
        """
        kwargs = {name: getattr(self, name) for name in type(self).model_fields}
        kwargs["limits"] = self.limits.to_httpx()
        return kwargs
