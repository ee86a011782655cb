"""The pure rules: policy validation, classification by phase, backoff, Retry-After parsing."""

from __future__ import annotations

import dataclasses
import ssl
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from fastapi_retry_http import RetryPolicy
from fastapi_retry_http._pipeline.policy import error_phase, parse_retry_after

NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)


def request(method: str = "GET", headers: dict[str, str] | None = None) -> httpx.Request:
    return httpx.Request(method, "http://upstream/x", headers=headers)


class TestPolicyFields:
    def test_defaults_are_the_documented_ones(self) -> None:
        policy = RetryPolicy()
        assert (
            policy.attempts,
            policy.deadline,
            policy.wait_initial,
            policy.wait_max,
            policy.wait_exp_base,
            policy.jitter,
            policy.retry_after_max,
        ) == (3, 30.0, 0.1, 10.0, 2.0, True, 60.0)
        assert frozenset({408, 429, 502, 503, 504}) == policy.statuses
        assert frozenset() == policy.methods

    def test_frozen_and_slotted(self) -> None:
        policy = RetryPolicy()
        with pytest.raises(dataclasses.FrozenInstanceError):
            policy.attempts = 5  # type: ignore[misc]
        assert not hasattr(policy, "__dict__")
        assert dataclasses.replace(policy, attempts=5).attempts == 5

    def test_iterables_become_frozensets_and_methods_upper_case(self) -> None:
        policy = RetryPolicy(statuses=[500, 503], methods=["post"])  # type: ignore[arg-type]
        assert frozenset({500, 503}) == policy.statuses
        assert frozenset({"POST"}) == policy.methods

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"attempts": 0}, "attempts"),
            ({"attempts": 1.5}, "attempts"),
            ({"attempts": True}, "attempts"),
            ({"deadline": 0}, "deadline"),
            ({"deadline": -1}, "deadline"),
            ({"deadline": float("inf")}, "deadline"),
            ({"wait_initial": -0.1}, "wait_initial"),
            ({"wait_max": float("nan")}, "wait_max"),
            ({"retry_after_max": -1}, "retry_after_max"),
            ({"wait_exp_base": 0.5}, "wait_exp_base"),
            ({"statuses": {700}}, "statuses"),
            ({"methods": {"PO ST"}}, "methods"),
        ],
    )
    def test_nonsense_is_refused_naming_the_field(self, kwargs: dict[str, object], field: str) -> None:
        with pytest.raises(ValueError, match=f"RetryPolicy.{field}"):
            RetryPolicy(**kwargs)  # type: ignore[arg-type]


class TestClassification:
    @pytest.mark.parametrize(
        ("error", "phase"),
        [
            (httpx.ConnectError("refused"), "connect"),
            (httpx.ConnectTimeout("slow"), "connect"),
            (httpx.ReadTimeout("slow"), "sent"),
            (httpx.WriteTimeout("slow"), "sent"),
            (httpx.ReadError("reset"), "sent"),
            (httpx.WriteError("broken pipe"), "sent"),
            (httpx.RemoteProtocolError("Server disconnected without sending a response."), "sent"),
            (httpx.RemoteProtocolError("peer closed connection without sending complete message body"), "sent"),
            (httpx.RemoteProtocolError("<ConnectionTerminated error_code:0, last_stream_id:1>"), "sent"),
            (httpx.RemoteProtocolError("illegal status line: bytearray(b'SSH-2.0')"), "never"),
            # A garbage status line that spells a disconnect phrase is still garbage.
            (
                httpx.RemoteProtocolError("illegal status line: bytearray(b'HTTP/1.1 abc peer closed connection')"),
                "never",
            ),
            (httpx.PoolTimeout("pool full"), "never"),
            (httpx.LocalProtocolError("Illegal header value"), "never"),
            (httpx.UnsupportedProtocol("ftp"), "never"),
            (httpx.ProxyError("proxy said no"), "never"),
            (httpx.DecodingError("bad gzip"), "never"),
            (httpx.CloseError("close failed"), "never"),
            (ValueError("not httpx"), "never"),
        ],
        ids=lambda v: type(v).__name__ if isinstance(v, Exception) else v,
    )
    def test_phase(self, error: Exception, phase: str) -> None:
        assert phase == error_phase(error)

    def test_tls_failure_is_never_retried_even_as_connect_error(self) -> None:
        error = httpx.ConnectError("certificate verify failed")
        error.__cause__ = ssl.SSLCertVerificationError("self-signed")
        assert error_phase(error) == "never"

    @pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"])
    def test_idempotent_methods_may_be_resent(self, method: str) -> None:
        assert RetryPolicy().may_resend(request(method))

    @pytest.mark.parametrize("method", ["POST", "PATCH", "CONNECT"])
    def test_other_methods_may_not_be_resent(self, method: str) -> None:
        assert not RetryPolicy().may_resend(request(method))

    def test_idempotency_key_or_opt_in_allows_resending_post(self) -> None:
        assert RetryPolicy().may_resend(request("POST", {"Idempotency-Key": "k1"}))
        assert RetryPolicy(methods=frozenset({"post"})).may_resend(request("POST"))

    @pytest.mark.parametrize(
        ("method", "error", "retried"),
        [
            ("POST", httpx.ConnectError("refused"), True),
            ("POST", httpx.ReadTimeout("slow"), False),
            ("GET", httpx.ReadTimeout("slow"), True),
            ("GET", httpx.PoolTimeout("full"), False),
        ],
    )
    def test_errors_by_phase_and_method(self, method: str, error: Exception, retried: bool) -> None:
        assert retried == RetryPolicy().retries_error(request(method), error)

    @pytest.mark.parametrize(
        ("status", "retried"),
        [(408, True), (429, True), (502, True), (503, True), (504, True)]
        + [(s, False) for s in (200, 201, 301, 400, 401, 403, 404, 409, 422, 500, 501)],
    )
    def test_statuses(self, status: int, retried: bool) -> None:
        assert retried == RetryPolicy().retries_status(request(), status)

    def test_status_on_post_is_not_retried(self) -> None:
        assert not RetryPolicy().retries_status(request("POST"), 503)

    def test_500_is_opt_in(self) -> None:
        assert RetryPolicy(statuses=frozenset({500})).retries_status(request(), 500)


