"""
The path guard: a path handed to a client must stay under the client's base URL.

httpx merges `http://other/x` by replacing the host, silently drops the host of `//other/x`,
and resolves `../../admin` above the base path. A path built from user input could then
carry the client's credentials to another host or endpoint, so those are refused before any
I/O.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Final

from .exceptions import UnsafePathError

# A scheme (RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":") at the very start.
_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
# Percent-encoded "." and "/": servers decode them, so they count as the real thing.
_ENCODED_DOT: Final = re.compile(r"%2e", re.IGNORECASE)
_ENCODED_SLASH: Final = re.compile(r"%2f", re.IGNORECASE)
# Paths made only of these cannot carry a scheme, a dot segment, an escape or a control character.
_PLAIN: Final = frozenset(string.ascii_letters + string.digits + "-_~/")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
# Tab is legal inside a header value; every other control character splits or corrupts it.
_HEADER_CONTROL: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


#: The error message for a header that would split the request: the value is never shown.
ILLEGAL_HEADER: Final = "A request header name or value contains a control character (value not shown)."


def control_character_header(headers: Mapping[str, str]) -> str | None:
    """The name of the first header whose name or value holds CR, LF or another control character."""
    for name, value in headers.items():
        if _HEADER_CONTROL.search(name) or _HEADER_CONTROL.search(value):
            return name
    return None


def check_path(path: str, *, allow_absolute_urls: bool) -> None:
    """
    Raise `UnsafePathError` if `path` could leave the base URL it is merged into.

    Refused: control characters (CR/LF/NUL...), a leading `//` or any backslash, a scheme
    (`https://other/`, `https:/x`, `mailto:`) unless `allow_absolute_urls`, and `..`
    segments, raw or `%2e`-encoded, that climb above the base path at any point.
    """
    if _PLAIN.issuperset(path) and not path.startswith("//"):
        return  # the common case, checked in one pass: nothing here can leave the base
    if _CONTROL.search(path):
        raise UnsafePathError("Request path contains a control character.")
    resource = path.split("?", 1)[0].split("#", 1)[0]
    if "\\" in resource:
        raise UnsafePathError("Request path contains a backslash, which servers may read as '/'.")
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
        if segment == "..":
            depth -= 1
            if depth < 0:
                raise UnsafePathError("Request path has '..' segments that climb above the client's base URL.")
        elif segment not in ("", "."):
            depth += 1
