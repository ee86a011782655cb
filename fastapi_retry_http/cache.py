"""
An RFC 9111 shared cache for a client, on hishel (the `[cache]` extra).

```python
from fastapi_retry_http.cache import HttpCache

rates = Client("https://rates.internal/", cache=HttpCache(max_entries=500))
```

A strategy around the call, before coalescing and every attempt: a hit makes no attempt and
carries `response.extensions["fastapi_retry_http.from_cache"] = True`. hishel's sans-IO state
machine decides what is stored, reused and revalidated, in its shared-cache mode; this module
drives it with the client's own pipeline and adds what hishel 2.0 leaves out:

- the `Authorization` rule on reuse (hishel checks it only when storing, for the storing request);
- `stale-if-error` (RFC 5861), where an upstream error includes a call the breaker refused;
- a `Date` on responses that came without one (RFC 9110 §6.6.1; hishel would take them as
  forever new);
- an in-memory storage bounded by entries and bytes (hishel's own default is a SQLite file in
  the working directory), and one entry per variant (a newer one replaces the older);
- one fill per key and process: a miss while another call fills the same key waits for it
  and looks again, so a storage that answers slowly (SQLite) does not let a herd through.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Final

import httpx
from hishel import (
    AnyState,
    AsyncBaseStorage,
    CacheMiss,
    CacheOptions,
    CouldNotBeStored,
    Entry,
    FromCache,
    Headers,
    IdleClient,
    InvalidateEntries,
    NeedRevalidation,
    NeedToBeUpdated,
    Request,
    Response,
    StoreAndUse,
)

from ._cache_storage import MemoryStorage, once, storage_for
from ._pipeline.attempts import call_options
from ._pipeline.httpx_parts import read_response
from ._pipeline.strategy import Proceed
from ._strategies.caching import ERROR_STATUSES, HttpCache, allows_shared_reuse, reusable, stale_if_error_allows
from ._strategies.coalesce import COALESCED_EXTENSION

__all__ = ["FROM_CACHE_EXTENSION", "CacheStrategy", "HttpCache", "MemoryStorage"]

#: `response.extensions` key: `True` on a response the cache answered (a hit, a stored
#: response confirmed by a 304, or a stale one served in place of an upstream error).
FROM_CACHE_EXTENSION: Final = "fastapi_retry_http.from_cache"

#: Methods whose misses are filled once per process (see `CacheStrategy._look_up`).
_FILLED: Final = frozenset({"GET", "HEAD"})

#: How many keys answered with nothing storable a cache remembers (cleared when full).
_UNSTORED_KEPT: Final = 1024

#: Shared (a service's client answers many users), and never stale without revalidation.
_OPTIONS: Final = CacheOptions(shared=True, allow_stale=False)


class CacheStrategy:
    """The cache of one client (`Client(cache=HttpCache(...))`), around its calls."""

    def __init__(
        self,
        config: HttpCache,
        name: str,
        storage: AsyncBaseStorage | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.name = name
        self.storage = storage if storage is not None else storage_for(config)
        self._wall_clock = wall_clock  # HTTP dates are wall-clock times
        self.counts = dict.fromkeys(("hits", "misses", "revalidated", "stale_if_error", "stored"), 0)
        #: Keys a call of this process is filling (a miss or a revalidation upstream), and how
        #: many fills have ended since start.
        self._filling: dict[str, asyncio.Event] = {}
        self._fills = 0
        #: Keys (in memory) with nothing stored whose last answer could not be: looked up no more
        #: until an answer could be (hishel's lookup is most of a miss's cost).
        self._unstored: set[str] = set()
        #: The last URL's key (URLs are immutable; the lean path reuses one object per path).
        self._keyed_url: httpx.URL | None = None
        self._key = ""

    async def around(self, request: httpx.Request, proceed: Proceed) -> httpx.Response:
        """A stored response when RFC 9111 allows it; otherwise the call, stored when allowed."""
        if call_options(request).stream:
            return await proceed(request)  # read as it arrives: neither served nor stored
        url = request.url
        if url is not self._keyed_url:  # the lean path hands the same URL object for a path
            self._key = hashlib.sha256(f"{self.name} {url}".encode()).hexdigest()
            self._keyed_url = url
        key = self._key
        if key in self._unstored and request.method in _FILLED:
            self.counts["misses"] += 1
            response = await proceed(request)
            if reusable(response.headers):
                self._unstored.discard(key)  # stored from the next call on, through hishel
            return response
        asked = Request(request.method, str(request.url), _internal_headers(request.headers))
        state = await self._look_up(key, asked)
        filling = None
        if isinstance(state, CacheMiss | NeedRevalidation) and asked.method in _FILLED and key not in self._filling:
            filling = self._filling[key] = asyncio.Event()
        try:
            return await self._follow(state, request, asked, key, proceed)
        finally:
            if filling is not None:
                del self._filling[key]
                self._fills += 1
                filling.set()

    async def _look_up(self, key: str, asked: Request) -> AnyState:
        """
        What the stored entries allow. A miss while another call of this process fills the same
        key waits for it, once, and looks again: with a storage that answers slowly (SQLite),
        calls that looked before the first one stored would otherwise all go upstream.
        """
        fills = self._fills
        entries = await self._entries(key, asked)
        state: AnyState = IdleClient(options=_OPTIONS).next(asked, entries)
        if isinstance(state, CacheMiss | NeedRevalidation) and asked.method in _FILLED:
            filling = self._filling.get(key)
            if filling is not None:
                await filling.wait()
            if filling is not None or self._fills != fills:
                entries = await self._entries(key, asked)
                state = IdleClient(options=_OPTIONS).next(asked, entries)
        return state

    async def _entries(self, key: str, asked: Request) -> list[Entry]:
        entries = await self.storage.get_entries(key)
        if entries and "authorization" in asked.headers:
            entries = [entry for entry in entries if allows_shared_reuse(entry.response.headers)]
        return entries

    async def _follow(
        self,
        state: AnyState,
        request: httpx.Request,
        asked: Request,
        key: str,
        proceed: Proceed,
    ) -> httpx.Response:
        """hishel's state machine, from `state` to the answer, with the pipeline as its network."""
        upstream: httpx.Response | None = None
        while True:
            if isinstance(state, FromCache):
                self.counts["revalidated" if upstream is not None else "hits"] += 1
                return await _answer(state.entry, request)
            # A call that joined another's writes nothing: the one it joined does.
            joined = upstream is not None and bool(upstream.extensions.get(COALESCED_EXTENSION))
            if isinstance(state, CacheMiss):
                self.counts["misses"] += 1
                upstream = await proceed(request)
                if asked.method in _FILLED and not reusable(upstream.headers):
                    await self._unstorable(key)
                    return upstream  # nothing to store, nothing to invalidate (a safe method)
                state = state.next(_internal_response(upstream))
            elif isinstance(state, NeedRevalidation):
                upstream, stale = await self._revalidate(request, state, proceed)
                if stale is not None:
                    return stale
                state = state.next(_internal_response(upstream))
            elif isinstance(state, NeedToBeUpdated):
                for updated in state.updating_entries if not joined else ():
                    await self.storage.update_headers(updated.id, updated.response.headers)
                state = state.next()
            elif isinstance(state, InvalidateEntries):
                for entry_id in state.entry_ids:
                    await self.storage.remove_entry(entry_id)
                state = state.next()
            else:
                assert isinstance(state, StoreAndUse | CouldNotBeStored)
                assert upstream is not None
                if isinstance(state, StoreAndUse) and not joined and reusable(upstream.headers):
                    await self._store(asked, state.response, key)
                return upstream

    async def _revalidate(
        self, request: httpx.Request, state: NeedRevalidation, proceed: Proceed
    ) -> tuple[httpx.Response, httpx.Response | None]:
        """The conditional call's response; or, when it failed, a stale one allowed on error."""
        conditional = request.headers.copy()
        for name in ("if-none-match", "if-modified-since"):
            value = state.request.headers.get(name)
            if value is not None:
                conditional[name] = value
        sent = httpx.Request(
            request.method, request.url, headers=conditional, stream=request.stream, extensions=request.extensions
        )
        try:
            upstream = await proceed(sent)
        except httpx.TransportError:  # refusals too: the breaker, a rate limit, the deadline
            stale = await self._stale(state, request)
            if stale is None:
                raise
            return stale, stale
        upstream.request = request  # the caller's, not the conditional one
        if upstream.status_code in ERROR_STATUSES:
            stale = await self._stale(state, request)
            if stale is not None:
                return upstream, stale
        return upstream, None

    async def _stale(self, state: NeedRevalidation, request: httpx.Request) -> httpx.Response | None:
        now = self._wall_clock()
        for entry in state.revalidating_entries:
            vary = entry.response.headers.get("vary")
            if _same_variant(entry.request, state.original_request, vary) and stale_if_error_allows(
                entry.response.headers, now
            ):
                self.counts["stale_if_error"] += 1
                return await _answer(entry, request)
        return None

    async def _unstorable(self, key: str) -> None:
        """
        Look `key` up no more while nothing is stored for it: in memory only, where this process
        sees every store (a SQLite file is shared with other processes).
        """
        if isinstance(self.storage, MemoryStorage) and not await self.storage.get_entries(key):
            if len(self._unstored) >= _UNSTORED_KEPT:
                self._unstored.clear()
            self._unstored.add(key)

    async def _store(self, asked: Request, response: Response, key: str) -> None:
        self._unstored.discard(key)
        entry = await self.storage.create_entry(asked, response, key)
        assert isinstance(entry.response.stream, AsyncIterator)
        async for _ in entry.response.stream:  # reading it through is what saves it
            pass
        self.counts["stored"] += 1
        vary = response.headers.get("vary")
        # The entries stored now, not those this call saw when it looked: calls that went
        # upstream together each store, and each must replace the others' older entries.
        for old in await self.storage.get_entries(key):
            if old.id != entry.id and old.request.method == asked.method and _same_variant(old.request, asked, vary):
                await self.storage.remove_entry(old.id)  # superseded: one entry per variant

    async def aclose(self) -> None:
        """Close the storage (a SQLite connection)."""
        await self.storage.close()

    def status(self) -> dict[str, object]:
        """The cache now: its storage, entries and bytes (in memory), counts since start."""
        status: dict[str, object] = {"storage": self.config.storage, **self.counts}
        if isinstance(self.storage, MemoryStorage):
            status.update(entries=len(self.storage), bytes=self.storage.bytes, evicted=self.storage.evicted)
        return status


