"""
`RetryTransport`: the one attempt loop every request of every client goes through.

The first attempt runs inline. Building a tenacity `AsyncRetrying` costs 65-100 us per call
even when nothing is retried, so tenacity only takes over once the first attempt failed in a
retryable way: it is then fed that first outcome (no second request is sent for it) and
drives the waits, the stop rules and the later attempts.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final

import httpx
from httpx._multipart import MultipartStream  # replayable: it re-reads its files each time
from tenacity import AsyncRetrying as _AsyncRetrying
from tenacity import RetryCallState as _RetryCallState

from . import _testing_state
from ._body import limit_body
from ._budget import BudgetCounter, RetryBudget
from ._policy import RETRY_AFTER_STATUSES, RetryPolicy, parse_retry_after
from ._redact import url_without_query
from ._urls import header_problem
from .exceptions import ClientClosedError, DeadlineExceeded, ResponseTooLargeError

__all__ = ["RetryTransport"]

logger: Final = logging.getLogger("fastapi_retry_http")

#: `request.extensions` key for a per-request `RetryPolicy`.
POLICY_EXTENSION: Final = "fastapi_retry_http.retry"
#: `request.extensions` key: read the whole body inside the attempt, so that a failure while
#: reading it (reset, truncation, timeout) is retried like any other. `Client` sets it for every
#: request that is not streamed; without it the transport returns at the response headers.
READ_BODY_EXTENSION: Final = "fastapi_retry_http.read_body"

#: `response.extensions` key: how many attempts a retried request took (absent: one).
ATTEMPTS_EXTENSION: Final = "fastapi_retry_http.attempts"

#: How much of a discarded streamed response is read so its connection can be reused; a larger
#: body is cut off by closing the connection instead.
DRAIN_LIMIT: Final = 64 * 1024

#: How many characters of an unusable `Retry-After` value a warning quotes.
RETRY_AFTER_SHOWN: Final = 40

#: The budget every client gets unless told otherwise.
DEFAULT_BUDGET: Final = RetryBudget()

SleepFn = Callable[[float], Awaitable[None]]


class RetryTransport(httpx.AsyncBaseTransport):
    """
    An httpx transport that retries the requests of the transport it wraps.

    Use it directly to give any `httpx.AsyncClient` the library's retry rules:

    ```python
    client = httpx.AsyncClient(transport=RetryTransport(httpx.AsyncHTTPTransport(), RetryPolicy()))
    ```

    A request may carry its own policy in `request.extensions["fastapi_retry_http.retry"]`.

    Args:
        inner: The transport that sends each attempt; `httpx.AsyncHTTPTransport()` if omitted.
        policy: How to retry; `RetryPolicy()` if omitted.
        name: The client name written in retry log records.
        max_response_bytes: Refuse bodies larger than this (decoded), read inside the attempt.
        sleep: Awaited for each backoff wait (default `asyncio.sleep`); tests pass a recorder.
        clock: Monotonic seconds, used for the deadline (default `time.monotonic`, plus the
            waits skipped in no-sleep mode).
        random: Draws in [0, 1) for the jitter (default `random.random`).
        budget: Caps retries at a share of recent requests
            ([`RetryBudget`][fastapi_retry_http.RetryBudget]); `None` for no cap.
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport | None = None,
        policy: RetryPolicy | None = None,
        *,
        name: str = "",
        max_response_bytes: int | None = None,
        sleep: SleepFn | None = None,
        clock: Callable[[], float] = _testing_state.monotonic,
        random: Callable[[], float] = random.random,
        budget: RetryBudget | None = DEFAULT_BUDGET,
    ) -> None:
        self.inner = inner if inner is not None else httpx.AsyncHTTPTransport()
        self.policy = policy if policy is not None else RetryPolicy()
        self.name = name
        self.max_response_bytes = max_response_bytes
        self._sleep = sleep
        self._clock = clock
        self._random = random
        self._deadlines = _Deadlines()
        # httpx's own pool must not see cancellation mid-attempt (see CancelSafeTransport).
        self._shield: Callable[[Coroutine[Any, Any, httpx.Response]], Awaitable[httpx.Response]] | None = getattr(
            self.inner, "shield", None
        )
        self._budget = None if budget is None else BudgetCounter(budget, clock)
        self._budget_warned_at = -math.inf
        self._closed = False
        self._waits: set[asyncio.Future[None]] = set()

    async def aclose(self) -> None:
        """
        Close the inner transport. Nothing is sent afterwards: a call waiting to retry ends at
        once with `ClientClosedError`, and so does any later call.
        """
        self._closed = True
        for wait in list(self._waits):
            wait.cancel()
        self._deadlines.close()
        await self.inner.aclose()

    def _check_open(self, request: httpx.Request) -> None:
        if self._closed:
            raise ClientClosedError(f"Client {self.name!r} is closed; no request is sent any more.")

    async def _wait(self, seconds: float) -> None:
        """The backoff wait, cut short by `aclose()`."""
        wait = asyncio.ensure_future((self._sleep or _testing_state.sleep or asyncio.sleep)(seconds))
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

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` through the inner transport, retrying it by its policy."""
        self._check_open(request)
        problem = header_problem(request.headers.raw)
        if problem is not None:
            # Before any I/O, whatever the backend, and without the value.
            raise httpx.LocalProtocolError(problem, request=request)
        policy: RetryPolicy = request.extensions.get(POLICY_EXTENSION, self.policy)
        now = self._clock()
        if self._budget is not None:
            self._budget.sent(now)
        deadline_at = None if policy.deadline is None else now + policy.deadline
        retryable = policy.attempts > 1 and isinstance(request.stream, httpx.ByteStream | MultipartStream)
        try:
            response = await self._attempt(request, deadline_at)
        except Exception as error:
            # CancelledError is a BaseException: it is never caught here, never retried.
            if not (retryable and policy.retries_error(request, error)):
                raise
            first: _Outcome = _Outcome(error=error)
        else:
            if not (retryable and policy.retries_status(request, response.status_code)):
                return response
            first = _Outcome(response=response)
        return await self._retry(request, policy, deadline_at, first)

    def _sending(self, request: httpx.Request) -> Awaitable[httpx.Response]:
        sending = self._send(request)
        return sending if self._shield is None else self._shield(sending)

    async def _attempt(self, request: httpx.Request, deadline_at: float | None) -> httpx.Response:
        if deadline_at is None:
            return await self._sending(request)
        remaining = deadline_at - self._clock()
        if remaining <= 0:
            raise DeadlineExceeded("The retry deadline passed before the attempt started.", request=request)
        # A slow drip never trips httpx's per-read timeout; the deadline bounds the attempt.
        task = self._deadlines.watch(remaining)
        try:
            return await self._sending(request)
        except asyncio.CancelledError:
            if task in self._deadlines.fired and task.uncancel() == 0:
                raise DeadlineExceeded("The retry deadline passed during the attempt.", request=request) from None
            raise
        finally:
            self._deadlines.unwatch(task)

    async def _send(self, request: httpx.Request) -> httpx.Response:
        started = time.perf_counter()
        response = await self.inner.handle_async_request(request)
        buffered = bool(request.extensions.get(READ_BODY_EXTENSION))
        try:
            limit_body(response, request, self.max_response_bytes, buffered=buffered)
        except ResponseTooLargeError:
            await response.aclose()  # refused on its Content-Length, before reading
            raise
        if buffered:
            # Read (and decode) the body here, inside the attempt: a reset or truncation while
            # reading is then retried like any other failure. httpx finds the content already
            # read and does not read it again.
            try:
                await response.aread()
            finally:
                await response.aclose()
            response.elapsed = datetime.timedelta(seconds=time.perf_counter() - started)
        return response

    async def _retry(
        self, request: httpx.Request, policy: RetryPolicy, deadline_at: float | None, first: _Outcome
    ) -> httpx.Response:
        pending = [first]
        made = 1
        over_budget = False

        async def attempt() -> httpx.Response:
            nonlocal made
            if pending:
                return pending.pop().unwrap()
            self._check_open(request)
            made += 1
            return await self._attempt(request, deadline_at)

        def should_retry(state: _RetryCallState) -> bool:
            outcome = state.outcome
            assert outcome is not None
            if outcome.failed:
                return policy.retries_error(request, outcome.exception())  # type: ignore[arg-type]
            return policy.retries_status(request, outcome.result().status_code)

        def wait(state: _RetryCallState) -> float:
            outcome = state.outcome
            assert outcome is not None
            if state.attempt_number >= policy.attempts:
                return 0.0  # tenacity asks for the wait before it asks stop(); none follows.
            if not outcome.failed:
                delay = _retry_after(outcome.result(), self.name)
                if delay is not None:
                    # Beyond the cap the server asks for more patience than we have: stop.
                    return delay if delay <= policy.retry_after_max else math.inf
            return policy.backoff(state.attempt_number, self._random())

        def stop(state: _RetryCallState) -> bool:
            nonlocal over_budget
            if state.attempt_number >= policy.attempts or not math.isfinite(state.upcoming_sleep):
                return True
            # A wait that ends past the deadline would only delay the same answer.
            if deadline_at is not None and self._clock() + state.upcoming_sleep >= deadline_at:
                return True
            over_budget = self._budget is not None and not self._budget.try_retry()
            return over_budget

        async def before_sleep(state: _RetryCallState) -> None:
            outcome = state.outcome
            assert outcome is not None
            if outcome.failed:
                reason = type(outcome.exception()).__name__
            else:
                response = outcome.result()
                reason = str(response.status_code)
                await _discard(response)
            _log_retry(self.name, request, state.attempt_number, policy.attempts, reason, state.upcoming_sleep)

        retrying = _AsyncRetrying(
            sleep=self._wait,
            retry=should_retry,
            wait=wait,
            stop=stop,
            before_sleep=before_sleep,
            # Retries spent: the last response, or the original httpx error, never a RetryError.
            retry_error_callback=_last_outcome,
        )
        try:
            response: httpx.Response = await retrying(attempt)
        except Exception as error:
            # The original error, not wrapped; the note tells how far the retries got.
            budget_note = " (retry budget spent)" if over_budget else ""
            error.add_note(f"fastapi_retry_http: raised by attempt {made} of at most {policy.attempts}{budget_note}.")
            raise
        finally:
            if over_budget:
                self._warn_over_budget()
        response.extensions[ATTEMPTS_EXTENSION] = made
        return response

    def _warn_over_budget(self) -> None:
        # Once per budget window: during an outage every call would say the same.
        now = self._clock()
        assert self._budget is not None
        if now - self._budget_warned_at >= self._budget.window:
            self._budget_warned_at = now
            logger.warning(
                "%s: retry budget spent; failing calls are not retried until it refills.",
                self.name,
                extra={"client": self.name},
            )


class _Deadlines:
    """
    The deadlines of a transport's attempts in flight, behind a single event-loop timer.

    A timer per attempt (what `asyncio.timeout()` does) cost 4-5 us per request with a few
    dozen requests in flight, most of the retry layer's cost on the success path (measured):
    each one is pushed on and cleaned off the loop's heap. Attempts started later have later
    deadlines, so one timer set for the earliest deadline is seldom moved: when it fires, it
    cancels the tasks whose deadline passed and re-arms for the next.
    """

    __slots__ = ("_loop", "_timer", "_timer_at", "_watched", "fired")

    def __init__(self) -> None:
        self._watched: dict[asyncio.Task[Any], float] = {}
        #: Tasks this cancelled because their deadline passed.
        self.fired: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._loop: asyncio.AbstractEventLoop | None = None

    def watch(self, seconds: float) -> asyncio.Task[Any]:
        """Cancel the current task in `seconds` unless `unwatch` comes first; returns the task."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        assert task is not None
        at = self._watched[task] = loop.time() + seconds
        if at < self._timer_at or loop is not self._loop:
            self._arm(loop, at)
        return task

    def unwatch(self, task: asyncio.Task[Any]) -> None:
        """Stop watching `task`."""
        del self._watched[task]
        self.fired.discard(task)

    def close(self) -> None:
        """Disarm the timer: the transport is closed and its attempts are ending."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, math.inf

    def _arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._loop, self._timer_at = loop, at
        self._timer = loop.call_at(at, self._fire)

    def _fire(self) -> None:
        assert self._loop is not None
        self._timer, self._timer_at = None, math.inf
        now = self._loop.time() + 0.001  # the loop may run a timer a hair before its time
        for task, at in self._watched.items():
            if at <= now and task not in self.fired:
                self.fired.add(task)
                task.cancel()
        pending = [at for task, at in self._watched.items() if task not in self.fired]
        if pending:
            self._arm(self._loop, min(pending))


class _Outcome:
    """The first attempt's result, handed to tenacity as if it had run it."""

    __slots__ = ("error", "response")

    def __init__(self, *, response: httpx.Response | None = None, error: Exception | None = None) -> None:
        self.response = response
        self.error = error

    def unwrap(self) -> httpx.Response:
        if self.error is not None:
            raise self.error
        assert self.response is not None
        return self.response


def _last_outcome(state: _RetryCallState) -> Any:
    assert state.outcome is not None
    return state.outcome.result()


def _retry_after(response: httpx.Response, name: str) -> float | None:
    if response.status_code not in RETRY_AFTER_STATUSES:
        return None
    header = response.headers.get("retry-after")
    if header is None:
        return None
    delay = parse_retry_after(header)
    if delay is None:
        # As urllib3 and httpx-retries do: an upstream sending these wants to hear about it.
        # The value is the server's, not a secret of ours; shown cut short and escaped.
        shown = ascii(header[:RETRY_AFTER_SHOWN]) + ("..." if len(header) > RETRY_AFTER_SHOWN else "")
        logger.warning(
            "%s: unusable Retry-After %s on a %d response; using the backoff instead.",
            name,
            shown,
            response.status_code,
            extra={"client": name, "retry_after": shown, "status_code": response.status_code},
        )
    return delay


async def _discard(response: httpx.Response) -> None:
    """Release a response that will not be returned, so its connection goes back to the pool."""
    try:
        if not response.is_stream_consumed:
            drained = 0
            async for chunk in response.aiter_raw():
                drained += len(chunk)
                if drained > DRAIN_LIMIT:
                    break
    except httpx.HTTPError:
        pass  # The connection is broken; closing it below is all that is left to do.
    finally:
        await response.aclose()


def _log_retry(name: str, request: httpx.Request, attempt: int, attempts: int, reason: str, wait: float) -> None:
    where = url_without_query(request.url)
    logger.info(
        "%s: %s %s failed (%s) on attempt %d/%d; retrying in %.3fs",
        name,
        request.method,
        where,
        reason,
        attempt,
        attempts,
        wait,
        extra={
            "client": name,
            "method": request.method,
            "url": where,
            "attempt": attempt,
            "attempts": attempts,
            "reason": reason,
            "wait": wait,
        },
    )
