"""
The FastAPI lifecycle, always through a real lifespan and `TestClient`, never internals.

No `from __future__ import annotations` here: FastAPI must evaluate the `Depends` in the
annotations of routes defined inside test functions.
"""

import logging
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.testclient import TestClient
from pydantic_settings import BaseSettings, SettingsConfigDict

from fastapi_retry_http import (
    Client,
    ClientRegistry,
    ClientSettings,
    RetryPolicy,
    clients,
    clients_lifespan,
    get_client,
)
from fastapi_retry_http._fastapi.lifespan import STATE_KEY
from fastapi_retry_http.exceptions import ConfigurationError, LifespanNotRunError, UnknownClientError
from fastapi_retry_http.testing import override_transport
from tests.servers import Upstream

Billing = Annotated[Client, Depends(get_client("billing"))]


pytestmark = pytest.mark.usefixtures("backend")


def make_app(configs: dict[str, Any], registry: ClientRegistry | None = None, **routes: str) -> FastAPI:
    """An app whose route /call/{client} fetches /ping from that client."""
    app = FastAPI(lifespan=clients_lifespan(configs, registry=registry if registry is not None else ClientRegistry()))
    for name in routes.get("names", "billing").split(","):

        @app.get(f"/call/{name}")
        async def call(client: Annotated[Client, Depends(get_client(name))]) -> dict[str, Any]:
            response = await client.get("ping")
            return {"status": response.status_code, "client": client.name, "body": response.text}

    return app


class TestSettings:
    def test_environment_configures_clients(self, monkeypatch: pytest.MonkeyPatch) -> None:
        class Settings(BaseSettings):
            model_config = SettingsConfigDict(env_nested_delimiter="__")
            http_clients: dict[str, ClientSettings] = {}

        monkeypatch.setenv("HTTP_CLIENTS__BILLING__BASE_URL", "https://billing.internal/api/")
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__RETRY__ATTEMPTS", "5")
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__RETRY__STATUSES", "[500, 503]")
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__HEADERS", '{"Authorization": "Bearer tok-secret"}')
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__LIMITS__MAX_CONNECTIONS", "7")
        settings = Settings()
        billing = settings.http_clients["billing"]
        assert str(billing.base_url) == "https://billing.internal/api/"
        assert billing.retry == RetryPolicy(attempts=5, statuses=frozenset({500, 503}))
        assert billing.headers == {"Authorization": "Bearer tok-secret"}
        assert billing.limits.max_connections == 7
        assert "tok-secret" not in repr(settings)
        assert "tok-secret" not in str(settings)

    @pytest.mark.parametrize(
        ("config", "field"),
        [
            ({"base_url": "https://x.internal", "retyr": {}}, "retyr"),
            ({"base_url": "https://x.internal", "retry": {"attempts": 0}}, "retry"),
            ({"base_url": "https://x.internal", "retry": {"atempts": 3}}, "retry.atempts"),
            ({"base_url": "not a url?token=s3cret-in-url"}, "base_url"),
            ({"base_url": "ftp://x.internal/s3cret-in-url"}, "base_url"),
            ({"base_url": "https://x.internal", "timeout": -1}, "timeout"),
            ({"base_url": "https://x.internal", "headers": {"A": 7}}, "headers.A"),
            ({"headers": {"Authorization": "s3cret-in-url"}}, "base_url"),
            ({"base_url": "https://user:s3cret-in-url@x.internal"}, "base_url"),
            ({"base_url": "https://x.internal/?key=s3cret-in-url"}, "base_url"),
            ({"base_url": "https://x.internal", "headers": {"X-Api-Key": "s3cret\r\nX: 1"}}, "headers"),
        ],
    )
    def test_bad_settings_fail_early_naming_client_and_field_not_value(
        self, config: dict[str, Any], field: str
    ) -> None:
        with pytest.raises(ConfigurationError) as caught:
            clients_lifespan({"billing": config})
        message = str(caught.value)
        assert "'billing'" in message
        assert f"{field}:" in message
        assert "s3cret" not in message

    def test_a_client_that_cannot_be_built_fails_startup_and_closes_the_others(self, tmp_path: Path) -> None:
        not_a_bundle = tmp_path / "ca.pem"
        not_a_bundle.write_text("no certificate here")
        registry = ClientRegistry()
        configs = {
            "billing": {"base_url": "https://billing.internal"},
            "shipping": {"base_url": "https://shipping.internal", "verify": str(not_a_bundle)},
        }
        app = make_app(configs, registry)
        with pytest.raises(ConfigurationError, match="'shipping' could not be built"), TestClient(app):
            pass
        assert len(registry) == 0

    def test_a_proxy_url_may_carry_its_credentials(self) -> None:
        settings = ClientSettings(base_url="https://x.internal", proxy="http://user:pw@proxy.internal:3128")
        assert "pw" not in repr(settings)

    def test_names_configured_twice_are_refused(self) -> None:
        with pytest.raises(ConfigurationError, match="configured twice"):
            clients_lifespan({"Billing": {"base_url": "http://a"}, "billing": {"base_url": "http://b"}})


