"""
Every default of a client, stated once: `Client` and `ClientSettings` both read them here.
"""

from __future__ import annotations

from typing import Final

from ._backends import DEFAULT_LIMITS
from ._safety.size_cap import DEFAULT_MAX_RESPONSE_BYTES
from ._strategies.budget import DEFAULT_BUDGET

__all__ = [
    "DEFAULT_BUDGET",
    "DEFAULT_LIMITS",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_TIMEOUT",
    "MAX_REDIRECTS",
]

#: Seconds for each phase of one attempt (connect, read, write, pool).
DEFAULT_TIMEOUT: Final = 10.0


#: Redirects followed per request at most (httpx allows 20); a loop ends in `httpx.TooManyRedirects`.
MAX_REDIRECTS: Final = 5
