"""
What an upstream says about its quota, read from a response's headers.

Three dialects, in this order of precedence:

- `Retry-After` on a 429 or 503: no request before then (it overrides the others, as the IETF
  draft says).
- The IETF draft (draft-ietf-httpapi-ratelimit-headers, structured fields):
  `RateLimit-Policy: "default";q=100;w=60` (a quota of `q` requests per `w` seconds) and
  `RateLimit: "default";r=42;t=17` (`r` left, reset in `t` seconds). Several policies: the
  most restrictive wins. Items whose quota unit (`qu`) is not `"requests"` are skipped.
- The common dialect: `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset`
  (and the same without `X-`, from the draft's early revisions). The reset is seconds left,
  or a Unix time (seconds, or milliseconds): a value of `EPOCH_FROM` or more is a time (the
  seconds in 31 years would be less), taken against this host's wall clock.

A field that cannot be read is ignored; its name is returned so the caller can warn once.
"""

from __future__ import annotations

import math
import operator
import re
import time
from dataclasses import dataclass
from typing import Final

import httpx

from .._pipeline.httpx_parts import header_list
from .._pipeline.policy import RETRY_AFTER_STATUSES, parse_retry_after

__all__ = ["EPOCH_FROM", "ServerWord", "read"]

#: A reset at least this large is a Unix time (1e9 s is September 2001), not seconds left.
EPOCH_FROM: Final = 1_000_000_000
#: A Unix time at least this large is in milliseconds.
EPOCH_MS_FROM: Final = 100_000_000_000
#: The longest reset or window believed, in seconds (a day): anything longer is malformed.
LONGEST: Final = 86_400.0
#: The headers that say something on their own, lowercased as httpx keeps them too (a reset
#: or a limit says nothing without its remaining count).
_SIGNALS: Final = frozenset(
    (b"retry-after", b"ratelimit", b"ratelimit-policy", b"x-ratelimit-remaining", b"ratelimit-remaining")
)
_NAME: Final = operator.itemgetter(1)

_MEMBER = re.compile(r'\s*("(?:[^"\\]|\\.)*"|[A-Za-z*][\w.:/%*-]*)((?:\s*;\s*[a-z*][a-z0-9_.*-]*=[^;,]*)*)\s*')
_PARAM = re.compile(r'\s*;\s*([a-z*][a-z0-9_.*-]*)=("(?:[^"\\]|\\.)*"|[^;,\s]*)\s*')


@dataclass(slots=True)
class ServerWord:
    """What one response said; `None` where it said nothing (or nothing readable)."""

    pause: float | None = None
    left: int | None = None
    reset: float | None = None
    quota: int | None = None
    window: float | None = None
    malformed: str | None = None


def says_anything(response: httpx.Response) -> bool:
    """Whether `response` has a header `read` reads; most say nothing, found without decoding them."""
    return not _SIGNALS.isdisjoint(map(_NAME, header_list(response.headers)))  # in C: a third of a loop's cost


def read(response: httpx.Response, wall: float | None = None) -> ServerWord:
    """The quota signals of `response`; `wall` is the Unix time now (for epoch resets)."""
    headers, word = response.headers, ServerWord()
    if not says_anything(response):
        return word
    if response.status_code in RETRY_AFTER_STATUSES and "retry-after" in headers:
        word.pause = parse_retry_after(headers["retry-after"])
        if word.pause is None:
            word.malformed = "Retry-After"
    policy = headers.get("ratelimit-policy")
    if policy is not None:
        policies = _items(policy, "q", "w")
        if policies is None:
            word.malformed = "RateLimit-Policy"
        elif policies:
            word.quota, window = min(policies, key=lambda p: p[0] / (p[1] or 1.0))
            word.window = float(window) if window is not None else None
    current = headers.get("ratelimit")
    if current is not None:
        remaining = _items(current, "r", "t")
        if remaining is None:
            word.malformed = "RateLimit"
        elif remaining:
            word.left, reset = min(remaining, key=lambda p: p[0])
            word.reset = float(reset) if reset is not None else None
    if word.left is None:
        _common(headers, word, time.time() if wall is None else wall)
    return word


def _items(field: str, count: str, seconds: str) -> list[tuple[int, int | None]] | None:
    """`(count, seconds)` of each member of a structured-field list; `None` if unreadable."""
    found: list[tuple[int, int | None]] = []
    for member in _split(field):
        match = _MEMBER.fullmatch(member)
        if match is None:
            return None
        params = dict(_PARAM.findall(match.group(2)))
        if params.get("qu", '"requests"') != '"requests"':
            continue
        value, span = _integer(params.get(count)), _integer(params.get(seconds)) if seconds in params else None
        if value is None or (seconds in params and (span is None or span > LONGEST)):
            return None
        if count == "q" and (value == 0 or span == 0):
            return None
        found.append((value, span))
    return found


def _split(field: str) -> list[str]:
    """The members of a list, split at commas outside quoted strings."""
    members, quoted, start = [], False, 0
    for index, char in enumerate(field):
        if char == '"' and (index == 0 or field[index - 1] != "\\"):
            quoted = not quoted
        elif char == "," and not quoted:
            members.append(field[start:index])
            start = index + 1
    members.append(field[start:])
    return [member for member in members if member.strip()]


def _integer(text: str | None) -> int | None:
    # Structured-field integers: at most 15 digits, no sign here (counts and seconds are >= 0).
    if text is None or not text.isdigit() or len(text) > 15:
        return None
    return int(text)


def _common(headers: httpx.Headers, word: ServerWord, wall: float) -> None:
    for prefix, name in (("x-ratelimit-", "X-RateLimit-Reset"), ("ratelimit-", "RateLimit-Reset")):
        remaining = headers.get(prefix + "remaining")
        if remaining is None:
            continue
        left, reset = _number(remaining), _number(headers.get(prefix + "reset", ""))
        limit = headers.get(prefix + "limit")
        if left is None or reset is None:
            word.malformed = name
            return
        if reset >= EPOCH_FROM:
            reset = (reset / 1000.0 if reset >= EPOCH_MS_FROM else reset) - wall
        word.left, word.reset = int(left), min(max(0.0, reset), LONGEST)
        quota = _number(limit) if limit is not None else None
        if quota is not None and quota >= 1:
            word.quota = int(quota)
        return


def _number(text: str) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None
