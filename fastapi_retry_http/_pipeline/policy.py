"""
The retry policy and the pure rules built on it: which outcome may be retried, and how long
to wait before the next attempt.

Nothing here does I/O or keeps state, so every rule is tested with plain tables.
"""

from __future__ import annotations

import math
import re
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final

import httpx

from ..exceptions import StreamRefused
from .checks import first_problem, is_count, is_seconds

__all__ = ["RetryPolicy"]

#: Methods that may be sent again after the server may have seen them (RFC 9110, 9.2.2).
IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})

#: Statuses retried by default: timeouts, throttling and gateway failures. 500 is opt-in
#: because it usually means a bug that a second try will hit again.
DEFAULT_STATUSES: Final = frozenset({408, 429, 502, 503, 504})

#: Statuses on which a `Retry-After` header replaces the computed backoff.
RETRY_AFTER_STATUSES: Final = frozenset({429, 503})

#: A request carrying this header may be retried whatever its method: the server promises to
#: apply it once. The header is sent unchanged on every attempt.
IDEMPOTENCY_KEY: Final = "idempotency-key"


#: httpcore and h11 say "the connection went away" with these messages (HTTP/1.1 and h2
#: alike). Every other RemoteProtocolError is a server speaking garbage, which a second try
#: will not fix.
_DISCONNECT_MARKERS: Final = (
    "server disconnected",
    "peer closed connection",
    "peer unexpectedly closed connection",
    "connectionterminated",
    "streamreset",
)


_AT_LEAST_1: Final = "must be a finite number of at least 1"
_STATUS_CODES: Final = "must be HTTP status codes (100-599)"
_OPTIONAL_SECONDS: Final = "must be a positive number of seconds, or None"
_HEDGE_AFTER: Final = "must be a number of seconds (zero or more), a percentile from 'p50' to 'p99.9', or None"

#: A hedge percentile as `hedge_after` spells it: "p95", "p99.9" (one decimal at most).
_PERCENTILE: Final = re.compile(r"p(\d\d(?:\.\d)?)")
#: The percentiles `hedge_after` accepts: below p50 most calls would be hedged; p100 is never reached.
PERCENTILE_RANGE: Final = (50.0, 99.9)