class TestLifespan:
    def test_routes_get_their_client_and_retries_stay_in_play(self, upstream: Upstream) -> None:
        upstream.script("/ping", 503)
        app = make_app({"billing": {"base_url": upstream.url}})
        with TestClient(app) as http:
            assert http.get("/call/billing").json() == {"status": 200, "client": "billing", "body": "ok"}
        assert upstream.hits["/ping"] == 2

    def test_shutdown_closes_the_clients_and_a_second_start_builds_fresh_ones(self, upstream: Upstream) -> None:
        registry = ClientRegistry()
        app = make_app({"billing": {"base_url": upstream.url}}, registry)
        with TestClient(app) as http:
            first = registry["billing"]
            assert http.get("/call/billing").status_code == 200
        assert first.is_closed
        assert len(registry) == 0
        with TestClient(app) as http:
            second = registry["billing"]
            assert http.get("/call/billing").status_code == 200
        assert second is not first
        assert second.is_closed

    def test_a_route_asking_for_an_unknown_client_fails_startup(self) -> None:
        app = make_app({"billing": {"base_url": "http://a.internal"}}, names="billing,billng")
        with pytest.raises(UnknownClientError) as caught, TestClient(app):
            pass
        message = str(caught.value)
        assert "'billng'" in message
        assert "configured clients are: 'billing'" in message
        assert "GET /call/billng" in message

    def test_unknown_names_in_nested_dependencies_routers_and_mounts_fail_startup(self) -> None:
        async def needs_shipping(client: Annotated[Client, Depends(get_client("shipping"))]) -> Client:
            return client

        router = APIRouter()

        @router.get("/nested")
        async def nested(client: Annotated[Client, Depends(needs_shipping)]) -> None: ...

        sub = FastAPI()

        @sub.get("/sub")
        async def in_sub(client: Annotated[Client, Depends(get_client("payments"))]) -> None: ...

        app = FastAPI(
            lifespan=clients_lifespan({"billing": {"base_url": "http://a"}}, registry=ClientRegistry()),
            dependencies=[Depends(get_client("everywhere"))],
        )
        app.include_router(router, prefix="/r", dependencies=[Depends(get_client("audit"))])
        app.mount("/mounted", sub)
        with pytest.raises(UnknownClientError) as caught, TestClient(app):
            pass
        message = str(caught.value)
        assert "'payments' by GET /mounted/sub" in message
        assert "'shipping' by GET /r/nested" in message
        assert "'audit' by " in message
        assert "'everywhere' by " in message

    def test_unknown_names_are_checked_per_app(self) -> None:
        """Another app's routes never make this app fail."""
        make_app({"other": {"base_url": "http://a"}}, names="other")
        app = make_app({"billing": {"base_url": "http://a"}})
        with TestClient(app):
            pass

    def test_clients_reach_included_routers_and_mounted_sub_apps(self, upstream: Upstream) -> None:
        router = APIRouter()

        @router.get("/via-router")
        async def via_router(billing: Billing) -> str:
            return (await billing.get("ping")).text

        sub = FastAPI()

        @sub.get("/via-sub")
        async def via_sub(billing: Billing) -> str:
            return (await billing.get("ping")).text

        app = FastAPI(lifespan=clients_lifespan({"billing": {"base_url": upstream.url}}, registry=ClientRegistry()))
        app.include_router(router)
        app.mount("/sub", sub)
        with TestClient(app) as http:
            assert http.get("/via-router").json() == "ok"
            assert http.get("/sub/via-sub").json() == "ok"

    def test_without_the_lifespan_a_route_gets_a_clear_runtime_error(self) -> None:
        app = make_app({"billing": {"base_url": "http://a"}})
        http = TestClient(app)  # not entered: the lifespan never runs
        with pytest.raises(LifespanNotRunError, match="with TestClient"):
            http.get("/call/billing")

    def test_nested_in_the_apps_own_lifespan(self, upstream: Upstream) -> None:
        registry = ClientRegistry()
        events: list[str] = []

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> Any:
            events.append("db up")
            async with clients_lifespan({"billing": {"base_url": upstream.url}}, registry=registry)(app) as state:
                yield {**state, "db": "conn"}
            events.append(f"db down, clients left: {len(registry)}")

        app = FastAPI(lifespan=lifespan)

        @app.get("/x")
        async def x(billing: Billing) -> str:
            return (await billing.get("ping")).text

        with TestClient(app) as http:
            assert http.get("/x").json() == "ok"
        assert events == ["db up", "db down, clients left: 0"]

    def test_two_apps_with_their_own_registries_stay_apart(self, upstream: Upstream) -> None:
        a = make_app({"billing": {"base_url": upstream.url + "/a/"}})
        b = make_app({"billing": {"base_url": upstream.url + "/b/"}})
        with TestClient(a) as http_a, TestClient(b) as http_b:
            http_a.get("/call/billing")
            http_b.get("/call/billing")
        assert upstream.hits == {"/a/ping": 1, "/b/ping": 1}

    def test_two_apps_on_one_registry_with_the_same_name_fail_at_startup(self) -> None:
        registry = ClientRegistry()
        a = make_app({"billing": {"base_url": "http://a"}}, registry)
        b = make_app({"billing": {"base_url": "http://b"}}, registry)
        with TestClient(a):
            with pytest.raises(RuntimeError, match="already registered"), TestClient(b):
                pass
            assert not registry["billing"].is_closed  # a's client survives b's failed start

    def test_a_failed_second_start_of_the_same_app_leaves_the_running_one_alone(self, upstream: Upstream) -> None:
        registry = ClientRegistry()
        app = make_app({"billing": {"base_url": upstream.url}}, registry)
        with TestClient(app) as running:
            with pytest.raises(RuntimeError, match="already registered"), TestClient(app):
                pass
            # The failed start's cleanup must not take the running instance's registry away.
            assert getattr(app.state, STATE_KEY) is registry
            assert running.get("/call/billing").status_code == 200
        assert not hasattr(app.state, STATE_KEY)

    def test_names_are_case_insensitive(self, upstream: Upstream) -> None:
        registry = ClientRegistry()
        app = FastAPI(lifespan=clients_lifespan({"Billing": {"base_url": upstream.url}}, registry=registry))

        @app.get("/x")
        async def x(client: Annotated[Client, Depends(get_client("BILLING"))]) -> str:
            return client.name

        with TestClient(app) as http:
            assert http.get("/x").json() == "billing"
            assert registry["BiLLing"] is registry["billing"]
        assert get_client("Billing") is get_client("billing")

    def test_the_default_registry(self, upstream: Upstream) -> None:
        app = FastAPI(lifespan=clients_lifespan({"billing": {"base_url": upstream.url}}))
        with TestClient(app):
            assert "billing" in clients
            assert app.state.fastapi_retry_http_clients is clients
        assert "billing" not in clients


