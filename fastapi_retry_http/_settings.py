"""`ClientSettings`: one named client's configuration, validated by pydantic."""

from __future__ import annotations

import json
import os
import re
from typing import Annotated, Any, Literal

import httpx
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    HttpUrl,
    PositiveFloat,
    PositiveInt,
    TypeAdapter,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from ._body import DEFAULT_MAX_RESPONSE_BYTES
from ._budget import RetryBudget
from ._policy import RetryPolicy
from ._urls import base_url_problem, header_problem

__all__ = ["ClientSettings", "HttpClientsSettings", "PoolLimits"]

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


HttpUrlStr = Annotated[str, AfterValidator(_http_url)]
ProxyUrlStr = Annotated[str, AfterValidator(_proxy_url)]
VerifyValue = Annotated[bool | str, BeforeValidator(_verify)]


class PoolLimits(BaseModel):
    """
    Connection pool limits of one client (httpx's `Limits`).

    Attributes:
        max_connections: Connections open at once, in use or idle.
        max_keepalive_connections: Idle connections kept for reuse.
        keepalive_expiry: Seconds an idle connection is kept.
    """

    model_config = _FORBID

    max_connections: PositiveInt | None = 100
    max_keepalive_connections: Annotated[int, Field(ge=0)] | None = 20
    keepalive_expiry: Annotated[float, Field(ge=0)] | None = 5.0

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
        max_response_bytes: Refuse response bodies larger than this (decoded). Unset: 32 MiB
            for buffered calls, none for streamed ones; a number caps both; `null` lifts it.
        retry: The retry policy, [`RetryPolicy`][fastapi_retry_http.RetryPolicy] itself.
        backend: The connection pool: `aiohttp` or `httpx`; unset means the library's
            default (`aiohttp`).
        retry_budget: Caps retries at a share of recent requests
            ([`RetryBudget`][fastapi_retry_http.RetryBudget]); `null` for no cap.
    """

    model_config = _FORBID

    base_url: HttpUrlStr
    headers: Annotated[dict[str, str], AfterValidator(_safe_headers)] = Field(default_factory=dict, repr=False)
    timeout: PositiveFloat = 10.0
    limits: PoolLimits = PoolLimits()
    http2: bool = False
    verify: VerifyValue = True
    proxy: ProxyUrlStr | None = Field(default=None, repr=False)
    follow_redirects: bool = False
    max_response_bytes: PositiveInt | None = DEFAULT_MAX_RESPONSE_BYTES
    retry: RetryPolicy = RetryPolicy()
    backend: Literal["aiohttp", "httpx"] | None = None
    retry_budget: RetryBudget | None = RetryBudget()

    def client_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of `Client` these settings stand for."""
        return {
            "base_url": self.base_url,
            "headers": self.headers,
            "timeout": self.timeout,
            "limits": self.limits.to_httpx(),
            "http2": self.http2,
            "verify": self.verify,
            "proxy": self.proxy,
            "follow_redirects": self.follow_redirects,
            "max_response_bytes": self.max_response_bytes,
            "retry": self.retry,
            "backend": self.backend,
            "retry_budget": self.retry_budget,
        }


class HttpClientsSettings(BaseSettings):
    """
    A pydantic-settings model with `http_clients`, set up so that no secret leaks from it.

    Subclass it and add your own fields:

    ```python
    class Settings(HttpClientsSettings):
        database_url: str

    app = FastAPI(lifespan=clients_lifespan(Settings().http_clients))
    # HTTP_CLIENTS__BILLING__BASE_URL=https://billing.internal/api/
    # HTTP_CLIENTS__BILLING__HEADERS='{"Authorization": "Bearer ..."}'
    ```

    Compared with a plain `BaseSettings`: `env_nested_delimiter="__"`, so every client field
    is an environment variable; `hide_input_in_errors=True`, because a validation error is
    reported by the outermost model, and it would print everything given for a client
    (headers included) when, say, its `base_url` is missing; and a value that is not valid
    JSON (in the environment, a `.env` file or a secrets directory) fails naming the variable,
    without the value or the JSON parser's error (which holds the whole value) attached.

    Attributes:
        http_clients: Client name to its settings, for
            [`clients_lifespan`][fastapi_retry_http.clients_lifespan].
    """

    model_config = SettingsConfigDict(env_nested_delimiter="__", hide_input_in_errors=True)

    http_clients: dict[str, ClientSettings] = {}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The default sources, each but the keyword arguments behind a value-hiding wrapper."""
        return (
            init_settings,
            _ValueHidingSource(env_settings),
            _ValueHidingSource(dotenv_settings),
            _ValueHidingSource(file_secret_settings),
        )


_FIELD_IN_MESSAGE = re.compile(r'field "(\w+)"')


class _ValueHidingSource(PydanticBaseSettingsSource):
    """
    A settings source that fails without the value when a value cannot be parsed.

    pydantic-settings raises `SettingsError` from the `json.JSONDecodeError`, whose `doc` is
    the whole value: a traceback printed with its locals, or an error tracker that keeps the
    exception chain, would show the secret. And the message names the model's field
    (`http_clients`), not the variable that holds the bad value.
    """

    def __init__(self, inner: PydanticBaseSettingsSource) -> None:
        super().__init__(inner.settings_cls, inner._init_state)
        self._inner = inner
        # pydantic-settings keys each source's values by this name: keep the inner one's.
        self.__name__ = getattr(inner, "__name__", type(inner).__name__)

    def _set_current_state(self, state: dict[str, Any]) -> None:
        super()._set_current_state(state)
        self._inner._set_current_state(state)

    def _set_settings_sources_data(self, states: dict[str, dict[str, Any]]) -> None:
        super()._set_settings_sources_data(states)
        self._inner._set_settings_sources_data(states)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._inner.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        try:
            return self._inner()
        except SettingsError as error:
            message = self._describe(error)
        # Raised here, outside the `except`, so that the parser's error is not even the context.
        raise SettingsError(message)

    def _describe(self, error: SettingsError) -> str:
        source = type(self._inner).__name__
        # pydantic-settings' own message names the model's field and the source, nothing else.
        match = _FIELD_IN_MESSAGE.search(str(error))
        where = f"the value for field {match.group(1)!r}" if match else "a value"
        cause: BaseException | None = error.__cause__
        while cause is not None and not isinstance(cause, json.JSONDecodeError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            return f"{where} from {source} could not be parsed; value not shown"
        # The variables holding the bad value, by name (env_vars keys may be lowercased).
        env_vars: dict[str, str | None] = getattr(self._inner, "env_vars", {})
        upper = not getattr(self._inner, "case_sensitive", False)
        names = sorted(name.upper() if upper else name for name, value in env_vars.items() if value == cause.doc)
        # The parser's own message says where in the value, never what it holds.
        problem = f"{cause.msg}: character {cause.pos}"
        return f"{', '.join(names) or where} from {source} is not valid JSON ({problem}); value not shown"