# RFC 9110's obsolete asctime date ("Sun Nov  6 08:49:37 1994"): GMT, with no zone written.
_ASCTIME: Final = re.compile(r"[A-Za-z]{3} [A-Za-z]{3} [ \d]\d \d\d:\d\d:\d\d \d{4}")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """
    How a client retries: attempts, deadline, backoff, and which statuses and methods.

    Frozen, so one policy is safely shared by every request of a client; derive a variant
    with `dataclasses.replace(policy, attempts=5)`. Pydantic validates it as a field type,
    so the same class configures clients from settings.

    Attributes:
        attempts: Total tries, the first one included. `1` disables retries.
        deadline: Seconds across all attempts and waits; `None` means unbounded. An attempt
            still in flight when it passes is cancelled and raises
            [`DeadlineExceeded`][fastapi_retry_http.exceptions.DeadlineExceeded]; a wait that
            would end past it is not started.
        wait_initial: Backoff before the first retry, in seconds.
        wait_max: Cap on any one backoff, in seconds.
        wait_exp_base: Growth factor of the backoff per retry.
        jitter: Full jitter: each backoff is drawn uniformly from zero to its computed value,
            so many clients retrying together spread out instead of arriving in waves.
        statuses: Response statuses that are retried (for methods that may be resent).
        methods: Methods retried even after the request was sent, beyond the idempotent
            ones, for example `{"POST"}` when the server deduplicates.
        retry_after_max: The longest `Retry-After` honoured, in seconds. A longer one ends the
            retries at once and the response is returned.
        hedge_after: Hedging, off when `None`: a request that may be resent, still without a
            response after this many seconds, gets another attempt in parallel, and so on up
            to `attempts` in flight; the first acceptable response wins and the others are
            cancelled. Hedges take from the retry budget. After the hedges, no retries.
            A percentile from `"p50"` to `"p99.9"` (`"p95"`) learns the delay instead: that
            percentile of the client's recent attempt durations, within a hedge budget (see
            the Resilience page); a number in a string (`"0.05"`, from the environment) is
            seconds.
        attempt_timeout: Wall-clock seconds one attempt may take, connect to body read (for
            calls that are not streamed); `None` for no cap. Past it the attempt is
            cancelled and raises
            [`AttemptTimeout`][fastapi_retry_http.exceptions.AttemptTimeout], retried like a
            read timeout. Never more than what is left of `deadline`.
    """

    attempts: int = 3
    deadline: float | None = 30.0
    wait_initial: float = 0.1
    wait_max: float = 10.0
    wait_exp_base: float = 2.0
    jitter: bool = True
    statuses: frozenset[int] = DEFAULT_STATUSES
    methods: frozenset[str] = frozenset()
    retry_after_max: float = 60.0
    hedge_after: float | str | None = None
    attempt_timeout: float | None = None

    def __post_init__(self) -> None:
        # Accept any iterable (lists from JSON or env) but keep frozensets, and compare
        # methods in upper case as httpx sends them.
        object.__setattr__(self, "statuses", frozenset(self.statuses))
        object.__setattr__(self, "methods", frozenset(m.upper() for m in self.methods))
        object.__setattr__(self, "hedge_after", _seconds_or_percentile(self.hedge_after))
        problem = self._problem()
        if problem is not None:
            raise ValueError(f"RetryPolicy.{problem}")

    def _problem(self) -> str | None:
        seconds = "must be a finite number of seconds, zero or more"
        return first_problem(
            [
                ("attempts", is_count(self.attempts, 1), "must be an integer of at least 1"),
                ("deadline", is_seconds(self.deadline, none=True), "must be a positive number of seconds, or None"),
                ("wait_initial", is_seconds(self.wait_initial, zero=True), seconds),
                ("wait_max", is_seconds(self.wait_max, zero=True), seconds),
                ("retry_after_max", is_seconds(self.retry_after_max, zero=True), seconds),
                ("wait_exp_base", self.wait_exp_base >= 1 and math.isfinite(self.wait_exp_base), _AT_LEAST_1),
                ("statuses", all(is_count(s, 100) and s <= 599 for s in self.statuses), _STATUS_CODES),
                ("methods", all(m.isalpha() for m in self.methods), "must be HTTP method names"),
                ("hedge_after", self._hedge_after_valid(), _HEDGE_AFTER),
                ("hedge_after", self.hedge_after is None or self.attempts > 1, "needs attempts of at least 2"),
                ("attempt_timeout", is_seconds(self.attempt_timeout, none=True), _OPTIONAL_SECONDS),
                ("attempt_timeout", not self._attempt_timeout_past_deadline(), "must not exceed the deadline"),
            ]
        )

    def _hedge_after_valid(self) -> bool:
        if isinstance(self.hedge_after, str):
            return self.hedge_percentile is not None
        return is_seconds(self.hedge_after, zero=True, none=True)

    @property
    def hedge_percentile(self) -> float | None:
        """The percentile `hedge_after` names (`95.0` for `"p95"`), or `None` for a fixed delay."""
        return percentile_of(self.hedge_after) if isinstance(self.hedge_after, str) else None

    def _attempt_timeout_past_deadline(self) -> bool:
        return None not in (self.attempt_timeout, self.deadline) and self.attempt_timeout > self.deadline  # type: ignore[operator]

    def may_resend(self, request: httpx.Request) -> bool:
        """Whether `request` may be sent again after the server may have seen it."""
        method = request.method
        return method in IDEMPOTENT_METHODS or method in self.methods or IDEMPOTENCY_KEY in request.headers

    def retries_status(self, request: httpx.Request, status: int) -> bool:
        """Whether a response with `status` to `request` is retried."""
        return status in self.statuses and self.may_resend(request)

    def retries_error(self, request: httpx.Request, error: BaseException) -> bool:
        """
        Whether the attempt that raised `error` is retried.

        Classified by phase: a failure to connect means nothing was sent, so every method is
        retried; a failure after sending is retried only when the request may be resent.
        """
        phase = error_phase(error)
        return phase == "connect" or (phase == "sent" and self.may_resend(request))

    def backoff(self, retry_number: int, random: float) -> float:
        """
        The wait before retry number `retry_number` (1 for the first retry).

        `random` is a draw from [0, 1), used only with jitter.
        """
        # `and`: a zero initial wait stays zero (0 * inf would be nan).
        grown = self.wait_initial and self.wait_initial * _power(self.wait_exp_base, retry_number - 1)
        ceiling = min(self.wait_max, grown)
        return ceiling * random if self.jitter else ceiling


