"""
The log records of the pipeline: one per retry, per give-up and per breaker state change, on
the `fastapi_retry_http` logger, with their fields as `extra` attributes and never a header
or query value. Always on, whatever instruments a client has: they are the record an
operator reads first.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

import httpx

from .._safety.redact import url_without_query

if TYPE_CHECKING:
    from .events import CircuitEvent, StopReason

__all__ = ["CIRCUIT_LEVELS", "log_circuit", "log_gave_up", "log_retry"]

logger: Final = logging.getLogger("fastapi_retry_http")


def log_retry(client: str, request: httpx.Request, attempt: int, attempts: int, reason: str, wait: float) -> None:
    """
    One INFO record per retry, with its fields as `extra` attributes; no header or query values.

    INFO: a retry is the library doing its job, and the call may well still succeed.
    """
    _log_attempt(client, request, attempt, attempts, reason, f"retrying in {wait:.3f}s", reason, wait, "retry")


def log_gave_up(
    client: str, request: httpx.Request, attempt: int, attempts: int, failure: str, reason: StopReason
) -> None:
    """
    One INFO record per call that stops retrying a retryable failure (`reason`: attempts,
    deadline, budget, breaker, retry_after); `failure` is the last status code or error class.

    INFO, like retries, not WARNING: the caller gets the failure (raised, or the response)
    and reports it in its own terms, and during an outage every call gives up, so a WARNING
    each would flood the logs. The loud signals are per client and rate-limited: the spent
    budget (once per window) and an opening breaker are WARNINGs.
    """
    _log_attempt(client, request, attempt, attempts, failure, f"not retried ({reason})", reason, None, "returned")


def _log_attempt(
    client: str,
    request: httpx.Request,
    attempt: int,
    attempts: int,
    failure: str,
    then: str,
    reason: str,
    wait: float | None,
    outcome: str,
) -> None:
    # One shape for every attempt record, so a JSON formatter sees the same fields each time.
    where = url_without_query(request.url)
    logger.info(
        "%s: %s %s failed (%s) on attempt %d/%d; %s",
        client,
        request.method,
        where,
        failure,
        attempt,
        attempts,
        then,
        extra={
            "client": client,
            "method": request.method,
            "url": where,
            "attempt": attempt,
            "attempts": attempts,
            "reason": reason,
            "failure": failure,
            "wait": wait,
            "outcome": outcome,
        },
    )


#: Log levels of breaker state changes: opening is what an operator wants to see.
CIRCUIT_LEVELS: Final = {"open": logging.WARNING, "half_open": logging.INFO, "closed": logging.INFO}


def log_circuit(event: CircuitEvent) -> None:
    """One record per breaker state change: WARNING when it opens, INFO otherwise."""
    after = "" if event.retry_after is None else f"; a probe in {event.retry_after:.3f}s"
    logger.log(
        CIRCUIT_LEVELS[event.state],
        "%s: circuit %s -> %s%s",
        event.client,
        event.previous,
        event.state,
        after,
        extra={
            "client": event.client,
            "reason": "breaker",
            "state": event.state,
            "previous": event.previous,
            "wait": event.retry_after,
        },
    )
