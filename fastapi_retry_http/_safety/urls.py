"""
The path guard (a path handed to a client must stay under the client's base URL) and the
base URL rules shared by `Client` and `ClientSettings`.

httpx merges `http://other/x` by replacing the host, silently drops the host of `//other/x`,
and resolves `../../admin` above the base path. A path built from user input could then
carry the client's credentials to another host or endpoint, so those are refused before any
I/O.
"""

from __future__ import annotations

import re
import string
from typing import Final

import httpx

from ..exceptions import UnsafePathError

# A scheme (RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":") at the very start.
_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
# Percent-encoded "." and "/": servers decode them, so they count as the real thing.
_ENCODED_DOT: Final = re.compile(r"%2e", re.IGNORECASE)
_ENCODED_SLASH: Final = re.compile(r"%2f", re.IGNORECASE)
# IIS and other Windows servers decode %5c to a backslash and read it as "/".
_ENCODED_BACKSLASH: Final = re.compile(r"%5c", re.IGNORECASE)
# Paths made only of these cannot carry a scheme, a dot segment, an escape or a control character.
_PLAIN: Final = frozenset(string.ascii_letters + string.digits + "-_~/")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


def base_url_problem(url: httpx.URL) -> str | None:
    """What is wrong with `url` as a client's base URL, or `None`. The URL is never shown."""
    if url.userinfo:
        # Settings and reprs get printed and logged; a password in a URL goes with them. The
        # two backends also disagree on what to do with it (httpx sends Basic auth).
        return "credentials in the URL are not allowed: put them in headers"
    if url.query or url.fragment:
        # httpx would append every path after the query string; the query may hold a key.
        return "a query or fragment is not allowed in a base URL"
    if str(url) and url.scheme not in ("http", "https"):
        return "the scheme must be http or https"
    return None


def proxy_problem(proxy: str | httpx.URL) -> str | None:
    """What is wrong with `proxy` as a proxy URL, or `None`. The URL is never shown."""
    try:
        url = httpx.URL(proxy)
    except httpx.InvalidURL:
        return "not a valid URL"
    if url.scheme not in ("http", "https") or not url.host:
        return "must be an http:// or https:// URL with a host"
    return None


def check_path(path: str, *, allow_absolute_urls: bool) -> None:
    """
    Raise `UnsafePathError` if `path` could leave the base URL it is merged into.

    Refused: control characters (CR/LF/NUL...), a leading `//` or any backslash (raw or
    `%5c`), a scheme (`https://other/`, `https:/x`, `mailto:`) unless `allow_absolute_urls`,
    and `..` segments, raw or `%2e`-encoded, with or without `;parameters`, that climb above
    the base path at any point.
    """
    if _PLAIN.issuperset(path) and not path.startswith("//"):
        return  # the common case, checked in one pass: nothing here can leave the base
    if _CONTROL.search(path):
        raise UnsafePathError("Request path contains a control character.")
    resource = path.split("?", 1)[0].split("#", 1)[0]
    if "\\" in resource or _ENCODED_BACKSLASH.search(resource):
        raise UnsafePathError("Request path contains a backslash (raw or %5c), which servers may read as '/'.")
    if path.startswith("//"):
        raise UnsafePathError(
            "Request path starts with '//', which names another host. Pass a path relative to the base URL."
        )
    if _SCHEME.match(path):
        if allow_absolute_urls:
            return
        raise UnsafePathError(
            "Request path is an absolute URL (or starts with 'name:'), which would leave the client's "
            "base URL. Pass a path relative to the base URL ('./name:x' for a first segment with a "
            "colon), or create the client with allow_absolute_urls=True."
        )
    _check_dot_segments(resource)


def _check_dot_segments(resource: str) -> None:
    depth = 0
    normalised = _ENCODED_SLASH.sub("/", _ENCODED_DOT.sub(".", resource))
    for segment in normalised.split("/"):
        # Tomcat, Spring and Jetty drop ";parameters" from a segment before resolving it,
        # so "..;/" and "..;x=1/" climb like "../".
        segment = segment.split(";", 1)[0]
        if segment == "..":
            depth -= 1
            if depth < 0:
                raise UnsafePathError("Request path has '..' segments that climb above the client's base URL.")
        elif segment not in ("", "."):
            depth += 1