def percentile_of(value: str) -> float | None:
    """`95.0` for `"p95"`: a percentile within `PERCENTILE_RANGE`, or `None` for anything else."""
    match = _PERCENTILE.fullmatch(value)
    if match is None:
        return None
    percentile = float(match[1])
    low, high = PERCENTILE_RANGE
    return percentile if low <= percentile <= high else None


def _seconds_or_percentile(value: float | str | None) -> float | str | None:
    # From the environment every value is a string, and `float | str` keeps it one: "0.05"
    # is seconds. Anything else stays as given, for the check to name.
    if isinstance(value, str) and not value.startswith("p"):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _power(base: float, exponent: int) -> float:
    """`base ** exponent`, or infinity where that overflows a float (`1e6 ** 60` does)."""
    try:
        return base**exponent
    except OverflowError:
        return math.inf


def error_phase(error: BaseException) -> str:
    """
    Where an attempt failed: `"connect"`, `"sent"` or `"never"` (not retried at all).

    - `"connect"`: the request never left (connection refused, connect timeout), or an
      HTTP/2 server refused it unprocessed (`StreamRefused`).
    - `"sent"`: the server may have seen it (read/write failures and timeouts, a connection
      closed before or while the response arrived, a truncated body).
    - `"never"`: retrying cannot help or would hide a problem: `PoolTimeout` (local
      back-pressure), TLS failures, a server that does not speak HTTP, local errors,
      cancellation, and anything that is not an httpx transport error.
    """
    if isinstance(error, httpx.ConnectTimeout | StreamRefused):
        return "connect"
    if isinstance(error, httpx.ConnectError):
        return "never" if _caused_by_tls(error) else "connect"
    if isinstance(error, httpx.ReadTimeout | httpx.WriteTimeout | httpx.ReadError | httpx.WriteError):
        return "sent"
    if isinstance(error, httpx.RemoteProtocolError):
        message = str(error).lower()
        # At the start only: a garbage status line is quoted inside h11's message, and could
        # spell a disconnect phrase ("illegal status line: ... peer closed connection").
        return "sent" if message.lstrip("<").startswith(_DISCONNECT_MARKERS) else "never"
    return "never"


def _caused_by_tls(error: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError | ssl.CertificateError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def parse_retry_after(value: str, now: datetime | None = None) -> float | None:
    """
    Seconds to wait from a `Retry-After` header value, or `None` when it cannot be used.

    Accepts delta-seconds (digits only) and an HTTP-date; a date in the past means zero.
    Negative, fractional, signed or otherwise malformed values are ignored (`None`), and the
    caller falls back to its backoff.
    """
    value = value.strip()
    if value.isascii() and value.isdigit():
        # Very long digit strings are valid but absurd; a float keeps them comparable
        # with the cap without an OverflowError.
        return float(value) if len(value) < 300 else math.inf
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        # email.utils gives no zone for "-0000", for an unknown zone name and for no zone at
        # all. "-0000" and asctime's zone-less form are GMT by definition; anything else
        # would be a guess at the server's clock.
        if not (value.endswith("-0000") or _ASCTIME.fullmatch(value)):
            return None
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())
