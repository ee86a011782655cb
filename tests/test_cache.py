"""The RFC 9111 shared cache against a counting loopback server: what reaches it, and what is reused."""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from hishel import Entry, Headers

from fastapi_retry_http import (
    AttemptEvent,
    CircuitBreaker,
    Client,
    ClientSettings,
    HttpClientsSettings,
    RetryPolicy,
    clients_lifespan,
)
from fastapi_retry_http._strategies.caching import stale_if_error_allows
from fastapi_retry_http.cache import FROM_CACHE_EXTENSION, CacheStrategy, HttpCache, MemoryStorage
from fastapi_retry_http.exceptions import ConfigurationError
from tests.servers import Reply, Upstream

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("backend")]

ONCE = RetryPolicy(attempts=1)


def reply(cache_control: str, body: bytes = b"v1", **headers: str) -> Reply:
    return Reply(body=body, headers={"cache-control": cache_control, **headers})


def ago(seconds: float) -> str:
    """An HTTP date `seconds` in the past: a response that is already old, with no waiting."""
    return email.utils.formatdate(time.time() - seconds, usegmt=True)


def strategy(client: Client) -> CacheStrategy:
    cache = client.transport.strategies.by_option["cache"]
    assert isinstance(cache, CacheStrategy)
    return cache


def from_cache(response: httpx.Response) -> bool:
    return bool(response.extensions.get(FROM_CACHE_EXTENSION))


class Events:
    def __init__(self) -> None:
        self.events: list[AttemptEvent] = []

    def on_attempt(self, event: AttemptEvent) -> None:
        self.events.append(event)


async def test_a_fresh_response_is_reused_without_an_attempt(upstream: Upstream) -> None:
    upstream.script("/rate", reply("max-age=60", b"1.08", etag='"a"'))
    events = Events()
    async with Client(upstream.url, cache=HttpCache(), instrumentation=[events]) as client:
        first = await client.get("/rate")
        second = await client.get("/rate")
        assert (first.text, second.text) == ("1.08", "1.08")
        assert not from_cache(first)
        assert from_cache(second)
        assert second.headers["etag"] == '"a"'
        assert "age" in second.headers
        assert second.request.url.path == "/rate"
        assert strategy(client).status() == {
            "storage": "memory",
            "hits": 1,
            "misses": 1,
            "revalidated": 0,
            "stale_if_error": 0,
            "stored": 1,
            "entries": 1,
            "bytes": 4,
            "evicted": 0,
        }
    assert upstream.hits["/rate"] == 1
    assert len(events.events) == 1  # the hit made no attempt


@pytest.mark.parametrize(
    ("cache_control", "validator", "stored"),
    [
        ("max-age=60", {}, True),
        ("s-maxage=60", {}, True),
        ("public, max-age=60", {}, True),
        ("no-store", {}, False),
        ("private, max-age=60", {}, False),  # a shared cache never stores it
        ("no-store, max-age=60", {}, False),
        ("max-age=0", {"etag": '"a"'}, True),  # stored, but stale at once: revalidated before use
        ("no-cache", {"last-modified": "Tue, 01 Dec 2026 00:00:00 GMT"}, True),  # revalidated every time
        ("no-cache, stale-if-error=60", {}, True),  # it may answer in place of an error
        # Nothing could ever be reused: no lifetime, nothing to revalidate with (RFC 9111
        # lets a cache store it; storing only adds an entry every later call looks through).
        ("max-age=0", {}, False),
        ("no-cache", {}, False),
        ("", {}, False),
    ],
)
async def test_what_is_stored(upstream: Upstream, cache_control: str, validator: dict[str, str], stored: bool) -> None:
    upstream.script("/x", reply(cache_control, b"v1", **validator), reply(cache_control, b"v1", **validator))
    async with Client(upstream.url, cache=HttpCache()) as client:
        await client.get("/x")
        assert strategy(client).status()["entries"] == (1 if stored else 0)