def _internal_headers(headers: httpx.Headers) -> Headers:
    grouped: dict[str, list[str]] = {}
    for name, value in headers.multi_items():
        grouped.setdefault(name, []).append(value)
    grouped.pop("transfer-encoding", None)
    return Headers(grouped)


def _internal_response(response: httpx.Response) -> Response:
    """hishel's view of an upstream response whose body was read (and decoded) by the attempt."""
    # The headers match the body already: the attempt took the codings it decoded (and the
    # Content-Length they had) off them (`_safety/size_cap.py`).
    headers = _internal_headers(response.headers)
    if "date" not in headers:
        headers["date"] = email.utils.formatdate(usegmt=True)
    return Response(status_code=response.status_code, headers=headers, stream=once(response.content))


def _same_variant(stored: Request, asked: Request, vary: str | None) -> bool:
    """Whether `asked` selects the same variant as `stored` under `Vary` (`*` never does)."""
    names = [name.strip().lower() for name in (vary or "").split(",") if name.strip()]
    return "*" not in names and all(stored.headers.get(name) == asked.headers.get(name) for name in names)


async def _answer(entry: Entry, request: httpx.Request) -> httpx.Response:
    """The caller's own response from a stored entry."""
    assert isinstance(entry.response.stream, AsyncIterator)
    body = b"".join([chunk async for chunk in entry.response.stream])
    stored = entry.response.headers
    headers = [(name.encode(), value.encode()) for name in stored for value in stored.get_list(name) or ()]
    return read_response(entry.response.status_code, headers, body, request, {FROM_CACHE_EXTENSION: True})
