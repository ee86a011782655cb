"""Process-wide test switches, set through `fastapi_retry_http.testing`."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

#: When set, replaces `asyncio.sleep` for every backoff wait of every `RetryTransport` that
#: was not given a `sleep` of its own.
sleep: Callable[[float], Awaitable[None]] | None = None

#: Seconds of backoff skipped by the no-sleep mode. The deadline clock adds them, so a
#: deadline still ends the retries in tests exactly where it would have for real.
skipped: float = 0.0


def monotonic() -> float:
    """The clock deadlines are measured on: `time.monotonic()` plus skipped waits."""
    return time.monotonic() + skipped