@pytest.mark.parametrize(
    ("cache_control", "reused"),
    [
        ("max-age=60", False),
        ("public, max-age=60", True),
        ("s-maxage=60", True),
        ("max-age=60, must-revalidate", True),
    ],
)
async def test_a_request_with_authorization_is_answered_only_when_the_response_allowed_it(
    upstream: Upstream, cache_control: str, reused: bool
) -> None:
    upstream.script("/me", reply(cache_control), reply(cache_control))
    async with Client(upstream.url, cache=HttpCache(), headers={"Authorization": "Bearer alice"}) as client:
        await client.get("/me")
        second = await client.get("/me")
    assert from_cache(second) is reused
    assert upstream.hits["/me"] == (1 if reused else 2)


async def test_an_entry_stored_without_authorization_is_not_reused_for_a_request_with_it(
    upstream: Upstream,
) -> None:
    upstream.script("/doc", reply("max-age=60"), reply("max-age=60"))
    async with Client(upstream.url, cache=HttpCache()) as client:
        await client.get("/doc")
        with_auth = await client.get("/doc", headers={"Authorization": "Bearer bob"})
        without = await client.get("/doc")
    assert not from_cache(with_auth)
    assert from_cache(without)
    assert upstream.hits["/doc"] == 2


async def test_vary_selects_the_variant(upstream: Upstream) -> None:
    headers = {"vary": "Accept"}
    upstream.script("/v", reply("max-age=60", b"json", **headers), reply("max-age=60", b"csv", **headers))
    async with Client(upstream.url, cache=HttpCache()) as client:
        json = await client.get("/v", headers={"Accept": "application/json"})
        csv = await client.get("/v", headers={"Accept": "text/csv"})
        json_again = await client.get("/v", headers={"Accept": "application/json"})
        csv_again = await client.get("/v", headers={"Accept": "text/csv"})
    assert [r.text for r in (json, csv, json_again, csv_again)] == ["json", "csv", "json", "csv"]
    assert [from_cache(r) for r in (json, csv, json_again, csv_again)] == [False, False, True, True]
    assert upstream.hits["/v"] == 2


@pytest.mark.parametrize(
    ("validator", "condition"),
    [("etag", "if-none-match"), ("last-modified", "if-modified-since")],
)
async def test_a_stale_entry_is_revalidated_and_a_304_refreshes_it(
    upstream: Upstream, validator: str, condition: str
) -> None:
    value = '"v1"' if validator == "etag" else ago(3600)
    upstream.script(
        "/doc",
        reply("max-age=10", b"body", date=ago(100), **{validator: value}),
        Reply(304, b"", {"cache-control": "max-age=60", validator: value}),
    )
    async with Client(upstream.url, cache=HttpCache()) as client:
        await client.get("/doc")
        revalidated = await client.get("/doc")
        fresh = await client.get("/doc")
        assert strategy(client).counts["revalidated"] == 1
    assert (revalidated.status_code, revalidated.text, from_cache(revalidated)) == (200, "body", True)
    assert (fresh.text, from_cache(fresh)) == ("body", True)
    assert upstream.hits["/doc"] == 2  # the first call and the conditional one
    assert upstream.seen["/doc"][1][0][condition] == value
    assert condition not in upstream.seen["/doc"][0][0]


async def test_a_changed_resource_replaces_the_entry(upstream: Upstream) -> None:
    upstream.script(
        "/doc",
        reply("max-age=10", b"old", date=ago(100), etag='"1"'),
        reply("max-age=60", b"new", etag='"2"'),
    )
    async with Client(upstream.url, cache=HttpCache()) as client:
        await client.get("/doc")
        changed = await client.get("/doc")
        again = await client.get("/doc")
        assert strategy(client).status()["entries"] == 1
    assert (changed.text, from_cache(changed), changed.request.headers.get("if-none-match")) == ("new", False, None)
    assert (again.text, from_cache(again)) == ("new", True)
    assert upstream.hits["/doc"] == 2


STALE_IF_ERROR = "max-age=10, stale-if-error=1000"


@pytest.mark.parametrize("failure", [503, 500, 504])
async def test_stale_if_error_answers_for_an_upstream_error_status(upstream: Upstream, failure: int) -> None:
    upstream.script("/doc", reply(STALE_IF_ERROR, b"kept", date=ago(100)), failure)
    async with Client(upstream.url, cache=HttpCache(), retry=ONCE) as client:
        await client.get("/doc")
        response = await client.get("/doc")
        assert strategy(client).counts["stale_if_error"] == 1
    assert (response.status_code, response.text, from_cache(response)) == (200, "kept", True)
    assert upstream.hits["/doc"] == 2


