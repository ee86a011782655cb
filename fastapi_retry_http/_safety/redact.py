"""
Keeping secrets out of logs: URLs are written without userinfo and query values.

A query part without `=` (a signed URL's `?s3cr3t-signature`, a bare API key) is a value
with no key: it is replaced whole. A part with `=` keeps its key, which helps debugging.

httpx logs every request at INFO as `HTTP Request: GET <full URL> ...`, query string and
userinfo included, so an API key passed as a query parameter lands in the service's logs.
`Client` installs `HttpxLogRedactor` on the `httpx` logger; it rewrites that one record.
"""

from __future__ import annotations

import logging
from typing import Final

import httpx

__all__ = ["HttpxLogRedactor", "install_httpx_log_redactor", "loggable_url", "redacted_query", "url_without_query"]

REDACTED: Final = "[redacted]"


def url_without_query(url: httpx.URL) -> str:
    """Scheme, host, port and path only: query values and userinfo may carry secrets."""
    return f"{url.scheme}://{url.netloc.decode('ascii')}{url.path}"


def redacted_query(url: httpx.URL, marker: str) -> str:
    """
    `url`'s query with every value replaced by `marker`: `a=1&token` gives `a=<marker>&<marker>`.

    The raw query is split by hand: `url.params` reads a bare token as a key with an empty
    value, and costs more to build than the span or the log line it is for.
    """
    parts = (part.split(b"=", 1) for part in url.query.split(b"&") if part)
    return "&".join(f"{part[0].decode('ascii')}={marker}" if len(part) == 2 else marker for part in parts)


def loggable_url(url: httpx.URL) -> str:
    """`url` without userinfo or fragment, query values replaced by a marker (keys stay: they help debugging)."""
    query = redacted_query(url, REDACTED)
    return url_without_query(url) + (f"?{query}" if query else "")


class HttpxLogRedactor(logging.Filter):
    """Rewrites httpx's `HTTP Request:` records so they carry a loggable URL."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) > 1 and isinstance(args[1], httpx.URL):
            record.args = (args[0], loggable_url(args[1]), *args[2:])
        return True


_redactor: Final = HttpxLogRedactor()


def install_httpx_log_redactor() -> None:
    """Add the redactor to httpx's logger once (idempotent), and to httpx2's: it logs the same line."""
    for name in ("httpx", "httpx2"):
        httpx_logger = logging.getLogger(name)
        if _redactor not in httpx_logger.filters:
            httpx_logger.addFilter(_redactor)
