"""
The send stage of one attempt: within the call's deadline, out of reach of cancellation where
the backend needs it, the response's body read and size-capped inside the attempt.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final

import httpx

from .._backends.protocol import shield_of
from .._safety.size_cap import limit_body
from ..exceptions import AttemptTimeout, DeadlineExceeded, ResponseTooLargeError
from .attempts import Call, call_options
from .deadlines import Deadlines
from .strategy import Interceptor

__all__ = ["INJECTED_EXTENSION", "Sender", "attempt_limit", "cut_short", "discard"]

#: `request.extensions` key set by chaos: the attempts it acted on (attempt number to what it
#: injected); on a response, `True` when chaos made it up (nothing was sent).
INJECTED_EXTENSION: Final = "fastapi_retry_http.injected"

#: How much of a discarded response is read so its connection can be reused; a larger body is
#: cut off by closing the connection instead.
DRAIN_LIMIT: Final = 64 * 1024


class Sender:
    """Sends attempts through the inner transport (the backend)."""

    __slots__ = ("_clock", "_inner", "_shield", "deadlines", "interceptors", "max_response_bytes")

    def __init__(
        self, inner: httpx.AsyncBaseTransport, clock: Callable[[], float], max_response_bytes: int | None
    ) -> None:
        self.inner = inner
        self._clock = clock
        self.max_response_bytes = max_response_bytes
        self.deadlines = Deadlines()
        #: Strategies that may answer in place of the network (chaos), asked in order.
        self.interceptors: tuple[Interceptor, ...] = ()

    @property
    def inner(self) -> httpx.AsyncBaseTransport:
        """The backend every attempt goes through; replacing it (in tests) is safe at any time."""
        return self._inner

    @inner.setter
    def inner(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner
        # Decided here, not per request, and again whenever the backend is replaced.
        self._shield = shield_of(inner)

    async def send(self, call: Call) -> httpx.Response:
        """One attempt of `call`, bounded by its attempt timeout and by its deadline."""
        request = call.request
        limit, by_deadline = attempt_limit(call, self._clock)
        if limit is None:
            return await (self._intercepted(call) if self.interceptors else self._shielded(request))
        # A slow drip never trips httpx's per-read timeout; these bound the whole attempt.
        task = self.deadlines.watch(limit)
        try:
            return await (self._intercepted(call) if self.interceptors else self._shielded(request))
        except asyncio.CancelledError:
            if task in self.deadlines.fired and task.uncancel() == 0:
                raise cut_short(request, limit, by_deadline) from None
            raise
        finally:
            self.deadlines.unwatch(task)

    def _intercepted(self, call: Call, start: int = 0) -> Awaitable[httpx.Response]:
        """Within the attempt's time: an interceptor's answer, or the network's."""
        interceptors = self.interceptors
        for index in range(start, len(interceptors)):
            acting = interceptors[index].intercept(call)
            if acting is not None:
                return self._acted(call, acting, index + 1)
        return self._shielded(call.request)

    async def _acted(self, call: Call, acting: Awaitable[httpx.Response | None], following: int) -> httpx.Response:
        response = await acting
        return response if response is not None else await self._intercepted(call, following)

    def _shielded(self, request: httpx.Request) -> Awaitable[httpx.Response]:
        sending = self._send(request)
        return sending if self._shield is None else self._shield(sending)

    async def _send(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        buffered = not call_options(request).stream
        try:
            limit_body(response, request, self.max_response_bytes, buffered=buffered)
        except ResponseTooLargeError:
            await response.aclose()  # refused on its Content-Length, before reading
            raise
        if buffered and not (response.is_stream_consumed and response.is_closed):  # else the backend read it
            try:
                await response.aread()
            finally:
                await response.aclose()
        return response  # closed when read: the executor sets its `elapsed`, the attempt's duration


def attempt_limit(call: Call, clock: Callable[[], float]) -> tuple[float | None, bool]:
    """
    Seconds the next attempt of `call` may take (`None`: no limit), and whether the deadline
    sets them; raises `DeadlineExceeded` when it has already passed.
    """
    limit = call.policy.attempt_timeout
    if call.deadline_at is None:
        return limit, False
    remaining = call.deadline_at - clock()
    if remaining <= 0:
        raise DeadlineExceeded("The retry deadline passed before the attempt started.", request=call.request)
    # An attempt timeout never outlasts what is left of the deadline.
    by_deadline = limit is None or remaining <= limit
    return (remaining if by_deadline else limit), by_deadline


def cut_short(request: httpx.Request, limit: float, by_deadline: bool) -> httpx.TimeoutException:
    """The error of an attempt that ran out of its `limit` seconds."""
    if by_deadline:
        return DeadlineExceeded("The retry deadline passed during the attempt.", request=request)
    message = f"The attempt took longer than attempt_timeout ({limit:g}s) and was cancelled."
    return AttemptTimeout(message, request=request)


async def discard(response: httpx.Response) -> None:
    """Release a response that will not be returned, so its connection goes back to the pool."""
    try:
        if not response.is_stream_consumed:
            drained = 0
            async for chunk in response.aiter_raw():
                drained += len(chunk)
                if drained > DRAIN_LIMIT:
                    break
    except httpx.HTTPError:
        pass  # The connection is broken; closing it below is all that is left to do.
    finally:
        await response.aclose()