class TestBackoff:
    def test_exponential_without_jitter_capped(self) -> None:
        policy = RetryPolicy(jitter=False, wait_initial=0.5, wait_max=3.0)
        assert [policy.backoff(n, 0.99) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]

    def test_full_jitter_scales_the_ceiling(self) -> None:
        policy = RetryPolicy(wait_initial=1.0, wait_max=100.0)
        assert policy.backoff(3, 0.0) == 0.0
        assert policy.backoff(3, 0.5) == 2.0

    def test_huge_retry_numbers_do_not_overflow(self) -> None:
        assert RetryPolicy(jitter=False).backoff(100_000, 0.5) == 10.0

    @pytest.mark.parametrize("retry_number", [1, 2, 3, 60, 100_000])
    def test_a_huge_growth_factor_is_capped_not_an_overflow(self, retry_number: int) -> None:
        policy = RetryPolicy(wait_exp_base=1e6, wait_max=60, jitter=False)
        assert policy.backoff(retry_number, 0.5) == (0.1 if retry_number == 1 else 60.0)

    def test_a_zero_initial_wait_stays_zero(self) -> None:
        assert RetryPolicy(wait_initial=0, wait_exp_base=1e6, jitter=False).backoff(100, 0.5) == 0.0


class TestRetryAfter:
    @pytest.mark.parametrize(
        ("value", "seconds"),
        [
            ("0", 0.0),
            ("2", 2.0),
            (" 120 ", 120.0),
            ("999999", 999999.0),
            (format_datetime(NOW + timedelta(seconds=3), usegmt=True), 3.0),
            (format_datetime(NOW - timedelta(seconds=30), usegmt=True), 0.0),
            ("Tue, 24 Nov 2026 12:00:05 -0000", 5.0),
        ],
    )
    def test_usable_values(self, value: str, seconds: float) -> None:
        assert seconds == parse_retry_after(value, now=NOW)

    @pytest.mark.parametrize("value", ["-1", "+1", "1.0", "1e3", "abc", "", "\xb2", "Tue, 99 Foo 2026"])
    def test_garbage_is_ignored(self, value: str) -> None:
        assert parse_retry_after(value, now=NOW) is None

    @pytest.mark.parametrize("value", ["Wed, 21 Oct 2026 07:28:00", "Wed, 21 Oct 2026 07:28:00 XYZ"])
    def test_a_date_without_a_zone_is_unusable(self, value: str) -> None:
        assert parse_retry_after(value, now=NOW) is None

    def test_asctime_dates_are_gmt(self) -> None:
        assert parse_retry_after("Tue Nov 24 12:00:05 2026", now=NOW) == 5.0

    def test_absurdly_long_number_is_infinite_not_an_overflow(self) -> None:
        assert float("inf") == parse_retry_after("9" * 400, now=NOW)

    def test_defaults_to_the_current_time(self) -> None:
        in_an_hour = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
        seconds = parse_retry_after(in_an_hour)
        assert seconds is not None
        assert 3500 < seconds <= 3600
