"""
The strategy seam: the one interface every resilience tool of the pipeline implements.

A client's strategies run in one documented order (`_strategies.ORDER`). There are three
places a strategy can stand, and it implements only the hooks of its place:

- **Per attempt** (`Strategy`): `admit(call)` before every attempt (the first one just before
  it is sent, a retry before its backoff wait, a hedge before it starts), `record(call,
  outcome)` after it. The breaker, the retry budget, the rate limit, the throttle and the
  concurrency limit stand here. `admit` answers at once: `None` (go), a `Refusal` (the call
  stops), or an awaitable that waits for a slot and then answers `None` or a `Refusal`; a
  waiter that is cancelled gives its slot back itself. For every `admit` that let an attempt
  go, `record` is called exactly once: with the attempt's outcome, or with an outcome whose
  `refusal` is set (a later strategy refused it: nothing was sent) or that is `cancelled`.
- **Around the send** (`Interceptor`): `intercept(call)` inside the attempt, after every
  gate, within the attempt timeout and the deadline; it may answer in place of the network
  (chaos stands here).
- **Around the call** (`CallStrategy`): `around(request, proceed)` before the deadline and
  the attempts; it may answer without any attempt (the cache, coalescing).

A strategy that is off is not in the client's lists at all: it costs nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import httpx

from .attempts import Call, Outcome

__all__ = ["Admission", "CallStrategy", "Gate", "Interceptor", "Rechecking", "Refusal", "Strategy"]


@dataclass(frozen=True, slots=True)
class Refusal:
    """
    A strategy's "no".

    Attributes:
        reason: Why, as events and log records name it (`"budget"`, `"breaker"`,
            `"rate_limit"`, `"throttle"`, `"concurrency"`, ...).
        error: Raised when the refused attempt is the call's first (there is no earlier
            response or error to return); `None` lets the first attempt go regardless.
    """

    reason: str
    error: Exception | None = None


#: What `admit` answers: go (`None`), stop (a `Refusal`), or wait for the answer.
Admission = Refusal | Awaitable[Refusal | None] | None


class Strategy(Protocol):
    """A resilience tool asked before every attempt and told how each one ended."""

    def admit(self, call: Call) -> Admission:
        """Before attempt `call.attempt + 1`: `None` lets it go, a `Refusal` stops the call."""

    def record(self, call: Call, outcome: Outcome) -> None:
        """After an admitted attempt: what it gave (`cancelled`, or `refusal` if never sent)."""


#: The Round 2 name of the per-attempt seam (`RetryTransport(gates=...)`).
Gate = Strategy


@runtime_checkable
class Rechecking(Protocol):
    """A strategy whose answer can change during a backoff wait (the breaker may open meanwhile)."""

    def ready(self, call: Call) -> Refusal | None:
        """Right before a retry admitted earlier is sent: `None`, or a refusal that ends the call."""


class Interceptor(Protocol):
    """A strategy inside the attempt, last before the network: it may answer in its place."""

    def intercept(self, call: Call) -> Awaitable[httpx.Response | None] | None:
        """
        `None` sends the attempt at once. Otherwise what it acts with, awaited within the
        attempt: a response is the attempt's answer, an error its failure, `None` sends it
        after all (after an injected delay). Not a coroutine itself: an attempt it leaves
        alone, nearly all of them, costs no coroutine.
        """


Proceed = Callable[[httpx.Request], Awaitable[httpx.Response]]


class CallStrategy(Protocol):
    """A strategy around the whole call: it may answer without any attempt."""

    async def around(self, request: httpx.Request, proceed: Proceed) -> httpx.Response:
        """Answer `request`, calling `proceed(request)` for the attempts when needed."""
