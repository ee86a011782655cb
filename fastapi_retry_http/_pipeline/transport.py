"""
`RetryTransport`: the pipeline every request of every client goes through.

Each attempt passes the same stages, in this order:

1. gates (`gates.Gate`): the retry budget counts the request; a refusal ends the call
2. send (`send.Sender`): within the deadline, shielded where the backend needs it, body read
3. classify (`policy.RetryPolicy`): a success, a failure to return, or one to retry
4. record: every gate learns the outcome
5. decide (`decisions.Decisions`, run by tenacity in `engine`): wait, or stop and say why;
   a retry asks the gates before its wait, so a refused retry costs no waiting
6. event (`events.Instruments`): once the attempt's fate is known, if anyone listens

The first attempt runs without tenacity (65-100 us saved per call); only a retryable one
hands over to the engine.
"""

from __future__ import annotations

import asyncio
import functools
import random as _random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Final, Unpack

import httpx

from .. import _clock
from .._safety.headers import header_problem
from .._stores.memory import MemoryStore, StateStore
from .._strategies import Context, StrategyOptions, build
from .._strategies.breaker import BreakerGate
from .._strategies.budget import DEFAULT_BUDGET, RetryBudget
from ..exceptions import CircuitOpenError, ClientClosedError, DeadlineExceeded
from . import engine, hedging
from .admission import Waiting
from .attempts import Call, Outcome, replayable
from .decisions import Decisions, event, final_kind, refused
from .events import Instrument, Instruments, log_gave_up
from .policy import RetryPolicy
from .send import Sender
from .strategy import CallStrategy, Gate, Proceed, Rechecking, Refusal

__all__ = ["ATTEMPTS_EXTENSION", "POLICY_EXTENSION", "RetryTransport"]

#: `request.extensions` key for a per-request `RetryPolicy`.
POLICY_EXTENSION: Final = "fastapi_retry_http.retry"
#: `response.extensions` key: how many attempts a retried request took (absent: one).
ATTEMPTS_EXTENSION: Final = "fastapi_retry_http.attempts"

SleepFn = Callable[[float], Awaitable[None]]