async def test_stale_if_error_answers_when_the_breaker_refuses(upstream: Upstream) -> None:
    upstream.script("/doc", reply(STALE_IF_ERROR, b"kept", date=ago(100)))
    upstream.script("/down", 503)
    breaker = CircuitBreaker(minimum_throughput=2, failure_ratio=0.5)
    async with Client(upstream.url, cache=HttpCache(), circuit_breaker=breaker, retry=ONCE) as client:
        await client.get("/doc")
        await client.get("/down")
        assert client.circuit is not None
        assert client.circuit.state == "open"
        response = await client.get("/doc")
    assert (response.text, from_cache(response)) == ("kept", True)
    assert upstream.hits["/doc"] == 1  # the breaker sent nothing; the stale entry answered


@pytest.mark.parametrize(
    "cache_control",
    [
        "max-age=10, stale-if-error=20",  # 100 s old: past 10 + 20
        "max-age=10",  # no permission
        "max-age=10, stale-if-error=1000, must-revalidate",
        "s-maxage=10, stale-if-error=1000",  # implies proxy-revalidate for a shared cache
    ],
)
async def test_stale_if_error_is_not_used_beyond_what_the_response_allowed(
    upstream: Upstream, cache_control: str
) -> None:
    upstream.script("/doc", reply(cache_control, date=ago(100)), 503)
    async with Client(upstream.url, cache=HttpCache(), retry=ONCE) as client:
        await client.get("/doc")
        response = await client.get("/doc")
    assert (response.status_code, from_cache(response)) == (503, False)


async def test_stale_if_error_answers_for_a_transport_error_and_otherwise_raises(upstream: Upstream) -> None:
    upstream.script("/ok", reply(STALE_IF_ERROR, b"kept", date=ago(100)))
    upstream.script("/gone", reply("max-age=10", date=ago(100)))
    async with Client(upstream.url, cache=HttpCache(), retry=ONCE) as client:
        await client.get("/ok")
        await client.get("/gone")
        await client.transport.inner.aclose()
        client.transport.inner = httpx.MockTransport(lambda request: (_ for _ in ()).throw(httpx.ConnectError("down")))
        kept = await client.get("/ok")
        with pytest.raises(httpx.ConnectError):
            await client.get("/gone")
    assert (kept.text, from_cache(kept)) == ("kept", True)


async def test_the_size_bound_evicts_the_least_recently_used(upstream: Upstream) -> None:
    for path in ("/a", "/b", "/c", "/a"):
        upstream.script(path, reply("max-age=60", b"x" * 10))
    async with Client(upstream.url, cache=HttpCache(max_entries=2)) as client:
        await client.get("/a")
        await client.get("/b")
        await client.get("/b")  # /b used last: /a goes first
        await client.get("/c")
        assert strategy(client).status()["evicted"] == 1
        assert not from_cache(await client.get("/a"))
        assert strategy(client).status()["entries"] == 2
    assert upstream.hits == {"/a": 2, "/b": 1, "/c": 1}


async def test_the_byte_bounds(upstream: Upstream) -> None:
    upstream.script("/big", reply("max-age=60", b"x" * 200))
    for path in ("/a", "/b"):
        upstream.script(path, reply("max-age=60", b"x" * 60))
    async with Client(upstream.url, cache=HttpCache(max_bytes=100, max_entry_bytes=100)) as client:
        await client.get("/big")
        assert strategy(client).status()["entries"] == 0  # over max_entry_bytes: passed on, not stored
        await client.get("/a")
        await client.get("/b")
        assert strategy(client).status()["entries"] == 1
        assert strategy(client).status()["bytes"] == 60


async def test_a_compressed_body_is_stored_decoded(upstream: Upstream) -> None:
    upstream.script("/z", reply("max-age=60", gzip.compress(b"hello" * 100), **{"content-encoding": "gzip"}))
    async with Client(upstream.url, cache=HttpCache()) as client:
        first = await client.get("/z")
        hit = await client.get("/z")
    assert first.text == hit.text == "hello" * 100
    assert "content-encoding" not in hit.headers
    assert hit.headers.get("content-length") in (None, "500")  # never the compressed length


