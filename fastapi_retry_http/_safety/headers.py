"""
Header checks made before any I/O, the same on both backends: a name must be an RFC 9110
token and a value must not carry a control character (CR/LF would split the request).

h11 and aiohttp would otherwise raise errors of their own that quote the value (header
values are credentials), or, for aiohttp and a bad name, send it as is.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from typing import Final

__all__ = ["INVALID_HEADER_NAME", "header_problem"]

# RFC 9110 field names are tokens; anything else (a space, a colon) makes a different header
# on the wire, or a 400.
_TOKEN_CHARS: Final = (string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~").encode()
# Field values: visible characters, space, tab and obs-text; never CR, LF, NUL or another control.
_VALUE_CHARS: Final = bytes([0x09, *range(0x20, 0x7F), *range(0x80, 0x100)])

#: The error message for a header name that is not an RFC 9110 token (the name is not shown:
#: a value pasted into the name by mistake would be a credential).
INVALID_HEADER_NAME: Final = (
    "A request header name is not a valid HTTP token (RFC 9110 allows letters, digits and "
    "!#$%&'*+-.^_`|~ only; no spaces or colons). The name is not shown."
)


def header_problem(headers: Iterable[tuple[str | bytes, str | bytes]]) -> str | None:
    """
    What is wrong with the first invalid header of `headers`, or `None`: a name that is not
    a token, a control character (CR, LF, NUL...) in a value, or a non-ASCII text value.

    The message names the header when its name is valid, and never shows a value.
    """
    for name, value in headers:
        raw_name = name.encode("latin-1", "replace") if isinstance(name, str) else name
        if not raw_name or raw_name.translate(None, _TOKEN_CHARS):
            return INVALID_HEADER_NAME
        if isinstance(value, str):
            if not value.isascii():
                return (
                    f"Request header {raw_name.decode()!r} has a non-ASCII value, which HTTP/1.1 cannot carry "
                    "as text (value not shown). Encode it first, for example percent-encoded as in RFC 8187."
                )
            value = value.encode()
        if value.translate(None, _VALUE_CHARS):
            return f"Request header {raw_name.decode()!r} has a control character in its value (value not shown)."
    return None
