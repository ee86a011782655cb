"""
`RetryTransport`: the pipeline every request of every client goes through.

A call passes, in this order (docs/architecture.md says why):

1. the strategies around the call (`strategy.CallStrategy`: cache, coalescing), which may
   answer without any attempt;
2. the call's deadline and options (`attempts.Call`, `attempts.CallOptions`);
3. its attempts, each sent by the one `executor.Executor`: the per-attempt strategies
   (breaker, budget, throttle, your gates, rate limit, concurrency), the send (interceptors
   such as chaos, the deadline and attempt timeout, the backend, the body read), the
   classification (`policy.RetryPolicy`), the strategies told the outcome, one event;
4. after a retryable attempt, either hedging (`hedging.Race`) or the retry engine
   (`engine`, driven by tenacity with `decisions.Decisions`): wait, or stop and say why.

The first attempt runs without tenacity (65-100 us a call); a retryable one hands over.
"""

from __future__ import annotations

import asyncio
import functools
import random as _random
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, Unpack, cast

import httpx

from .. import _clock
from .._backends import default_transport
from .._safety.headers import header_problem
from .._safety.redirects import guard_hop
from .._safety.size_cap import DEFAULT_MAX_RESPONSE_BYTES
from .._stores.memory import MemoryStore, StateStore
from .._strategies import Context, StrategyOptions, build, check
from .._strategies.breaker import BreakerGate
from .._strategies.budget import DEFAULT_BUDGET, RetryBudget
from .._strategies.latency import HedgeBudget, HedgePacer, LatencyStrategy
from ..exceptions import ClientClosedError
from . import engine
from .attempts import Call, Outcome, call_options, replayable
from .decisions import Decisions
from .events import Instrument, Instruments
from .executor import ATTEMPTS_EXTENSION, Executor
from .hedging import Race, hedge_timers
from .httpx_parts import header_list
from .policy import IDEMPOTENT_METHODS, RetryPolicy
from .send import Sender
from .strategy import CallStrategy, Gate, Proceed, Rechecking

__all__ = ["ATTEMPTS_EXTENSION", "RetryTransport"]

SleepFn = Callable[[float], Awaitable[None]]


