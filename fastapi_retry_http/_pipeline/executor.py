"""
The attempt executor: the one place every attempt of every call is sent, hedges included.

It asks the strategies (`admit`, in order; a waiting one is awaited through `Waiting`), sends
through the `Sender` (interceptors, deadline, attempt timeout, backend), classifies the
outcome, tells every strategy that admitted the attempt (`record`, exactly once), and emits
exactly one `AttemptEvent` per attempt once its fate is known: `final` for the attempt that
ends the call, `superseded` for one hedging will not return, `refused` for a call refused
before its first attempt. Retries (`engine`, `decisions`) and hedging (`hedging`) decide
*when* to call it; they never send or tell anything themselves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from time import perf_counter
from typing import Final, Protocol

import httpx

from ..exceptions import CircuitOpenError, DeadlineExceeded
from .admission import Waiting
from .attempts import Call, Outcome
from .decisions import event, final_kind, refused
from .events import Instruments
from .logs import log_gave_up, log_retry
from .send import INJECTED_EXTENSION, Sender, discard
from .strategy import Gate, Refusal

__all__ = ["ATTEMPTS_EXTENSION", "Executor"]

#: `response.extensions` key: how many attempts a retried request took (absent: one).
ATTEMPTS_EXTENSION: Final = "fastapi_retry_http.attempts"


class Learner(Protocol):
    """Told every attempt's outcome after the strategies, never asked (the latency estimate)."""

    def record(self, call: Call, outcome: Outcome, now: float) -> None:
        """Learn from `outcome`, which ended at `now` (`time.perf_counter()`)."""


