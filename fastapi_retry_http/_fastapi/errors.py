"""
`exception_handlers()`: upstream failures answered as 502, 503 and 504 problem details.

Without them a `CircuitOpenError` or an `httpx.ConnectError` escaping a route is a 500, which
says "this service is broken" when the truth is "the service it depends on is". The body is
RFC 9457 `application/problem+json` naming the client, never the upstream URL or the error's
text: both can carry internal host names, paths or tokens.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any, Final

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import exceptions
from .lifespan import STATE_KEY
from .registry import ClientRegistry

__all__ = ["REFUSALS", "exception_handlers"]

logger: Final = logging.getLogger("fastapi_retry_http")

#: The errors by which the library refuses a call before sending anything, by name in
#: `fastapi_retry_http.exceptions`: each has `client` and `retry_after`, and becomes a 503 with
#: `Retry-After`. Looked up when `exception_handlers()` is called, so a refusal added to the
#: exceptions module only needs its name here.
REFUSALS: Final = ("CircuitOpenError", "RateLimitedError", "ThrottledError")

#: Why a refusal was made, for the problem's `reason` member.
_REASONS: Final = {"CircuitOpenError": "breaker", "RateLimitedError": "rate_limit", "ThrottledError": "throttle"}

Handler = Callable[[Request, Exception], Coroutine[Any, Any, Response]]


def exception_handlers() -> dict[Any, Handler]:
    """
    Handlers that answer upstream failures escaping a route as proper HTTP errors.

    ```python
    app = FastAPI(lifespan=clients_lifespan(configs), exception_handlers=exception_handlers())
    ```

    - `CircuitOpenError`, `RateLimitedError`, `ThrottledError` (nothing was sent): **503**
      with `Retry-After` in whole seconds, rounded up (at least 1);
    - `httpx.TimeoutException` (the deadline, an attempt timeout, httpx's own): **504**;
    - any other `httpx.TransportError` (connect errors, resets, a body too large): **502**.

    The body is `application/problem+json` (RFC 9457): `type`, `title`, `status`, `detail`
    and two extension members, `client` (the client's name, `null` when it cannot be told)
    and `reason`; never the upstream's URL or the error's text. Each answer is logged at
    INFO on the `fastapi_retry_http` logger with the client and the error's class.

    Merge with your own: `FastAPI(exception_handlers={**exception_handlers(), MyError: mine})`.
    """
    handlers: dict[Any, Handler] = {httpx.TransportError: _bad_gateway, httpx.TimeoutException: _gateway_timeout}
    for name in REFUSALS:
        refusal = getattr(exceptions, name, None)
        if refusal is not None:
            handlers[refusal] = _unavailable
    return handlers


async def _unavailable(request: Request, error: Exception) -> Response:
    retry_after = getattr(error, "retry_after", 0.0)
    known = isinstance(retry_after, int | float) and math.isfinite(retry_after)
    seconds = max(1, math.ceil(retry_after)) if known else 1
    client = _client_name(request, error)
    reason = _REASONS.get(type(error).__name__, _refusal_reason(error))
    detail = f"The upstream service{_named(client)} is not being called for now ({reason}); retry in {seconds} s."
    return _problem(request, error, 503, client, reason, detail, {"Retry-After": str(seconds)})


async def _gateway_timeout(request: Request, error: Exception) -> Response:
    client = _client_name(request, error)
    detail = f"The upstream service{_named(client)} did not answer in time."
    return _problem(request, error, 504, client, "timeout", detail)


async def _bad_gateway(request: Request, error: Exception) -> Response:
    client = _client_name(request, error)
    detail = f"The upstream service{_named(client)} could not be reached or gave no usable answer."
    return _problem(request, error, 502, client, "upstream_error", detail)


def _refusal_reason(error: Exception) -> str:
    # A refusal class named in REFUSALS but not in _REASONS (added later): its own `reason`.
    reason = getattr(error, "reason", None)
    return reason if isinstance(reason, str) else "refused"


def _named(client: str | None) -> str:
    return "" if client is None else f" of client {client!r}"


def _problem(
    request: Request,
    error: Exception,
    status: int,
    client: str | None,
    reason: str,
    detail: str,
    headers: dict[str, str] | None = None,
) -> Response:
    logger.info(
        "%s: %s %s answered %d (%s)",
        client or "unknown client",
        request.method,
        request.url.path,
        status,
        type(error).__name__,
        extra={"client": client, "status": status, "error": type(error).__name__},
    )
    body = {
        "type": "about:blank",  # RFC 9457 §4.2.1: the title is then the status phrase
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "client": client,
        "reason": reason,
    }
    return JSONResponse(body, status, headers=headers, media_type="application/problem+json")


def _client_name(request: Request, error: Exception) -> str | None:
    """The client's name: the error's own, else the client of the app whose base URL the failed request is under."""
    name = getattr(error, "client", None)
    if isinstance(name, str):
        return name
    try:
        url = str(error.request.url) if isinstance(error, httpx.RequestError) else None
    except RuntimeError:  # an httpx error raised without its request
        url = None
    registry = _registry(request)
    if url is None or registry is None:
        return None
    for client_name, client in registry.items():
        if url.startswith(str(client.base_url)):
            return client_name
    return None


def _registry(request: Request) -> ClientRegistry | None:
    found = getattr(request.state, STATE_KEY, None) or getattr(request.app.state, STATE_KEY, None)
    return found if isinstance(found, ClientRegistry) else None