class RetryTransport(httpx.AsyncBaseTransport):
    """
    An httpx transport that retries the requests of the transport it wraps.

    Use it directly to give any `httpx.AsyncClient` the library's retry rules:

    ```python
    client = httpx.AsyncClient(transport=RetryTransport(httpx.AsyncHTTPTransport(), RetryPolicy()))
    ```

    A request may carry options of its own, a
    [`CallOptions`][fastapi_retry_http.CallOptions] in
    `request.extensions["fastapi_retry_http.options"]`: its own policy, or `stream=True` to
    get the response at its headers (what `Client.stream()` does). Otherwise bodies are read
    inside the attempt, so a failure while reading one is retried too.

    Args:
        inner: The transport that sends each attempt; the default backend (as a `Client`
            builds it) if omitted.
            It may be replaced later (`transport.inner = ...`), in tests for example.
        policy: How to retry; `RetryPolicy()` if omitted.
        name: The client name written in retry log records and events.
        max_response_bytes: Refuse bodies larger than this (decoded), read inside the attempt;
            32 MiB for buffered calls by default (as a `Client`), `None` for no cap.
        sleep: Awaited for each backoff wait (default `asyncio.sleep`); tests pass a recorder.
        clock: Monotonic seconds, used for the deadline (default `time.monotonic`, plus the
            waits skipped in no-sleep mode).
        random: Draws in [0, 1) for the jitter (default `random.random`).
        budget: Caps retries at a share of recent requests
            ([`RetryBudget`][fastapi_retry_http.RetryBudget]); `None` for no cap.
        store: Where the budget and the breaker keep their counts; this transport's own by default.
        gates: More strategies ([`Strategy`][fastapi_retry_http.Strategy]), asked after the
            budget and the throttle before every attempt.
        instrumentation: Objects with `on_attempt(event)`, told about every attempt.
        **options: The resilience options, by the names of `Client`'s keywords (each off
            unless given): `circuit_breaker`
            ([`CircuitBreaker`][fastapi_retry_http.CircuitBreaker]), `retry_budget`, `chaos`
            ([`Chaos`][fastapi_retry_http.chaos.Chaos]), and the others `Client` documents.
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport | None = None,
        policy: RetryPolicy | None = None,
        *,
        name: str = "",
        max_response_bytes: int | None = DEFAULT_MAX_RESPONSE_BYTES,
        sleep: SleepFn | None = None,
        clock: Callable[[], float] = _clock.monotonic,
        random: Callable[[], float] = _random.random,
        budget: RetryBudget | None = DEFAULT_BUDGET,
        store: StateStore | None = None,
        gates: Iterable[Gate] = (),
        instrumentation: Iterable[Instrument] = (),
        **options: Unpack[StrategyOptions],
    ) -> None:
        check(options)
        # A bare RetryTransport gets what a Client gets: the default backend (safe under
        # cancellation) and the default size cap.
        self._sender = Sender(inner if inner is not None else default_transport(), clock, max_response_bytes)
        self.policy = policy if policy is not None else RetryPolicy()
        self.name = name
        self._sleep = sleep
        self._clock = clock
        self._random = random
        self._instruments = Instruments(instrumentation)
        self._told = bool(self._instruments)  # asked on every call: an attribute, not a method
        if budget is not DEFAULT_BUDGET:  # the Round 2 name of `retry_budget`
            options["retry_budget"] = budget
        context = Context(
            name,
            store if store is not None else MemoryStore(),
            clock,
            random,
            self._wait,
            self._instruments,
        )
        #: The client's strategies by place, in pipeline order (see `_strategies`).
        self.strategies = strategies = build(options, context, tuple(gates))
        #: The circuit breaker's gate, when the client has one (its `status()` is for health checks).
        self.breaker: BreakerGate | None = strategies.by_option.get("circuit_breaker")
        self._sender.interceptors = tuple(strategies.send)
        #: Sends every attempt: the strategies, the send, the classification and the events.
        self.executor = executor = Executor(self._sender, strategies.attempt, self._instruments)
        self._rechecking = tuple(gate for gate in executor.gates if isinstance(gate, Rechecking))
        #: Hedged calls' delays and hedge budget; the latency estimate when a policy hedges at a percentile.
        # Real time (not the deadline's clock), read as the executor times attempts: read once.
        self.hedging = HedgePacer(time.perf_counter, self._learning)
        self._hedge_timers = hedge_timers()
        self._paced: RetryPolicy | None = None  # the last policy a call hedged by: `_pace` is its pace
        self._pace = HedgeBudget(0.0)
        if self.policy.hedge_after is not None:
            strategies.by_option["hedging"] = self.hedging  # its status, for the operators' view
            if self.policy.hedge_percentile is not None:
                self.hedging.learn()  # from the first attempt on
        self._around = _chain(strategies.around, self._call) if strategies.around else None
        self._closed = False
        self._waits: set[asyncio.Future[None]] = set()
        self._checked_headers: list[tuple[bytes, bytes, bytes]] = []

    @property
    def instrumentation(self) -> tuple[Instrument, ...]:
        """The instruments told about this transport's attempts (the dashboard finds its log here)."""
        return tuple(self._instruments)

    @property
    def inner(self) -> httpx.AsyncBaseTransport:
        """The transport each attempt is sent through."""
        return self._sender.inner

    @inner.setter
    def inner(self, inner: httpx.AsyncBaseTransport) -> None:
        self._sender.inner = inner

    async def aclose(self) -> None:
        """
        Close the inner transport. Nothing is sent afterwards: a call waiting to retry ends at
        once with `ClientClosedError`, and so does any later call.
        """
        self._closed = True
        for wait in list(self._waits):
            wait.cancel()
        self._sender.deadlines.close()
        self._hedge_timers.close()
        await self.inner.aclose()
        for strategy in self.strategies.by_option.values():
            close = getattr(strategy, "aclose", None)  # a strategy holding a resource (the cache's storage)
            if close is not None:
                await close()

    def handle_async_request(self, request: httpx.Request) -> Coroutine[Any, Any, httpx.Response]:
        """Send `request`, retried by its policy: checked at once, the call returned to await."""
        self._check_open()
        listed = header_list(request.headers)
        if listed != self._checked_headers:  # most calls send the headers the last one sent
            problem = header_problem(request.headers.raw)
            if problem is not None:
                # Before any I/O, whatever the backend, and without the value.
                raise httpx.LocalProtocolError(problem, request=request)
            self._checked_headers = list(listed)  # a copy: httpx changes its list in place
        guard_hop(request)
        return cast(Coroutine[Any, Any, httpx.Response], self._around(request)) if self._around else self._call(request)

    def _call(self, request: httpx.Request) -> Coroutine[Any, Any, httpx.Response]:
        """The call: its deadline, then its attempts, hedged or retried (the coroutine to await)."""
        policy = call_options(request).retry or self.policy
        deadline_at = None if policy.deadline is None else self._clock() + policy.deadline
        retries = policy.attempts > 1 and replayable(request.stream)
        call: Call
        race = None
        hedge_after = policy.hedge_after
        # An idempotent method needs no call of the policy's `may_resend` (every hedged call asks).
        if hedge_after is not None and retries and (request.method in IDEMPOTENT_METHODS or policy.may_resend(request)):
            if policy is not self._paced:  # most calls hedge by the client's policy: its pace is kept
                self._paced, self._pace = policy, self.hedging.pace(hedge_after)
            call = race = Race(request, policy, self.name, deadline_at, retries)
        else:
            call = Call(request, policy, self.name, deadline_at, retries)
        if self._told:
            call.started = time.perf_counter()
        # A race's coroutine is the call's own: returned, not awaited here (one frame less).
        return race.run(self.executor, self._pace, self._hedge_timers) if race is not None else self._retried(call)

    async def _retried(self, call: Call) -> httpx.Response:
        """A call whose retryable attempts are retried after a backoff wait (the retry engine)."""
        executor = self.executor
        admission = executor.admit(call)
        if admission is not None:
            await executor.admitted(call, admission)
        outcome = await executor.attempt(call)
        if not outcome.retryable:
            executor.final(call, outcome)
            return outcome.unwrap()
        decisions = Decisions(call, executor.admit, self._instruments, self._clock, self._random)
        try:
            outcome = await engine.retry(outcome, lambda: self._retry(call), decisions, self._wait)
        finally:
            # Cancelled during the backoff wait: what the strategies admitted goes back.
            if call.pending is not None:
                call.pending.abandon()
            elif call.granted:
                executor.unsent(call)
        # Stopped by a decision (the budget, the breaker, the deadline): its event is told already.
        return executor.returned(call, outcome, decisions.stopped, told=decisions.stopped is not None)

    async def _retry(self, call: Call) -> Outcome:
        self._check_open()
        pending, call.pending, call.granted = call.pending, None, False
        if pending is not None:
            # A strategy admitted the retry on condition of a wait (a rate limit's slot).
            refusal = await pending.wait()
            if refusal is not None:
                return Outcome(error=refusal.error, attempt=call.attempt, refusal=refusal)
        for gate in self._rechecking:
            refusal = gate.ready(call)
            if refusal is not None and refusal.error is not None:
                # The breaker opened during the wait: nothing more is sent; slots held go back.
                self.executor.release(
                    call, len(self.executor.gates), Outcome(refusal=refusal, attempt=call.attempt + 1)
                )
                return Outcome(error=refusal.error, attempt=call.attempt)
        return await self.executor.attempt(call)

    def _learning(self, latency: LatencyStrategy) -> None:
        """A policy hedges at a percentile: from now on every attempt is timed and recorded."""
        self.executor.learner = latency  # told of every attempt, after the strategies
        self.strategies.by_option["hedging"] = self.hedging

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError(f"Client {self.name!r} is closed; no request is sent any more.")

    async def _wait(self, seconds: float) -> None:
        """The backoff wait, cut short by `aclose()`."""
        wait = asyncio.ensure_future((self._sleep or _clock.sleep or asyncio.sleep)(seconds))
        self._waits.add(wait)
        try:
            await wait
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._closed and task is not None and not task.cancelling():
                raise ClientClosedError(f"Client {self.name!r} was closed while a call waited to retry.") from None
            raise
        finally:
            self._waits.discard(wait)
            wait.cancel()


def _chain(around: list[CallStrategy], call: Proceed) -> Proceed:
    """`call` wrapped by the call strategies, the first outermost."""
    for strategy in reversed(around):
        call = functools.partial(strategy.around, proceed=call)
    return call