async def test_an_unsafe_method_invalidates_and_streams_bypass_the_cache(upstream: Upstream) -> None:
    upstream.script("/doc", reply("max-age=60", b"v1"), Reply(204, b""), reply("max-age=60", b"v2"))
    async with Client(upstream.url, cache=HttpCache()) as client:
        await client.get("/doc")
        assert from_cache(await client.get("/doc"))
        await client.post("/doc", content=b"change")
        after = await client.get("/doc")
        async with client.stream("GET", "/doc") as streamed:
            assert not from_cache(streamed)
    assert (after.text, from_cache(after)) == ("v2", False)
    assert upstream.hits["/doc"] == 4


async def test_with_coalescing_a_cold_herd_makes_one_call_and_stores_one_entry(upstream: Upstream) -> None:
    upstream.script("/rate", reply("max-age=60", b"1.08"))
    release = upstream.hold("/rate")
    async with Client(upstream.url, cache=HttpCache(), coalesce=True) as client:
        calls = [asyncio.ensure_future(client.get("/rate")) for _ in range(50)]
        coalescer = client.transport.strategies.by_option["coalesce"]
        for _ in range(10_000):
            if coalescer.status()["waiting"] == 50:
                break
            await asyncio.sleep(0)
        release.set()
        responses = await asyncio.gather(*calls)
        assert {r.text for r in responses} == {"1.08"}
        assert from_cache(await client.get("/rate"))
        assert strategy(client).status()["entries"] == 1
        assert [type(s).__name__ for s in client.transport.strategies.around] == ["CacheStrategy", "Coalescer"]
    assert upstream.hits["/rate"] == 1


async def test_a_sqlite_file_is_shared_by_clients_with_their_own_connections(
    upstream: Upstream, tmp_path: Path
) -> None:
    upstream.script("/rate", reply("max-age=60", b"1.08"))
    cache = HttpCache(storage="sqlite", path=str(tmp_path / "cache.db"))
    async with Client(upstream.url, cache=cache) as writer:
        await writer.get("/rate")
        assert strategy(writer).status() == {
            "storage": "sqlite",
            "hits": 0,
            "misses": 1,
            "revalidated": 0,
            "stale_if_error": 0,
            "stored": 1,
        }
    async with Client(upstream.url, cache=cache) as reader:
        hit = await reader.get("/rate")
    assert (hit.text, from_cache(hit)) == ("1.08", True)
    assert upstream.hits["/rate"] == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_entries", -1),
        ("max_entries", 0),
        ("max_bytes", -5),
        ("max_entry_bytes", -1),
        ("storage", "redis"),
        ("path", None),
    ],
)
def test_bad_settings_fail_at_startup_naming_client_and_field(field: str, value: object) -> None:
    cache: dict[str, object] = {"storage": "sqlite", "path": "/tmp/x.db"} if field == "path" else {}
    cache[field] = value
    config = {"base_url": "http://x.internal/", "cache": cache}
    with pytest.raises(ConfigurationError, match=rf"'rates'.*cache.*{field}"):
        clients_lifespan({"rates": config})
    with pytest.raises(ValueError, match=rf"HttpCache.{field}"):
        HttpCache(**cache)  # type: ignore[arg-type]


def test_max_entry_bytes_cannot_exceed_max_bytes() -> None:
    with pytest.raises(ValueError, match="max_entry_bytes must be <= max_bytes"):
        HttpCache(max_bytes=10, max_entry_bytes=11)


def test_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert ClientSettings(base_url="http://x.internal/").cache is None
    monkeypatch.setenv("HTTP_CLIENTS__RATES__BASE_URL", "http://x.internal/")
    monkeypatch.setenv("HTTP_CLIENTS__RATES__CACHE__STORAGE", "sqlite")
    monkeypatch.setenv("HTTP_CLIENTS__RATES__CACHE__PATH", str(tmp_path / "c.db"))
    monkeypatch.setenv("HTTP_CLIENTS__RATES__CACHE__MAX_BYTES", "10000000")
    settings = HttpClientsSettings().http_clients["rates"]
    assert settings.cache == HttpCache(storage="sqlite", path=str(tmp_path / "c.db"), max_bytes=10_000_000)