class Executor:
    """Sends the attempts of one client's calls through its strategies and its sender."""

    __slots__ = ("_instruments", "_scoped", "_told", "gates", "learner", "sender")

    def __init__(self, sender: Sender, gates: Sequence[Gate], instruments: Instruments) -> None:
        self.sender = sender
        #: The per-attempt strategies, in pipeline order.
        self.gates = tuple(gates)
        self._instruments = instruments
        self._scoped = instruments.scoped  # instruments told before each attempt (tracing)
        self._told = bool(instruments)  # asked on every attempt: an attribute, not a method call
        #: Told every attempt's outcome after the strategies, never asked (the latency estimate
        #: behind `hedge_after="p95"`).
        self.learner: Learner | None = None

    async def attempt(self, call: Call) -> Outcome:
        """One attempt through the send, classify and record stages."""
        call.attempt += 1
        number = call.attempt
        learner = self.learner
        request, policy = call.request, call.policy
        scopes = self._instruments.start(request, number, call.client) if self._scoped else None
        # Every attempt is timed here, and only here: the instruments, the latency estimate and
        # a read response's `elapsed` see the same duration (two clock reads, not four).
        started = perf_counter()
        try:
            response = await self.sender.send(call)
        except Exception as error:
            ended = perf_counter()
            outcome = Outcome(error=error, retryable=call.retries and policy.retries_error(request, error))
            if isinstance(error, DeadlineExceeded):
                # The deadline ended the call inside an attempt: a give-up, logged as the others are.
                log_gave_up(call.client, request, number, policy.attempts, outcome.reason, "deadline")
        except asyncio.CancelledError as gone:
            # Never retried, never wrapped; the gates and the instruments hear of it.
            if scopes is not None:
                scopes.end(None, gone)
            ended = perf_counter()
            cancelled = Outcome(cancelled=True, attempt=number, duration=ended - started)
            for gate in self.gates:
                gate.record(call, cancelled)
            if learner is not None:
                learner.record(call, cancelled, ended)
            if self._told:
                kind = "hedge_lost" if call.lost() else "cancelled"
                self._instruments.emit(event(call, cancelled, kind))
            raise
        else:
            ended = perf_counter()
            if response.is_closed:  # read inside the attempt (not streamed): as httpx's own `elapsed`
                response.elapsed = timedelta(0, ended - started)  # positional: a quarter cheaper than `seconds=`
            retryable = call.retries and policy.retries_status(request, response.status_code)
            outcome = Outcome(response=response, retryable=retryable)
        outcome.attempt = number
        outcome.duration = ended - started
        if self.sender.interceptors:  # chaos: the attempts it acted on are marked on the request
            outcome.injected = number in request.extensions.get(INJECTED_EXTENSION, ())
        if scopes is not None:
            scopes.end(outcome.response, outcome.error)
        for gate in self.gates:
            gate.record(call, outcome)
        if learner is not None:
            learner.record(call, outcome, ended)
        return outcome

    def admit(self, call: Call, start: int = 0) -> Refusal | Waiting | None:
        """
        Ask every strategy, in order, whether another attempt of `call` may go. The answer is
        at once unless a strategy waits (a rate limit, a concurrency limit): then a `Waiting`.
        A refusal is told to the strategies that had admitted the attempt.
        """
        gates = self.gates
        for index in range(start, len(gates)):
            answer = gates[index].admit(call)
            if answer is None:
                continue
            if isinstance(answer, Refusal):
                if answer.error is None and call.attempt == 0:
                    continue  # a refusal with nothing to raise lets a first attempt go
                self.release(call, index, Outcome(refusal=answer, attempt=call.attempt + 1))
                return answer
            return Waiting(self.admit, self.release, call, index, answer)
        return None

    async def admitted(self, call: Call, admission: Refusal | Waiting) -> None:
        """
        A first attempt that was not simply let go: wait for its slot; a refusal with an error
        ends the call (its one event, then the error raised), one without lets it go.
        """
        refusal = admission if isinstance(admission, Refusal) else await admission.wait()
        if refusal is not None and refusal.error is not None:
            self.refused(call, refusal, refusal.error)
            raise refusal.error

    def release(self, call: Call, index: int, outcome: Outcome) -> None:
        """Tell the strategies before `index`, which admitted the attempt, that it was never sent."""
        for gate in self.gates[:index]:
            gate.record(call, outcome)

    def unsent(self, call: Call) -> None:
        """An attempt every strategy admitted was cancelled before it started: they get it back."""
        self.release(call, len(self.gates), Outcome(cancelled=True, attempt=call.attempt + 1))

    async def superseded(self, call: Call, outcome: Outcome, kind: str) -> None:
        """What hedging does with an attempt's outcome it will not return: release, log, tell."""
        if outcome.response is not None:
            await discard(outcome.response)
        if kind == "retry":
            log_retry(call.client, call.request, outcome.attempt, call.policy.attempts, outcome.reason, 0.0)
        if self._told:
            self._instruments.emit(event(call, outcome, kind, wait=0.0 if kind == "retry" else None))

    def final(self, call: Call, outcome: Outcome, stopped: str | None = None) -> None:
        """The event of the attempt that ends `call`, and why it ended there."""
        if not self._told:
            return
        if stopped is not None:
            self._instruments.emit(event(call, outcome, "returned", reason=stopped))  # type: ignore[arg-type]
        elif isinstance(outcome.error, DeadlineExceeded):
            self._instruments.emit(event(call, outcome, "returned", reason="deadline"))
        elif isinstance(outcome.error, CircuitOpenError):
            self._instruments.emit(event(call, outcome, "returned", reason="breaker"))
        else:
            self._instruments.emit(event(call, outcome, final_kind(call, outcome)))

    def returned(
        self, call: Call, outcome: Outcome, stopped: str | None = None, *, told: bool = False
    ) -> httpx.Response:
        """
        The call's answer, after its last attempt: its final event (unless already `told`),
        then the error raised, with a note on how far the attempts got, or the response.
        """
        if not told:
            self.final(call, outcome, stopped)
        if outcome.error is not None:
            # The original error, not wrapped; the note tells how far the retries got.
            spent = " (retry budget spent)" if stopped == "budget" else ""
            outcome.error.add_note(
                f"fastapi_retry_http: raised by attempt {call.attempt} of at most {call.policy.attempts}{spent}."
            )
            raise outcome.error
        response = outcome.unwrap()
        if call.attempt > 1:  # absent: one
            response.extensions[ATTEMPTS_EXTENSION] = call.attempt
        return response

    def refused(self, call: Call, refusal: Refusal, error: Exception) -> None:
        """The one event of a call refused before its first attempt."""
        if self._told:
            self._instruments.emit(refused(call, error, refusal.reason))
