from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest

from fastapi_retry_http import _backends, _client
from fastapi_retry_http.testing import no_sleep
from tests.redis_server import RedisServer, redis_server_path
from tests.servers import Upstream

if TYPE_CHECKING:
    from fastapi_retry_http.redis import RedisStore


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


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of the session's own, on a free loopback port; killed by PID at the end."""
    executable = redis_server_path()
    if executable is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server); CI installs it")
    server = RedisServer(executable)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def prefix() -> str:
    """Keys of this test only, on the shared server."""
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def stores(redis_server: RedisServer, prefix: str) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    """Two stores on one server: two processes, as far as the state goes."""
    from fastapi_retry_http.redis import RedisStore  # the extra, imported only by the tests that use it

    async with RedisStore(redis_server.url, prefix=prefix) as a, RedisStore(redis_server.url, prefix=prefix) as b:
        yield a, b
