"""Request coalescing against a counting loopback server: how many calls reach it, and who gets what."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from fastapi_retry_http import AttemptEvent, Client, ClientSettings, HttpClientsSettings, RetryPolicy
from fastapi_retry_http._strategies.coalesce import COALESCED_EXTENSION, Coalescer
from tests.servers import RawServer, Reply, Upstream

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("backend")]

ONCE = RetryPolicy(attempts=1)


def coalescer(client: Client) -> Coalescer:
    strategy = client.transport.strategies.by_option["coalesce"]
    assert isinstance(strategy, Coalescer)
    return strategy


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until `condition` holds (no sleep: the callers only need turns)."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


def waiting(client: Client, count: int) -> Callable[[], bool]:
    return lambda: coalescer(client).status()["waiting"] == count


async def test_a_hundred_identical_gets_make_one_upstream_call(upstream: Upstream) -> None:
    upstream.script("/rate", Reply(body=b"1.08", headers={"x-rate": "eur"}))
    release = upstream.hold("/rate")
    async with Client(upstream.url, coalesce=True) as client:
        calls = [asyncio.ensure_future(client.get("/rate")) for _ in range(100)]
        await until(waiting(client, 100))
        release.set()
        responses = await asyncio.gather(*calls)
        assert upstream.hits["/rate"] == 1
        assert {(r.status_code, r.content, r.headers["x-rate"]) for r in responses} == {(200, b"1.08", "eur")}
        assert len({id(response) for response in responses}) == 100  # each caller its own object
        joined = [r for r in responses if r.extensions.get(COALESCED_EXTENSION)]
        assert len(joined) == 99
        assert COALESCED_EXTENSION not in responses[0].extensions  # the one that sent
        assert all(r.request.url.path == "/rate" for r in responses)
        assert coalescer(client).status() == {
            "in_flight": 0,
            "waiting": 0,
            "max_waiting": 10_000,
            "joined": 99,
            "overflowed": 0,
        }


async def test_without_coalescing_every_call_goes_upstream(upstream: Upstream) -> None:
    release = upstream.hold("/rate")
    async with Client(upstream.url) as client:
        assert "coalesce" not in client.transport.strategies.by_option
        calls = [asyncio.ensure_future(client.get("/rate")) for _ in range(10)]
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(*calls)
    assert upstream.hits["/rate"] == 10


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"Authorization": "Bearer alice"}, {"Authorization": "Bearer bob"}),
        ({"Accept": "application/json"}, {"Accept": "text/csv"}),
        ({}, {"X-Tenant": "7"}),
    ],
)
async def test_calls_that_differ_in_any_header_are_never_merged(
    upstream: Upstream, first: dict[str, str], second: dict[str, str]
) -> None:
    release = upstream.hold("/me")
    async with Client(upstream.url, coalesce=True) as client:
        calls = [asyncio.ensure_future(client.get("/me", headers=headers)) for headers in (first, second)]
        await until(waiting(client, 2))
        assert coalescer(client).status()["in_flight"] == 2
        release.set()
        await asyncio.gather(*calls)
    assert upstream.hits["/me"] == 2
    assert [seen[0].get("authorization") for seen in upstream.seen["/me"]].count(None) == (
        2 - sum("Authorization" in headers for headers in (first, second))
    )


async def test_other_urls_methods_and_streams_are_not_merged(upstream: Upstream) -> None:
    for path in ("/a", "/b", "/post", "/stream"):
        upstream.hold(path)
    async with Client(upstream.url, coalesce=True) as client:

        async def streamed() -> bytes:
            async with client.stream("GET", "/stream") as response:
                return await response.aread()

        calls: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(client.get("/a")),
            asyncio.ensure_future(client.get("/b")),
            asyncio.ensure_future(client.post("/post", content=b"1")),
            asyncio.ensure_future(client.post("/post", content=b"1")),
            asyncio.ensure_future(streamed()),
            asyncio.ensure_future(streamed()),
        ]
        await until(waiting(client, 2))
        upstream.reset()  # releases every held path
        await asyncio.gather(*calls)
    assert coalescer(client).joined == 0


async def test_head_calls_are_merged_and_the_shared_call_retries(upstream: Upstream) -> None:
    upstream.script("/flaky", 503, 200)
    release = upstream.hold("/flaky")
    policy = RetryPolicy(attempts=2, methods=frozenset({"HEAD"}))
    async with Client(upstream.url, coalesce=True, retry=policy) as client:
        calls = [asyncio.ensure_future(client.head("/flaky")) for _ in range(5)]
        await until(waiting(client, 5))
        release.set()
        responses = await asyncio.gather(*calls)
    assert [r.status_code for r in responses] == [200] * 5
    assert upstream.hits["/flaky"] == 2  # one call, with its one retry


async def test_a_failure_reaches_every_caller() -> None:
    release = asyncio.Event()

    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await release.wait()
        writer.transport.abort()

    async with RawServer(reset) as server, Client(server.url, coalesce=True, retry=ONCE) as client:
        calls = [asyncio.ensure_future(client.get("/x")) for _ in range(3)]
        await until(waiting(client, 3))
        release.set()
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert server.requests == 1
    assert all(isinstance(outcome, httpx.TransportError) for outcome in outcomes)


async def test_a_caller_going_away_does_not_cancel_the_call_another_waits_for(upstream: Upstream) -> None:
    release = upstream.hold("/slow")
    async with Client(upstream.url, coalesce=True) as client:
        first = asyncio.ensure_future(client.get("/slow"))
        second = asyncio.ensure_future(client.get("/slow"))
        await until(waiting(client, 2))
        first.cancel()
        await until(waiting(client, 1))
        assert coalescer(client).status()["in_flight"] == 1
        release.set()
        response = await second
        assert response.status_code == 200
        assert first.cancelled()
        # The one left took the original response, and it had joined.
        assert response.extensions[COALESCED_EXTENSION] is True
    assert upstream.hits["/slow"] == 1


async def test_the_call_is_cancelled_when_every_caller_has_gone() -> None:
    events: list[AttemptEvent] = []

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.read()  # until the client closes the connection

    class Recorder:
        def on_attempt(self, event: AttemptEvent) -> None:
            events.append(event)

    async with RawServer(hang) as server, Client(server.url, coalesce=True, instrumentation=[Recorder()]) as client:
        calls = [asyncio.ensure_future(client.get("/x")) for _ in range(2)]
        await until(waiting(client, 2))
        await until(lambda: server.requests == 1)
        for call in calls:
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        await until(lambda: bool(events))
        assert [event.outcome for event in events] == ["cancelled"]
        assert coalescer(client).status()["in_flight"] == 0
        assert server.requests == 1


async def test_past_the_bound_calls_go_on_their_own(upstream: Upstream) -> None:
    release = upstream.hold("/rate")
    async with Client(upstream.url, coalesce=True) as client:
        coalescer(client).max_waiting = 2
        calls = [asyncio.ensure_future(client.get("/rate")) for _ in range(3)]
        await until(lambda: coalescer(client).overflowed == 1)
        assert coalescer(client).status()["waiting"] == 2
        release.set()
        responses = await asyncio.gather(*calls)
    assert [r.status_code for r in responses] == [200] * 3
    assert upstream.hits["/rate"] == 2


async def test_a_per_call_policy_is_part_of_the_key(upstream: Upstream) -> None:
    release = upstream.hold("/rate")
    async with Client(upstream.url, coalesce=True) as client:
        calls = [asyncio.ensure_future(client.get("/rate", retry=RetryPolicy(attempts=2))) for _ in range(2)]
        await until(waiting(client, 2))
        release.set()
        await asyncio.gather(*calls)
    assert upstream.hits["/rate"] == 2


def test_from_settings_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ClientSettings(base_url="http://x.internal/").coalesce is False
    monkeypatch.setenv("HTTP_CLIENTS__RATES__BASE_URL", "http://x.internal/")
    monkeypatch.setenv("HTTP_CLIENTS__RATES__COALESCE", "true")
    settings = HttpClientsSettings().http_clients["rates"]
    assert settings.coalesce is True
    client = Client.from_settings("rates", settings)
    assert isinstance(client.transport.strategies.by_option["coalesce"], Coalescer)
    assert client.transport.strategies.around == [client.transport.strategies.by_option["coalesce"]]
