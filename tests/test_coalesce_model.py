"""The coalescer against a reference model: callers join, leave and are answered in any order."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fastapi_retry_http._strategies.coalesce import COALESCED_EXTENSION, Coalescer

URLS = st.sampled_from(["http://x/a", "http://x/b", "http://x/c"])
MAX_WAITING = 6


class CoalescerMachine(RuleBasedStateMachine):
    """
    The upstream is a future per shared call that the test resolves (or fails). The model:
    per URL, the callers waiting on its shared call; the number of upstream calls made; and,
    for every caller, what it must end with.
    """

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.coalescer = Coalescer("model", max_waiting=MAX_WAITING)
        self.made: list[asyncio.Future[httpx.Response]] = []  # every upstream call, in order
        self.flights: dict[str, asyncio.Future[httpx.Response]] = {}  # the shared call of each URL
        self.calls_made = 0
        self.cancelled_upstream = 0
        self.waiting: dict[str, list[asyncio.Task[httpx.Response]]] = {}
        self.alone: list[asyncio.Task[httpx.Response]] = []  # sent on their own, past the bound
        self.answers = 0

    def teardown(self) -> None:
        for task in [*self.alone, *(t for tasks in self.waiting.values() for t in tasks)]:
            task.cancel()
        self.turns()
        self.loop.close()

    def turns(self) -> None:
        async def settle() -> None:
            for _ in range(10):
                await asyncio.sleep(0)

        self.loop.run_until_complete(settle())

    async def proceed(self, request: httpx.Request) -> httpx.Response:
        self.calls_made += 1
        answer: asyncio.Future[httpx.Response] = self.loop.create_future()
        self.made.append(answer)
        try:
            return await answer
        except asyncio.CancelledError:
            self.cancelled_upstream += 1
            raise

    def pending(self) -> int:
        return sum(len(tasks) for tasks in self.waiting.values())

    @rule(url=URLS)
    def call(self, url: str) -> None:
        past_bound = self.pending() >= MAX_WAITING
        calls_before = self.calls_made
        new_flight = not self.waiting.get(url)
        task = self.loop.create_task(self.coalescer.around(httpx.Request("GET", url), self.proceed))
        self.turns()
        if past_bound:
            self.alone.append(task)
            assert self.calls_made == calls_before + 1
        else:
            self.waiting.setdefault(url, []).append(task)
            assert self.calls_made == calls_before + (1 if new_flight else 0)
            if new_flight:
                self.flights[url] = self.made[-1]

    @precondition(lambda self: any(self.waiting.values()))
    @rule(data=st.data())
    def leave(self, data: st.DataObject) -> None:
        url = data.draw(st.sampled_from(sorted(u for u, tasks in self.waiting.items() if tasks)))
        task = data.draw(st.sampled_from(self.waiting[url]))
        cancelled_before = self.cancelled_upstream
        task.cancel()
        self.turns()
        self.waiting[url].remove(task)
        assert task.cancelled()
        # The shared call is cancelled exactly when its last caller has left.
        assert self.cancelled_upstream == cancelled_before + (0 if self.waiting[url] else 1)
        if not self.waiting[url]:
            assert self.flights.pop(url).cancelled()

    @precondition(lambda self: any(self.waiting.values()))
    @rule(data=st.data(), fail=st.booleans())
    def answer(self, data: st.DataObject, fail: bool) -> None:
        url = data.draw(st.sampled_from(sorted(u for u, tasks in self.waiting.items() if tasks)))
        shared = self.flights.pop(url)
        self.answers += 1
        if fail:
            shared.set_exception(httpx.ConnectError(f"down {self.answers}"))
        else:
            shared.set_result(httpx.Response(200, content=str(self.answers).encode()))
        self.turns()
        tasks, self.waiting[url] = self.waiting[url], []
        outcomes: list[Any] = [task.exception() or task.result() for task in tasks]
        if fail:
            assert all(str(outcome) == f"down {self.answers}" for outcome in outcomes)
        else:
            assert all(outcome.content == str(self.answers).encode() for outcome in outcomes)
            assert len({id(outcome) for outcome in outcomes}) == len(outcomes)
            assert [bool(o.extensions.get(COALESCED_EXTENSION)) for o in outcomes].count(False) <= 1

    @invariant()
    def status_matches_the_model(self) -> None:
        status = self.coalescer.status()
        assert status["waiting"] == self.pending()
        assert status["in_flight"] == sum(1 for tasks in self.waiting.values() if tasks)
        assert status["overflowed"] == len(self.alone)


TestCoalescer = CoalescerMachine.TestCase
TestCoalescer.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
