"""
Redis URLs in log lines, reprs and errors: only what is certainly not a credential is shown.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Final

__all__ = ["UNPARSABLE", "redacted"]

#: Shown in place of a URL that cannot be shown safely.
UNPARSABLE: Final = "<unparsable Redis URL>"
_SCHEMES: Final = frozenset({"redis", "rediss", "unix"})
_HOST: Final = re.compile(r"[A-Za-z0-9._-]+|[0-9A-Fa-f:.]+")
_DATABASE: Final = re.compile(r"/\d{0,6}")
_SOCKET: Final = re.compile(r"/[A-Za-z0-9._/-]*")


def redacted(url: str) -> str:
    """
    `url` with nothing that may be a credential, for log lines, reprs and errors.

    Only what is certainly not a secret is kept: a known scheme, the host, the port and the
    database number (or a socket's path); user, password and query never. A URL that does not
    parse as one of those (`redis//:pw@host`, `redis:/:pw@host`, `default:pw@host`) is shown
    as `<unparsable Redis URL>`: a malformed URL may carry its password anywhere.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return UNPARSABLE
    userinfo = "***@" if "@" in parts.netloc else ""
    if parts.scheme == "unix" and not host and _SOCKET.fullmatch(parts.path):
        return f"unix://{userinfo}{parts.path}"
    if parts.scheme not in _SCHEMES or not _HOST.fullmatch(host):
        return UNPARSABLE
    path = parts.path if _DATABASE.fullmatch(parts.path) else ""
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{userinfo}{host}{port}{path}"
