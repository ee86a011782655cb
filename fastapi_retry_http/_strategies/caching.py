"""
The cache's configuration and the shared-cache rules hishel leaves to its caller.

Kept apart from `fastapi_retry_http.cache` (which imports hishel, the `[cache]` extra) so that
`ClientSettings` can name `HttpCache` as a field type without the extra installed: the
strategy itself is built, and hishel imported, only for a client that has a cache.
"""

from __future__ import annotations

import datetime
import email.utils
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

import httpx

from .._pipeline.checks import first_problem, is_count
from .._pipeline.httpx_parts import header_list

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_ENTRIES",
    "DEFAULT_MAX_ENTRY_BYTES",
    "ERROR_STATUSES",
    "HttpCache",
    "allows_shared_reuse",
    "directives",
    "stale_if_error_allows",
]

#: Entries kept by the in-memory storage at most; the least recently used goes first.
DEFAULT_MAX_ENTRIES: Final = 1000
#: Bytes of stored bodies at most (memory), or of the database file (SQLite).
DEFAULT_MAX_BYTES: Final = 64 * 1024 * 1024
#: A response whose body is larger than this is passed on, never stored.
DEFAULT_MAX_ENTRY_BYTES: Final = 1024 * 1024

#: Upstream answers that count as an error for `stale-if-error` (RFC 5861 §4), besides any
#: transport error (a refused call included: `CircuitOpenError`, a rate limit, a deadline).
ERROR_STATUSES: Final = frozenset({500, 502, 503, 504})
#: Response headers (lowercased) that alone make a stored response reusable.
_LIFETIME_OR_VALIDATOR: Final = frozenset({b"etag", b"last-modified", b"expires"})

Storage = Literal["memory", "sqlite"]


@dataclass(frozen=True, slots=True)
class HttpCache:
    """
    An RFC 9111 shared cache in front of a client (`Client(cache=HttpCache())`).

    Needs the `[cache]` extra (hishel). A client serves many end users, so the cache is
    *shared* in RFC 9111's sense: `private` and `no-store` responses are never stored, and a
    request with `Authorization` is answered from the cache only when the response allowed it
    (`public`, `s-maxage` or `must-revalidate`). See the Caching page for every rule.

    Attributes:
        storage: `"memory"` (this process only, the default) or `"sqlite"` (a file at
            `path`, shared by every process that opens it: a fleet on one host).
        path: The SQLite file; required with `storage="sqlite"`, unused otherwise.
        max_entries: Entries kept in memory at most (least recently used evicted first).
            SQLite bounds its file by `max_bytes` only.
        max_bytes: Bytes of stored bodies at most (memory), or of the SQLite file.
        max_entry_bytes: A body larger than this is passed on and never stored.
    """

    storage: Storage = "memory"
    path: str | None = None
    max_entries: int = DEFAULT_MAX_ENTRIES
    max_bytes: int = DEFAULT_MAX_BYTES
    max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES

    def __post_init__(self) -> None:
        problem = first_problem(
            [
                ("storage", self.storage in ("memory", "sqlite"), "must be 'memory' or 'sqlite'"),
                ("path", self.storage != "sqlite" or bool(self.path), "is required with storage='sqlite'"),
                ("max_entries", is_count(self.max_entries, 1), "must be an integer of at least 1"),
                ("max_bytes", is_count(self.max_bytes, 1), "must be an integer of at least 1"),
                ("max_entry_bytes", is_count(self.max_entry_bytes, 0), "must be an integer of at least 0"),
                ("max_entry_bytes", self.max_entry_bytes <= self.max_bytes, "must be <= max_bytes"),
            ]
        )
        if problem is not None:
            raise ValueError(f"HttpCache.{problem}")


def directives(cache_control: str | None) -> dict[str, str | None]:
    """`Cache-Control` as `{directive: argument or None}`, names in lower case."""
    parsed: dict[str, str | None] = {}
    for part in (cache_control or "").split(","):
        name, _, argument = part.strip().partition("=")
        if name:
            parsed.setdefault(name.lower(), argument.strip().strip('"') if argument else None)
    return parsed


def _seconds(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def allows_shared_reuse(response_headers: Mapping[str, str]) -> bool:
    """
    Whether a stored response may answer a request that carries `Authorization` (RFC 9111
    §3.5). hishel checks this when storing, for the request that stored the entry; a shared
    cache must also check it when reusing, for the request being answered.
    """
    found = directives(response_headers.get("cache-control"))
    return "public" in found or "s-maxage" in found or "must-revalidate" in found


def reusable(response_headers: httpx.Headers) -> bool:
    """
    Whether a stored response could ever spare a call: it has a validator (`ETag`,
    `Last-Modified`: a 304 can confirm it), a freshness lifetime (`s-maxage`, `max-age` above
    0, `Expires`), or a `stale-if-error` window. hishel stores any storable response; one with
    none of these (`200 OK` and no caching headers, most API answers) can never be served, and
    storing it only adds an entry every later call has to look through.
    """
    # One pass over the names as bytes: a lookup by name of a header that is missing raises
    # and catches a KeyError inside httpx, and most answers have none of these.
    cache_control: list[str] = []
    for _, name, value in header_list(response_headers):
        if name in _LIFETIME_OR_VALIDATOR:
            return True
        if name == b"cache-control":
            cache_control.append(value.decode("latin-1"))
    if not cache_control:
        return False
    found = directives(", ".join(cache_control))
    return bool(_seconds(found.get("s-maxage")) or _seconds(found.get("max-age"))) or "stale-if-error" in found


def stale_if_error_allows(response_headers: Mapping[str, str], now: float) -> bool:
    """
    Whether a stored response may answer in place of an upstream error (RFC 5861 §4): within
    its freshness lifetime plus `stale-if-error` seconds of its `Date`, and never when
    `no-cache`, `must-revalidate`, `proxy-revalidate` or `s-maxage` (which implies
    proxy-revalidate for a shared cache) forbid serving it stale (RFC 9111 §4.2.4).
    hishel 2.0 does not implement `stale-if-error`.
    """
    found = directives(response_headers.get("cache-control"))
    window = _seconds(found.get("stale-if-error"))
    if window is None or found.keys() & {"no-cache", "must-revalidate", "proxy-revalidate", "s-maxage"}:
        return False
    date = _epoch(response_headers.get("date"))
    if date is None:
        return False
    lifetime = _seconds(found.get("max-age"))
    if lifetime is None:
        expires = _epoch(response_headers.get("expires"))
        lifetime = 0 if expires is None else max(0, int(expires - date))
    return now - date <= lifetime + window


def _epoch(http_date: str | None) -> float | None:
    if not http_date:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(http_date)
    except (TypeError, ValueError):
        return None
    # HTTP dates are GMT; one written without a zone must not be read as local time.
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)).timestamp()
