"""The cache's in-memory storage against a reference model: LRU order, both bounds, one key's entries."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator

from hishel import Headers, Request, Response
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from fastapi_retry_http.cache import MemoryStorage

MAX_ENTRIES, MAX_BYTES, MAX_ENTRY_BYTES = 4, 40, 15
KEYS = st.sampled_from(["a", "b", "c", "d", "e", "f"])


async def _body(body: bytes) -> AsyncIterator[bytes]:
    yield body


class MemoryStorageMachine(RuleBasedStateMachine):
    """Every entry is one `(key, body)`; the model keeps them in least-recently-used order."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.storage = MemoryStorage(MAX_ENTRIES, MAX_BYTES, MAX_ENTRY_BYTES)
        self.model: OrderedDict[object, tuple[str, bytes]] = OrderedDict()

    def teardown(self) -> None:
        self.loop.close()

    @rule(key=KEYS, size=st.integers(0, 20))
    def store(self, key: str, size: int) -> None:
        body = b"x" * size

        async def create() -> object:
            request = Request("GET", f"http://x/{key}", Headers({}))
            response = Response(200, Headers({}), stream=_body(body))
            entry = await self.storage.create_entry(request, response, key)
            assert isinstance(entry.response.stream, AsyncIterator)
            assert b"".join([chunk async for chunk in entry.response.stream]) == body
            return entry.id

        entry_id = self.loop.run_until_complete(create())
        if size <= MAX_ENTRY_BYTES:
            self.model[entry_id] = (key, body)
            while len(self.model) > MAX_ENTRIES or sum(len(b) for _, b in self.model.values()) > MAX_BYTES:
                self.model.popitem(last=False)

    @rule(key=KEYS)
    def look_up(self, key: str) -> None:
        async def read() -> list[tuple[object, bytes]]:
            found: list[tuple[object, bytes]] = []
            for entry in await self.storage.get_entries(key):
                assert isinstance(entry.response.stream, AsyncIterator)
                found.append((entry.id, b"".join([chunk async for chunk in entry.response.stream])))
            return found

        expected = [(entry_id, body) for entry_id, (k, body) in self.model.items() if k == key]
        assert self.loop.run_until_complete(read()) == expected
        for entry_id, _ in expected:
            self.model.move_to_end(entry_id)

    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        if not self.model:
            return
        entry_id = data.draw(st.sampled_from(list(self.model)))
        self.loop.run_until_complete(self.storage.remove_entry(entry_id))  # type: ignore[arg-type]
        del self.model[entry_id]

    @invariant()
    def within_bounds_and_equal_to_the_model(self) -> None:
        assert len(self.storage) == len(self.model) <= MAX_ENTRIES
        assert self.storage.bytes == sum(len(body) for _, body in self.model.values()) <= MAX_BYTES


TestMemoryStorage = MemoryStorageMachine.TestCase
TestMemoryStorage.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
