from __future__ import annotations

from collections.abc import Iterator

import pytest

from fastapi_retry_http import _backends, _client
from fastapi_retry_http.testing import no_sleep
from tests.servers import Upstream


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def waits() -> Iterator[list[float]]:
    """No test waits for real backoff: every wait is skipped and recorded here."""
    with no_sleep() as recorded:
        yield recorded


@pytest.fixture(scope="session")
def _upstream_server() -> Iterator[Upstream]:
    server = Upstream()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def upstream(_upstream_server: Upstream) -> Upstream:
    """The loopback HTTP upstream, with its scripts and counters reset."""
    _upstream_server.reset()
    return _upstream_server


@pytest.fixture(params=["aiohttp", "httpx"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test once per inner transport: retry semantics must not depend on it."""
    monkeypatch.setattr(_backends, "DEFAULT_BACKEND", request.param)
    return str(request.param)


@pytest.fixture(params=["lean", "full"])
def request_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """
    Runs a test once per request path of `Client`: the lean one (the default, which skips
    `httpx.AsyncClient.send`) and the full one (httpx's send loop, for auth, cookies, hooks
    and redirects). Both must behave the same; clients built in the test take the path.
    """
    monkeypatch.setattr(_client, "LEAN_PATH", request.param == "lean")
    return str(request.param)
