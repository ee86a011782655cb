"""
Every default of a client, stated once: `Client` and `ClientSettings` both read them here.
"""

from __future__ import annotations

from typing import Final

from ._backends import DEFAULT_LIMITS
from ._resilience.budget import RetryBudget
from ._safety.size_cap import DEFAULT_MAX_RESPONSE_BYTES

__all__ = [
    "DEFAULT_BUDGET",
    "DEFAULT_LIMITS",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_TIMEOUT",
    "MAX_REDIRECTS",
]

#: Seconds for each phase of one attempt (connect, read, write, pool).
DEFAULT_TIMEOUT: Final = 10.0

#: The retry budget every client gets unless told otherwise: 100 retries + 50% of requests per 10 s.
DEFAULT_BUDGET: Final = RetryBudget()

#: Redirects followed per request at most (httpx allows 20); a loop ends in `httpx.TooManyRedirects`.
MAX_REDIRECTS: Final = 5
