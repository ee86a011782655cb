"""
The gate seam: may this attempt go, and what did it give?

A gate is asked before every attempt: the first one just before it is sent, a retry before
its backoff wait (a refused retry costs no waiting). It is told every attempt's outcome. The
retry budget is a gate; the circuit breaker is the next. A gate added to a `RetryTransport`
joins the pipeline without a change to the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .attempts import Call, Outcome

__all__ = ["Gate", "Rechecking", "Refusal"]


@dataclass(frozen=True, slots=True)
class Refusal:
    """
    A gate's "no".

    Attributes:
        reason: Why, as events and log records name it (`"budget"`, `"breaker"`, ...).
        error: Raised when the refused attempt is the call's first (there is no earlier
            response or error to return); `None` lets the first attempt go regardless.
    """

    reason: str
    error: Exception | None = None


class Gate(Protocol):
    """Decides whether attempts may go, and learns from what they gave."""

    def admit(self, call: Call) -> Refusal | None:
        """Before attempt `call.attempt + 1`: `None` lets it go, a `Refusal` stops the call."""

    def record(self, call: Call, outcome: Outcome) -> None:
        """After attempt `call.attempt`, with what it gave (`outcome.cancelled` if it never ended)."""


@runtime_checkable
class Rechecking(Protocol):
    """A gate whose answer can change during a backoff wait (the breaker may open meanwhile)."""

    def ready(self, call: Call) -> Refusal | None:
        """Right before a retry admitted earlier is sent: `None`, or a refusal that ends the call."""