class TestRegistry:
    def test_unknown_name_lists_the_configured_ones(self) -> None:
        registry = ClientRegistry()
        registry.add(Client("http://a", name="billing"))
        with pytest.raises(UnknownClientError, match=r"'shipping'; the configured clients are: 'billing'"):
            registry["shipping"]
        assert registry.get("shipping") is None
        assert isinstance(UnknownClientError("x"), LookupError)
        assert list(registry) == ["billing"]
        assert repr(registry) == "<ClientRegistry ['billing']>"

    @pytest.mark.anyio
    async def test_aclose_closes_every_client_even_when_one_fails(self, caplog: pytest.LogCaptureFixture) -> None:
        registry = ClientRegistry()
        broken, fine = Client("http://a", name="broken"), Client("http://b", name="fine")

        async def fail() -> None:
            raise OSError("close failed")

        broken.aclose = fail  # type: ignore[method-assign]
        registry.add(broken)
        registry.add(fine)
        await registry.aclose()
        assert fine.is_closed
        assert len(registry) == 0
        assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
            "broken: closing the client failed."
        ]


class TestTestingHelpers:
    def test_override_transport_keeps_the_retries(self) -> None:
        calls: list[str] = []

        def handler(request: httpx.Request) -> httpx.Response:
            calls.append(str(request.url))
            return httpx.Response(503 if len(calls) == 1 else 200, text="mocked")

        registry = ClientRegistry()
        app = make_app({"billing": {"base_url": "https://billing.internal/api/"}}, registry)
        with override_transport("billing", httpx.MockTransport(handler), registry=registry), TestClient(app) as http:
            assert http.get("/call/billing").json()["body"] == "mocked"
        assert calls == ["https://billing.internal/api/ping"] * 2

    def test_override_transport_on_a_running_client(self, upstream: Upstream) -> None:
        registry = ClientRegistry()
        app = make_app({"billing": {"base_url": upstream.url}}, registry)
        mock = httpx.MockTransport(lambda request: httpx.Response(200, text="mocked"))
        with TestClient(app) as http:
            with override_transport("billing", mock, registry=registry):
                assert http.get("/call/billing").json()["body"] == "mocked"
            assert http.get("/call/billing").json()["body"] == "ok"

    def test_dependency_overrides_replace_a_client(self) -> None:
        app = make_app({"billing": {"base_url": "http://a"}}, names="billing,fake")
        fake = Client("http://fake", name="fake", transport=httpx.MockTransport(lambda r: httpx.Response(200)))
        app.dependency_overrides[get_client("fake")] = lambda: fake
        with TestClient(app) as http:  # "fake" is not configured, but it is overridden
            assert http.get("/call/fake").json()["client"] == "fake"


def test_example_provider_is_a_coroutine_function() -> None:
    """An async provider: FastAPI would run a sync one in its thread pool on every request."""
    import inspect

    provider: Callable[..., Any] = get_client("billing")
    assert inspect.iscoroutinefunction(provider)