class RetryTransport(httpx.AsyncBaseTransport):
    """
    An httpx transport that retries the requests of the transport it wraps.

    Use it directly to give any `httpx.AsyncClient` the library's retry rules:

    ```python
    client = httpx.AsyncClient(transport=RetryTransport(httpx.AsyncHTTPTransport(), RetryPolicy()))
    ```

    A request may carry its own policy in `request.extensions["fastapi_retry_http.retry"]`.
    Bodies are read inside the attempt, so a failure while reading one is retried too; a
    request with `extensions["fastapi_retry_http.stream"] = True` is returned at its headers
    instead (what `Client.stream()` does).

    Args:
        inner: The transport that sends each attempt; `httpx.AsyncHTTPTransport()` if omitted.
            It may be replaced later (`transport.inner = ...`), in tests for example.
        policy: How to retry; `RetryPolicy()` if omitted.
        name: The client name written in retry log records and events.
        max_response_bytes: Refuse bodies larger than this (decoded), read inside the attempt.
        sleep: Awaited for each backoff wait (default `asyncio.sleep`); tests pass a recorder.
        clock: Monotonic seconds, used for the deadline (default `time.monotonic`, plus the
            waits skipped in no-sleep mode).
        random: Draws in [0, 1) for the jitter (default `random.random`).
        budget: Caps retries at a share of recent requests
            ([`RetryBudget`][fastapi_retry_http.RetryBudget]); `None` for no cap.
        store: Where the budget and the breaker keep their counts; this transport's own by default.
        gates: More gates, asked after the budget before every attempt.
        instrumentation: Objects with `on_attempt(event)`, told about every attempt.
        **options: The client's resilience options, by the names `Client` gives them, each
            `None` (off) by default: `circuit_breaker` stops sending while the upstream fails
            most attempts ([`CircuitBreaker`][fastapi_retry_http.CircuitBreaker]);
            `rate_limit` gives every attempt a slot and obeys the upstream's quota headers
            ([`RateLimit`][fastapi_retry_http.RateLimit]).
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport | None = None,
        policy: RetryPolicy | None = None,
        *,
        name: str = "",
        max_response_bytes: int | None = None,
        sleep: SleepFn | None = None,
        clock: Callable[[], float] = _clock.monotonic,
        random: Callable[[], float] = _random.random,
        budget: RetryBudget | None = DEFAULT_BUDGET,
        store: StateStore | None = None,
        gates: Iterable[Gate] = (),
        instrumentation: Iterable[Instrument] = (),
        **options: Unpack[StrategyOptions],
    ) -> None:
        self._sender = Sender(inner if inner is not None else httpx.AsyncHTTPTransport(), clock, max_response_bytes)
        self.policy = policy if policy is not None else RetryPolicy()
        self.name = name
        self._sleep = sleep
        self._clock = clock
        self._random = random
        self._instruments = Instruments(instrumentation)
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
        self._gates: tuple[Gate, ...] = tuple(strategies.attempt)
        self._rechecking = tuple(gate for gate in self._gates if isinstance(gate, Rechecking))
        self._sender.interceptors = tuple(strategies.send)
        self._around = _chain(strategies.around, self._call) if strategies.around else None
        self._scoped = self._instruments.scoped  # instruments told before each attempt (tracing)
        self._closed = False
        self._waits: set[asyncio.Future[None]] = set()

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
        await self.inner.aclose()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` through the inner transport, retrying it by its policy."""
        self._check_open()
        problem = header_problem(request.headers.raw)
        if problem is not None:
            # Before any I/O, whatever the backend, and without the value.
            raise httpx.LocalProtocolError(problem, request=request)
        if self._around:
            return await self._around(request)
        return await self._call(request)

    async def _call(self, request: httpx.Request) -> httpx.Response:
        """The call: its deadline, then its attempts (retried or hedged)."""
        policy: RetryPolicy = request.extensions.get(POLICY_EXTENSION, self.policy)
        deadline_at = None if policy.deadline is None else self._clock() + policy.deadline
        retries = policy.attempts > 1 and replayable(request.stream)
        call = Call(request, policy, self.name, deadline_at, retries)
        refusal = self._admit(call)
        if refusal is not None and not isinstance(refusal, Refusal):
            refusal = await refusal.wait()
        if refusal is not None and refusal.error is not None:
            if self._instruments:
                self._instruments.emit(refused(call, refusal.error, refusal.reason))
            raise refusal.error
        if policy.hedge_after is not None and retries and policy.may_resend(request):
            outcome, stopped = await hedging.race(
                call, lambda lost: self._attempt(call, lost), lambda: self._admit(call)
            )
            self._final_event(call, outcome, stopped)
        else:
            outcome = await self._attempt(call)
            if not outcome.retryable:
                self._final_event(call, outcome)
                return outcome.unwrap()
            decisions = Decisions(call, self._admit, self._instruments, self._clock, self._random)
            try:
                outcome = await engine.retry(outcome, lambda: self._retry(call), decisions, self._wait)
            finally:
                if call.pending is not None:  # cancelled during the backoff wait
                    call.pending.abandon()
            stopped = decisions.stopped
            if stopped is None:
                self._final_event(call, outcome)
        if outcome.error is not None:
            # The original error, not wrapped; the note tells how far the retries got.
            spent = " (retry budget spent)" if stopped == "budget" else ""
            outcome.error.add_note(
                f"fastapi_retry_http: raised by attempt {call.attempt} of at most {policy.attempts}{spent}."
            )
            raise outcome.error
        response = outcome.unwrap()
        response.extensions[ATTEMPTS_EXTENSION] = call.attempt
        return response

    async def _attempt(self, call: Call, lost: Callable[[], bool] | None = None) -> Outcome:
        """One attempt through the send, classify and record stages."""
        call.attempt += 1
        number = call.attempt
        started = time.perf_counter() if self._instruments else 0.0
        request, policy = call.request, call.policy
        scopes = self._instruments.start(request, number, call.client) if self._scoped else None
        try:
            response = await self._sender.send(call)
        except Exception as error:
            outcome = Outcome(error=error, retryable=call.retries and policy.retries_error(request, error))
            if isinstance(error, DeadlineExceeded):
                # The deadline ended the call inside an attempt: a give-up, logged as the others are.
                log_gave_up(call.client, request, number, policy.attempts, outcome.reason, "deadline")
        except asyncio.CancelledError as gone:
            # Never retried, never wrapped; the gates and the instruments hear of it.
            if scopes is not None:
                scopes.end(None, gone)
            cancelled = Outcome(cancelled=True, attempt=number)
            for gate in self._gates:
                gate.record(call, cancelled)
            if self._instruments:
                cancelled.duration = time.perf_counter() - started
                kind = "hedge_lost" if lost is not None and lost() else "cancelled"
                self._instruments.emit(event(call, cancelled, kind))
            raise
        else:
            retryable = call.retries and policy.retries_status(request, response.status_code)
            outcome = Outcome(response=response, retryable=retryable)
        outcome.attempt = number
        if self._instruments:
            outcome.duration = time.perf_counter() - started
            if scopes is not None:
                scopes.end(outcome.response, outcome.error)
        for gate in self._gates:
            gate.record(call, outcome)
        return outcome

    def _admit(self, call: Call, start: int = 0) -> Refusal | Waiting | None:
        """
        Ask every strategy, in order, whether another attempt of `call` may go. The answer is
        at once unless a strategy waits (a rate limit, a concurrency limit): then a `Waiting`.
        A refusal is told to the strategies that had admitted the attempt.
        """
        gates = self._gates
        for index in range(start, len(gates)):
            answer = gates[index].admit(call)
            if answer is None:
                continue
            if isinstance(answer, Refusal):
                self._release(call, index, Outcome(refusal=answer, attempt=call.attempt + 1))
                return answer
            return Waiting(self._admit, self._release, call, index, answer)
        return None

    def _release(self, call: Call, index: int, outcome: Outcome) -> None:
        """Tell the strategies before `index`, which admitted the attempt, that it was never sent."""
        for gate in self._gates[:index]:
            gate.record(call, outcome)

    async def _admitted(self, call: Call) -> Refusal | None:
        answer = self._admit(call)
        return answer if answer is None or isinstance(answer, Refusal) else await answer.wait()

    def _final_event(self, call: Call, outcome: Outcome, stopped: str | None = None) -> None:
        if not self._instruments:
            return
        if stopped is not None:
            self._instruments.emit(event(call, outcome, "returned", reason=stopped))  # type: ignore[arg-type]
        elif isinstance(outcome.error, DeadlineExceeded):
            self._instruments.emit(event(call, outcome, "returned", reason="deadline"))
        elif isinstance(outcome.error, CircuitOpenError):
            self._instruments.emit(event(call, outcome, "returned", reason="breaker"))
        else:
            self._instruments.emit(event(call, outcome, final_kind(call, outcome)))

    async def _retry(self, call: Call) -> Outcome:
        self._check_open()
        pending, call.pending = call.pending, None
        if pending is not None:
            # A strategy admitted the retry on condition of a wait (a rate limit's slot).
            refusal = await pending.wait()
            if refusal is not None:
                return Outcome(error=refusal.error, attempt=call.attempt, refusal=refusal)
        for gate in self._rechecking:
            refusal = gate.ready(call)
            if refusal is not None and refusal.error is not None:
                # The breaker opened during the wait: nothing more is sent.
                return Outcome(error=refusal.error, attempt=call.attempt)
        return await self._attempt(call)

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
