"""
Redis URLs in settings: checked at startup, shown masked.

A Redis URL carries its password, so neither the check nor the masked form ever repeats the
userinfo, and a malformed URL is described by what is wrong with it, never quoted.
"""

from __future__ import annotations

import urllib.parse
from typing import Final

__all__ = ["masked_redis_url", "redis_url_problem"]

#: The schemes redis-py's `Redis.from_url` understands.
SCHEMES: Final = ("redis", "rediss", "unix")


def redis_url_problem(url: str) -> str | None:
    """What is wrong with `url` as a Redis URL (value not shown), or `None` when it is usable."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # raises for a port that is not a number or out of range
    except ValueError:
        return "not a URL (value not shown); expected redis://[user:password@]host[:port][/db]"
    if parts.scheme not in SCHEMES:
        return f"the scheme must be one of {', '.join(SCHEMES)} (value not shown)"
    if parts.scheme == "unix":
        return None if parts.path else "a unix:// URL needs the socket's path (value not shown)"
    if not parts.hostname:
        return "the URL has no host (value not shown); expected redis://[user:password@]host[:port][/db]"
    database = parts.path.strip("/")
    if database and not database.isdigit():
        return "the database (the URL's path) must be a number (value not shown)"
    del port
    return None


def masked_redis_url(url: str) -> str:
    """`url` with its user and password replaced by `***` and without query or fragment."""
    if redis_url_problem(url) is not None:
        return "<invalid Redis URL>"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "unix":  # a socket path; a password would be in the query, left out
        return f"unix://{parts.path}"
    userinfo = "***@" if "@" in parts.netloc else ""
    port = f":{parts.port}" if parts.port else ""
    return urllib.parse.urlunsplit((parts.scheme, f"{userinfo}{parts.hostname or ''}{port}", parts.path, "", ""))
