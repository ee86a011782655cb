"""
The cache's storages (part of the `[cache]` extra, imported by `fastapi_retry_http.cache` alone,
as hishel is): a bounded one in memory, and hishel's SQLite one for processes sharing a file.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

from hishel import AsyncBaseStorage, AsyncSqliteStorage, Entry, Headers, Request, Response

from ._strategies.caching import HttpCache

__all__ = ["MemoryStorage", "once", "storage_for"]


async def once(body: bytes) -> AsyncIterator[bytes]:
    yield body


@dataclass(slots=True)
class _Stored:
    key: str
    request: Request
    response: Response  # its stream is `body`, handed out anew on every lookup
    body: bytes


class MemoryStorage(AsyncBaseStorage):
    """
    A hishel storage in this process's memory, bounded by entries and bytes (least recently
    used evicted first). Entries never expire by time here: RFC 9111 decides what a stored
    response may still answer, and a stale one is still worth revalidating.
    """

    def __init__(self, max_entries: int, max_bytes: int, max_entry_bytes: int) -> None:
        super().__init__(max_stream_size=max_entry_bytes)
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[uuid.UUID, _Stored] = OrderedDict()
        self._by_key: dict[str, list[uuid.UUID]] = {}
        #: Bytes of stored bodies now.
        self.bytes = 0
        #: Entries evicted to keep within the bounds, since start.
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def create_entry(
        self, request: Request, response: Response, key: str, *, ttl: float | None = None, tti: float | None = None
    ) -> Entry:
        """The entry, kept once its body has been read through the returned stream."""
        entry_id = uuid.uuid4()
        stream = self._saving(entry_id, key, request, response)
        return Entry(id=entry_id, request=request, response=replace(response, stream=stream))

    async def _saving(
        self, entry_id: uuid.UUID, key: str, request: Request, response: Response
    ) -> AsyncIterator[bytes]:
        chunks: list[bytes] = []
        assert isinstance(response.stream, AsyncIterator)
        async for chunk in response.stream:
            chunks.append(chunk)
            yield chunk
        body = b"".join(chunks)
        if self.max_stream_size is None or len(body) <= self.max_stream_size:
            self._put(entry_id, _Stored(key, request, replace(response, stream=None), body))

    async def get_entries(self, key: str) -> list[Entry]:
        """The entries stored under `key`, each now the most recently used."""
        found = []
        for entry_id in self._by_key.get(key, ()):
            stored = self._entries[entry_id]
            self._entries.move_to_end(entry_id)
            response = replace(stored.response, stream=once(stored.body))
            found.append(Entry(id=entry_id, request=stored.request, response=response))
        return found

    async def update_headers(self, id: uuid.UUID, headers: Headers) -> None:
        """Replace an entry's response headers (a 304 refreshed it); nothing if it is gone."""
        stored = self._entries.get(id)
        if stored is not None:
            stored.response = replace(stored.response, headers=headers)

    async def remove_entry(self, id: uuid.UUID) -> None:
        """Forget an entry; nothing if it is gone."""
        self._forget(id)

    def _put(self, entry_id: uuid.UUID, stored: _Stored) -> None:
        self._entries[entry_id] = stored
        self._by_key.setdefault(stored.key, []).append(entry_id)
        self.bytes += len(stored.body)
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            self._forget(next(iter(self._entries)))
            self.evicted += 1

    def _forget(self, entry_id: uuid.UUID) -> None:
        stored = self._entries.pop(entry_id, None)
        if stored is None:
            return
        self.bytes -= len(stored.body)
        ids = self._by_key[stored.key]
        ids.remove(entry_id)
        if not ids:
            del self._by_key[stored.key]


def storage_for(config: HttpCache) -> AsyncBaseStorage:
    """The hishel storage `config` names."""
    if config.storage == "sqlite":
        assert config.path is not None  # HttpCache checked it
        # Absolute: hishel puts a bare file name under ./.cache/hishel of the working directory.
        return AsyncSqliteStorage(
            database_path=Path(config.path).resolve(), max_size=config.max_bytes, max_stream_size=config.max_entry_bytes
        )
    return MemoryStorage(config.max_entries, config.max_bytes, config.max_entry_bytes)
