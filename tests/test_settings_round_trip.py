"""
Settings survive a round trip: `ClientSettings.model_validate(settings.model_dump())` (and the
same through JSON, or the environment) means what the settings meant. The default size cap
caps buffered calls only; read back as a plain number, it capped `stream()` calls too.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Callable

import pytest

from fastapi_retry_http import CircuitBreaker, Client, ClientSettings, HttpClientsSettings, RetryPolicy
from fastapi_retry_http._defaults import DEFAULT_MAX_RESPONSE_BYTES
from fastapi_retry_http.exceptions import ResponseTooLargeError
from tests.servers import RawServer

pytestmark = pytest.mark.anyio

RoundTrip = Callable[[ClientSettings], ClientSettings]

ROUND_TRIPS: dict[str, RoundTrip] = {
    "python": lambda s: ClientSettings.model_validate(s.model_dump()),
    "json": lambda s: ClientSettings.model_validate_json(s.model_dump_json()),
    "json twice": lambda s: ClientSettings.model_validate_json(
        ClientSettings.model_validate_json(s.model_dump_json()).model_dump_json()
    ),
    "copy": lambda s: s.model_copy(deep=True),
}


async def huge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
    """A body declared far over the default cap: refused at its Content-Length when capped."""
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n" + b"x" * 1000)
    await writer.drain()
    while await reader.read(1024):  # until the client hangs up
        pass


@pytest.mark.parametrize("round_trip", ROUND_TRIPS.values(), ids=ROUND_TRIPS.keys())
async def test_the_default_cap_still_leaves_streams_uncapped_after_a_round_trip(round_trip: RoundTrip) -> None:
    async with RawServer(huge) as server:
        settings = round_trip(ClientSettings(base_url=server.url))
        assert settings.max_response_bytes == 32 << 20
        async with Client.from_settings("files", settings) as c:
            with pytest.raises(ResponseTooLargeError):
                await c.get("/x")
            async with c.stream("GET", "/x") as response:
                async for chunk in response.aiter_bytes():
                    assert chunk  # the download starts
                    break


@pytest.mark.parametrize("round_trip", ROUND_TRIPS.values(), ids=ROUND_TRIPS.keys())
async def test_a_number_given_still_caps_streams_after_a_round_trip(round_trip: RoundTrip) -> None:
    async with RawServer(huge) as server:
        settings = round_trip(ClientSettings(base_url=server.url, max_response_bytes=32 << 20))
        async with Client.from_settings("files", settings) as c:
            with pytest.raises(ResponseTooLargeError):  # at its Content-Length, before reading
                async with c.stream("GET", "/x") as response:
                    await response.aread()


@pytest.mark.parametrize("round_trip", ROUND_TRIPS.values(), ids=ROUND_TRIPS.keys())
def test_every_field_means_the_same_after_a_round_trip(round_trip: RoundTrip) -> None:
    for settings in (
        ClientSettings(base_url="http://billing.internal"),
        ClientSettings(base_url="http://billing.internal", max_response_bytes=None),
        ClientSettings(
            base_url="http://billing.internal",
            headers={"X-Api-Key": "k"},
            max_response_bytes=1000,
            retry=RetryPolicy(hedge_after=0.1),
            retry_budget=None,
            circuit_breaker=CircuitBreaker(),
        ),
    ):
        again = round_trip(settings)
        assert again == settings
        before, after = settings.client_kwargs(), again.client_kwargs()
        assert {k: (type(v), v) for k, v in after.items()} == {k: (type(v), v) for k, v in before.items()}


def test_the_default_is_dumped_as_default_and_read_back_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = ClientSettings(base_url="http://billing.internal")
    assert settings.model_dump()["max_response_bytes"] == "default"
    assert json.loads(settings.model_dump_json())["max_response_bytes"] == "default"
    monkeypatch.setenv("HTTP_CLIENTS__BILLING__BASE_URL", "http://billing.internal")
    monkeypatch.setenv("HTTP_CLIENTS__BILLING__MAX_RESPONSE_BYTES", " Default ")
    from_env = HttpClientsSettings().http_clients["billing"]
    assert from_env.client_kwargs()["max_response_bytes"] is DEFAULT_MAX_RESPONSE_BYTES
    app = HttpClientsSettings.model_validate(HttpClientsSettings().model_dump())
    assert app.http_clients["billing"].client_kwargs()["max_response_bytes"] is DEFAULT_MAX_RESPONSE_BYTES


def test_the_default_given_by_name_is_the_default() -> None:
    settings = ClientSettings(base_url="http://billing.internal", max_response_bytes=DEFAULT_MAX_RESPONSE_BYTES)
    assert settings.client_kwargs()["max_response_bytes"] is DEFAULT_MAX_RESPONSE_BYTES
    assert settings.model_dump()["max_response_bytes"] == "default"


@pytest.mark.parametrize("bad", [0, -1, "defaults", "", 1.5])
def test_anything_else_is_still_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="max_response_bytes"):
        ClientSettings(base_url="http://billing.internal", max_response_bytes=bad)  # type: ignore[arg-type]


def test_the_json_schema_states_the_default_as_it_is_dumped() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pydantic warns when it cannot write a default
        schema = ClientSettings.model_json_schema()["properties"]["max_response_bytes"]
    assert schema["default"] == "default"
    assert {"const": "default"} in schema["anyOf"]