def test_without_the_extra_the_client_fails_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fastapi_retry_http.cache", None)
    with pytest.raises(ConfigurationError, match=r"'rates'.*\[cache\]"):
        Client("http://x.internal/", name="rates", cache=HttpCache())


async def test_a_response_without_a_date_gets_one_so_it_can_go_stale() -> None:
    storage = MemoryStorage(10, 1000, 100)
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers={"cache-control": "max-age=60"}, content=b"x")

    async with Client("http://x.internal/", transport=httpx.MockTransport(answer), cache=HttpCache()) as client:
        strategy(client).storage = storage
        await client.get("/d")
        (entry,) = await storage.get_entries(next(iter(storage._by_key)))
        assert email.utils.parsedate_to_datetime(entry.response.headers["date"]).timestamp() == pytest.approx(
            time.time(), abs=5
        )
    assert len(seen) == 1


async def test_an_encoded_body_from_a_custom_transport_is_stored_decoded() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        body = gzip.compress(b"hello")
        headers = {"cache-control": "max-age=60", "content-encoding": "gzip", "content-length": str(len(body))}
        return httpx.Response(200, headers=headers, content=body)

    async with Client("http://x.internal/", transport=httpx.MockTransport(answer), cache=HttpCache()) as client:
        first = await client.get("/z")
        hit = await client.get("/z")
    assert first.text == hit.text == "hello"
    assert from_cache(hit)
    assert "content-encoding" not in hit.headers
    assert hit.headers.get("content-length") in (None, "5")  # never the compressed length


async def test_the_memory_storage_ignores_entries_that_are_gone() -> None:
    storage = MemoryStorage(10, 1000, 100)
    gone = uuid.uuid4()
    await storage.update_headers(gone, Headers({}))
    await storage.remove_entry(gone)
    assert len(storage) == 0


@pytest.mark.parametrize(
    ("headers", "allowed"),
    [
        ({"cache-control": "max-age=10, stale-if-error=100", "date": ago(50)}, True),
        ({"cache-control": "max-age=10,, stale-if-error=100", "date": ago(500)}, False),
        ({"cache-control": "stale-if-error=100", "date": ago(50), "expires": ago(40)}, True),
        ({"cache-control": "stale-if-error=100", "date": ago(50), "expires": "garbage"}, True),
        ({"cache-control": "stale-if-error=100"}, False),  # no Date: its age is unknown
        ({"cache-control": "stale-if-error=100", "date": "not a date"}, False),
        ({"cache-control": "stale-if-error=100", "date": "Sun, 06 Nov 1994 08:49:37"}, False),  # GMT, long ago
        ({"cache-control": "stale-if-error=soon", "date": ago(1)}, False),
        ({"cache-control": 'no-cache, stale-if-error="100"', "date": ago(1)}, False),
    ],
)
def test_stale_if_error_rules(headers: dict[str, str], allowed: bool) -> None:
    assert stale_if_error_allows(headers, time.time()) is allowed


class Snapshot(MemoryStorage):
    """A storage that answers what it held when asked, but only once `release` is set: a slow one."""

    def __init__(self) -> None:
        super().__init__(10, 10_000, 1000)
        self.release = asyncio.Event()
        self.release.set()

    async def get_entries(self, key: str) -> list[Entry]:
        found = await super().get_entries(key)
        await self.release.wait()
        return found


@pytest.mark.parametrize(("cache_control", "upstream_calls"), [("max-age=60", 1), ("no-store", 20)])
async def test_concurrent_misses_wait_for_the_first_fill_then_look_again(
    upstream: Upstream, cache_control: str, upstream_calls: int
) -> None:
    upstream.script("/rate", *[reply(cache_control)] * 20)
    async with Client(upstream.url, cache=HttpCache()) as client:  # no coalescing
        storage = strategy(client).storage = Snapshot()
        storage.release.clear()
        calls = [asyncio.ensure_future(client.get("/rate")) for _ in range(20)]
        for _ in range(5):
            await asyncio.sleep(0)
        storage.release.set()  # all 20 looked up before any stored: 20 misses, one fill
        responses = await asyncio.gather(*calls)
        assert strategy(client).counts["misses"] == upstream_calls
    assert sum(from_cache(r) for r in responses) == 20 - upstream_calls
    assert upstream.hits["/rate"] == upstream_calls


