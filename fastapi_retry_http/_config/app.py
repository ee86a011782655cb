"""
`HttpClientsSettings`: the app-level settings model, set up so that no secret leaks from it.
"""

# No `from __future__ import annotations` here: pydantic 2.11.0 resolves the string
# annotations of this model's fields in the namespace of a *subclass's* module, where
# `SecretStr` may not be imported (the floor versions' suite caught it).
import json
import re
from typing import Annotated, Any

from pydantic import AfterValidator, Field, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from .._stores.fleet import DEFAULT_PREFIX
from .._stores.memory import MemoryStore, StateStore
from .client import ClientSettings
from .redis_url import redis_url_problem

__all__ = ["HttpClientsSettings"]


def _redis_url(value: SecretStr) -> SecretStr:
    # At startup, not at the first flush: a malformed URL would only ever log "Redis down".
    problem = redis_url_problem(value.get_secret_value())
    if problem is not None:
        raise ValueError(f"not a usable Redis URL: {problem}")
    return value


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
        http_clients_redis_url: A Redis URL (`HTTP_CLIENTS_REDIS_URL`): when set, every
            client shares its retry budget and circuit breaker with the same-named clients of
            every process using that Redis (see `http_clients_store()`). A secret: never shown.
        http_clients_redis_prefix: The start of every Redis key (`HTTP_CLIENTS_REDIS_PREFIX`,
            default `fastapi_retry_http`): give each app its own, so that two apps on one Redis
            with a client of the same name never share its breaker or budget. No spaces or
            braces (a brace would break the keys' Redis Cluster hash tag).
    """

    model_config = SettingsConfigDict(env_nested_delimiter="__", hide_input_in_errors=True)

    http_clients: dict[str, ClientSettings] = {}
    http_clients_redis_url: Annotated[SecretStr, AfterValidator(_redis_url)] | None = None
    http_clients_redis_prefix: str = Field(default=DEFAULT_PREFIX, min_length=1, max_length=200, pattern=r"^[^{}\s]+$")

    def http_clients_store(self) -> StateStore:
        """
        The store the settings ask for, for `clients_lifespan(..., store=...)`.

        ```python
        app = FastAPI(lifespan=clients_lifespan(settings.http_clients, store=settings.http_clients_store()))
        ```

        A `fastapi_retry_http.redis.RedisStore` when `http_clients_redis_url` is set (needs the
        `redis` extra; its keys start with `http_clients_redis_prefix`), else a `MemoryStore`
        (every process on its own).
        """
        if self.http_clients_redis_url is None:
            return MemoryStore()
        from ..redis import RedisStore

        return RedisStore(self.http_clients_redis_url.get_secret_value(), prefix=self.http_clients_redis_prefix)

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
        super().__init__(inner.settings_cls)
        # pydantic-settings 2.10+ keeps per-build state on each source: share the inner one's.
        if hasattr(inner, "_init_state"):
            self._init_state = inner._init_state
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
