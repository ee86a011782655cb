"""
The FastAPI side: `clients_lifespan` builds and closes the clients, `get_client` hands them to
routes.

The lifespan yields its registry in the lifespan state, and Starlette copies that state into
every request's `request.state`, mounted sub-apps included (their own lifespans never run).
So `get_client` needs no process-wide lookup, and two apps in one process stay apart.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final

from fastapi.dependencies.utils import get_dependant
from pydantic import TypeAdapter, ValidationError
from starlette.requests import HTTPConnection
from starlette.routing import Host, Mount

from .._client import Client
from .._config.client import ClientSettings
from .._pipeline.events import Instrument
from .._stores.memory import StateStore
from ..exceptions import ConfigurationError, LifespanNotRunError, UnknownClientError
from .registry import ClientRegistry, clients, normalise_name

__all__ = ["clients_lifespan", "get_client"]

#: The lifespan state key (and `app.state` attribute) that holds the registry.
STATE_KEY: Final = "fastapi_retry_http_clients"
#: Marks a `get_client` provider with the client name it provides.
_NAME_ATTRIBUTE: Final = "__fastapi_retry_http_client__"

Provider = Callable[[HTTPConnection], Awaitable[Client]]
Lifespan = Callable[[Any], AbstractAsyncContextManager[dict[str, Any]]]

_providers: dict[str, Provider] = {}
_settings_adapter: Final = TypeAdapter(ClientSettings)


def get_client(name: str) -> Callable[[HTTPConnection], Awaitable[Client]]:
    """
    The dependency that provides the client `name` to a route.

    ```python
    @app.get("/invoices/{id}")
    async def invoice(id: int, billing: Annotated[Client, Depends(get_client("billing"))]):
        return (await billing.get(f"invoices/{id}")).json()
    ```

    The same name (in any case) always gives the same provider, so tests can replace it:
    `app.dependency_overrides[get_client("billing")] = lambda: fake`. A name the app's
    lifespan does not configure makes the app's startup fail.

    Raises:
        LifespanNotRunError: (when the route runs) no clients lifespan ran for this app.
    """
    key = normalise_name(name)
    provider = _providers.get(key)
    if provider is None:

        async def provider(connection: HTTPConnection) -> Client:
            registry = _registry_of(connection)
            return registry[key]

        provider.__name__ = provider.__qualname__ = f"get_client({key!r})"
        setattr(provider, _NAME_ATTRIBUTE, key)
        _providers[key] = provider
    return provider


def _registry_of(connection: HTTPConnection) -> ClientRegistry:
    registry = getattr(connection.state, STATE_KEY, None) or getattr(connection.app.state, STATE_KEY, None)
    if registry is None:
        raise LifespanNotRunError(
            "No HTTP clients: the app's clients lifespan has not run. Pass "
            "lifespan=clients_lifespan(...) to FastAPI() (or enter it in your own lifespan), and "
            "in tests use the TestClient as a context manager: `with TestClient(app) as client:`."
        )
    assert isinstance(registry, ClientRegistry)
    return registry


def clients_lifespan(
    configs: Mapping[str, ClientSettings | Mapping[str, Any]],
    *,
    registry: ClientRegistry = clients,
    instrumentation: Iterable[Instrument] = (),
    store: StateStore | None = None,
) -> Lifespan:
    """
    A lifespan that builds the configured clients at startup and closes them at shutdown.

    ```python
    app = FastAPI(lifespan=clients_lifespan(settings.http_clients))
    ```

    or, inside the app's own lifespan (yield its state so requests can find the clients):

    ```python
    @asynccontextmanager
    async def lifespan(app):
        async with clients_lifespan(settings.http_clients)(app) as state:
            yield {**state, "db": db}
    ```

    The settings are validated here, before the app starts. At startup, a route (or nested
    dependency, included router or mounted sub-app) asking for a client that is not
    configured fails the startup, naming it; if a client cannot be built, those already
    built are closed and the startup fails naming the client.

    Args:
        configs: Client name to its settings (`ClientSettings` or a plain mapping of them).
        registry: Where the clients are kept while the app runs.
        instrumentation: Instruments given to every client (metrics, traces; see
            [`AttemptEvent`][fastapi_retry_http.AttemptEvent]).
        store: Where every client keeps its budget and breaker state, e.g. a
            `fastapi_retry_http.redis.RedisStore` shared by the fleet; started here (an
            unreachable Redis is a WARNING, never a failed startup) and closed at shutdown.
            Each client keeps its own by default.

    Raises:
        ConfigurationError: The settings of a client are invalid (naming the client and field).
    """
    settings = _validate(configs)
    instruments = tuple(instrumentation)

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        _check_names(app, settings.keys(), registry)
        built: list[str] = []
        state = getattr(app, "state", None)
        published = False
        if store is not None:
            await store.start()
        try:
            for name, config in settings.items():
                registry.add(_build(name, config, registry, instruments, store))
                built.append(name)
            if state is not None:
                setattr(state, STATE_KEY, registry)
                published = True
            yield {STATE_KEY: registry}
        finally:
            try:
                await registry.aclose(built)
            finally:
                if store is not None:
                    await store.aclose()
            # Only the start that published the registry takes it back: a second start that
            # failed must leave a running instance of the same app alone.
            if published and getattr(state, STATE_KEY, None) is registry:
                delattr(state, STATE_KEY)

    return lifespan


def _validate(configs: Mapping[str, ClientSettings | Mapping[str, Any]]) -> dict[str, ClientSettings]:
    settings: dict[str, ClientSettings] = {}
    for name, config in configs.items():
        key = normalise_name(name)
        if key in settings:
            raise ConfigurationError(f"Client {name!r} is configured twice (names ignore case).")
        try:
            settings[key] = _settings_adapter.validate_python(config)
        except ValidationError as error:
            # Locations and messages only: the inputs may be secrets.
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in error.errors())
            raise ConfigurationError(f"Client {name!r} has invalid settings: {problems}") from None
    return settings


def _build(
    name: str,
    config: ClientSettings,
    registry: ClientRegistry,
    instruments: tuple[Instrument, ...],
    store: StateStore | None,
) -> Client:
    overrides: dict[str, Any] = {"instrumentation": instruments} if instruments else {}
    if store is not None:
        overrides["store"] = store
    if name in registry.transport_overrides:
        overrides["transport"] = registry.transport_overrides[name]
    overrides.update(registry.option_overrides.get(name, {}))
    try:
        return Client.from_settings(name, config, **overrides)
    except ConfigurationError:
        raise
    except Exception as error:
        raise ConfigurationError(f"Client {name!r} could not be built: {type(error).__name__}: {error}") from error


def _check_names(app: Any, configured: Iterable[str], registry: ClientRegistry) -> None:
    wanted: dict[str, set[str]] = {}
    walker = _NameWalker(getattr(app, "dependency_overrides", {}), wanted)
    router = getattr(app, "router", None)
    walker.depends(getattr(router, "dependencies", ()), "every route")
    walker.routes(getattr(app, "routes", []), "")
    unknown = {name: where for name, where in wanted.items() if name not in set(configured)}
    if unknown:
        places = "; ".join(f"{name!r} by {', '.join(sorted(where))}" for name, where in sorted(unknown.items()))
        raise UnknownClientError(f"{registry.unknown_message(unknown, configured)} Asked for: {places}.")


class _NameWalker:
    """Finds the client names an app's routes ask for, through every layer of dependencies."""

    def __init__(self, overridden: Mapping[Any, Any], wanted: dict[str, set[str]]) -> None:
        self._overridden = overridden
        self._wanted = wanted

    def routes(self, routes: Iterable[Any], prefix: str) -> None:
        for route in routes:
            if isinstance(route, Mount | Host):
                self.routes(route.routes, prefix + getattr(route, "path", ""))
                continue
            included = getattr(route, "original_router", None)  # FastAPI's lazily included routers
            if included is not None:
                context = getattr(route, "include_context", None)
                inner_prefix = prefix + getattr(context, "prefix", "")
                self.depends(getattr(context, "dependencies", ()), f"routes under {inner_prefix or '/'}")
                self.depends(getattr(included, "dependencies", ()), f"routes under {inner_prefix or '/'}")
                self.routes(included.routes, inner_prefix)
                continue
            dependant = getattr(route, "dependant", None)
            if dependant is not None:
                methods = getattr(route, "methods", None) or ["WEBSOCKET"]
                self.dependant(dependant, f"{' '.join(sorted(methods))} {prefix}{route.path}")

    def depends(self, depends: Iterable[Any], where: str) -> None:
        for depend in depends:
            call = getattr(depend, "dependency", None)
            if call is not None:
                self.dependant(get_dependant(path="", call=call), where)

    def dependant(self, dependant: Any, where: str) -> None:
        call = dependant.call
        name = getattr(call, _NAME_ATTRIBUTE, None)
        if name is not None and call not in self._overridden:
            self._wanted.setdefault(name, set()).add(where)
        for sub in dependant.dependencies:
            self.dependant(sub, where)