async def test_a_lookup_that_missed_a_fill_ended_meanwhile_looks_again(upstream: Upstream) -> None:
    upstream.script("/rate", reply("max-age=60"))
    async with Client(upstream.url, cache=HttpCache()) as client:
        storage = strategy(client).storage = Snapshot()
        storage.release.clear()
        late = asyncio.ensure_future(client.get("/rate"))  # looks before the store, answered after
        for _ in range(5):
            await asyncio.sleep(0)
        storage.release.set()
        first = await client.get("/rate")
        response = await late
    assert (from_cache(first), from_cache(response)) == (False, True)
    assert upstream.hits["/rate"] == 1


def test_the_core_never_imports_hishel() -> None:
    code = (
        "import sys\n"
        "from fastapi_retry_http import Client, ClientSettings\n"
        "Client('http://x.internal/', coalesce=True)\n"
        "ClientSettings(base_url='http://x.internal/', cache={'max_entries': 5})\n"
        "assert 'hishel' not in sys.modules, 'hishel imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


async def test_a_sqlite_file_is_shared_with_another_process(upstream: Upstream, tmp_path: Path) -> None:
    upstream.script("/rate", reply("max-age=60", b"from another process"))
    path = str(tmp_path / "fleet.db")
    code = (
        "import asyncio\n"
        "from fastapi_retry_http import Client\n"
        "from fastapi_retry_http.cache import HttpCache\n"
        "async def main():\n"
        f"    cache = HttpCache(storage='sqlite', path={path!r})\n"
        f"    async with Client({upstream.url!r}, name='rates', cache=cache) as c:\n"
        "        assert (await c.get('/rate')).status_code == 200\n"
        "asyncio.run(main())\n"
    )
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", code)
    assert await asyncio.wait_for(process.wait(), 60) == 0
    assert upstream.hits["/rate"] == 1
    async with Client(upstream.url, name="rates", cache=HttpCache(storage="sqlite", path=path)) as client:
        hit = await client.get("/rate")
    assert (hit.text, from_cache(hit)) == ("from another process", True)
    assert upstream.hits["/rate"] == 1


async def test_calls_that_go_upstream_together_leave_one_entry(upstream: Upstream) -> None:
    """Each stores; each replaces what is stored when it stores, not what it saw when it looked."""
    upstream.script("/x", *[reply("no-cache", etag='"a"') for _ in range(48)])
    async with Client(upstream.url, cache=HttpCache()) as client:
        for _ in range(3):
            responses = await asyncio.gather(*(client.get("/x") for _ in range(16)))
            assert {response.status_code for response in responses} == {200}
        cache = strategy(client)
        assert cache.status()["entries"] == 1
        assert upstream.hits["/x"] == 48  # no-cache: every call revalidated, none answered unasked


async def test_a_url_whose_answers_cannot_be_stored_is_not_looked_up_until_one_can(upstream: Upstream) -> None:
    """hishel's lookup is most of a miss's cost; with nothing stored and nothing storable, it is skipped."""
    upstream.script("/x", reply(""), reply("max-age=60"), reply("max-age=60"), reply("max-age=60"))
    async with Client(upstream.url, cache=HttpCache()) as client:
        cache = strategy(client)
        lookups: list[str] = []
        original = cache.storage.get_entries

        async def counted(key: str) -> list[Entry]:
            lookups.append(key)
            return await original(key)

        cache.storage.get_entries = counted  # type: ignore[method-assign]
        await client.get("/x")  # looked up (a miss), and checked for entries once it was not storable
        assert (len(lookups), cache.status()["entries"]) == (2, 0)
        await client.get("/x")  # not looked up; its answer could be stored: the next call looks up
        assert (len(lookups), cache.status()["entries"]) == (2, 0)
        await client.get("/x")  # looked up, a miss, stored
        assert cache.status()["entries"] == 1
        hit = await client.get("/x")
        assert from_cache(hit)
        assert cache.status()["misses"] == 3
    assert upstream.hits["/x"] == 3
