"""
The operators' dashboard: every client's breaker, budget, limits and recent attempts, on one page.

```python
from fastapi_retry_http.dashboard import AttemptLog, clients_router

log = AttemptLog()  # remembers the recent attempts the page shows
app = FastAPI(lifespan=clients_lifespan(settings.http_clients, instrumentation=[log]))
app.include_router(clients_router(dependencies=[Depends(operators_only)]), prefix="/ops/clients")
```

`GET /ops/clients/` is one self-contained HTML page (no CDN, no build step: a little vanilla
JavaScript that polls `clients.json` every second); `GET /ops/clients/clients.json` is the
same data for scripts. Who may see it is the app's decision: `dependencies=` (an API key, an
OAuth scope check) is required unless `public=True` says it is on purpose.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from importlib import resources
from typing import Any, Final

from fastapi import APIRouter, params
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse

from ._dashboard.actions import add_actions
from ._dashboard.log import AttemptLog
from ._dashboard.snapshot import snapshot
from ._fastapi.lifespan import _registry_of
from .exceptions import ConfigurationError

__all__ = ["AttemptLog", "clients_router"]

#: Seconds between two polls of the page.
POLL_INTERVAL: Final = 1.0

_PAGE: Final = resources.files(__package__).joinpath("_dashboard/page.html").read_text(encoding="utf-8")


def clients_router(
    *, dependencies: Sequence[params.Depends] | None = None, public: bool = False, actions: bool = False
) -> APIRouter:
    """
    The dashboard's routes, to include under a prefix of your choice.

    - `GET /`: the page (HTML, its script and style inline under a per-response CSP nonce).
    - `GET /clients.json`: every client of the app's registry: each strategy's `status()`
      under its option's name (`circuit_breaker` with `next_probe_at`, `retry_budget` with
      `retries_left`, and the rate limit, throttle, concurrency, cache... when the client has
      them), each marked `"scope": "fleet"` when a shared store shares it, else `"process"`;
      and, when an [`AttemptLog`][fastapi_retry_http.dashboard.AttemptLog] instruments the
      client, the counts per outcome over the last minute, the last attempts (newest first:
      time, method, path without query, status, error class, outcome, duration, injected)
      and the last breaker state changes, all this process's own.

    Args:
        dependencies: FastAPI dependencies run before every route, such as
            `[Depends(require_operator)]`: the page shows upstream names, paths and errors,
            so it is not for everyone.
        public: Build it without dependencies, on purpose (a private network, a sidecar).
        actions: Add the operators' actions, behind the same dependencies (never public):
            `POST /clients/{name}/circuit/open?seconds=S` forces a client's breaker open (for
            its `break_duration` by default, at most its `max_break_duration`), and
            `POST /clients/{name}/circuit/close` closes it with a fresh window; with a shared
            store, for the fleet. Each needs the header `X-Operator-Action` (any value), which
            a cross-site form cannot send, and is logged as a WARNING. The page shows buttons.

    Raises:
        ConfigurationError: Neither `dependencies` nor `public=True` was given, or `actions`
            without `dependencies`.
    """
    if not dependencies and not public:
        raise ConfigurationError(
            "clients_router() shows every upstream's state and recent paths: give it "
            "dependencies=[Depends(...)] that checks who may see it (an API key, an OAuth scope), "
            "or public=True to serve it to anyone who can reach it."
        )
    if actions and not dependencies:
        raise ConfigurationError(
            "clients_router(actions=True) lets its callers open and close breakers: give it "
            "dependencies=[Depends(...)] that checks who may (actions are never public)."
        )
    router = APIRouter(dependencies=list(dependencies or ()))
    if actions:
        add_actions(router)

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        nonce = secrets.token_urlsafe(16)
        html = _PAGE.replace("{{nonce}}", nonce).replace("{{poll_ms}}", str(int(POLL_INTERVAL * 1000)))
        csp = (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
            "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )
        return HTMLResponse(html, headers={"Content-Security-Policy": csp, "Cache-Control": "no-store"})

    @router.get("/clients.json", summary="Every HTTP client's resilience state and recent attempts")
    async def clients_json(request: Request) -> JSONResponse:
        registry = _registry_of(request)
        logs = {name: _log_of(client.transport.instrumentation) for name, client in registry.items()}
        # The log's clock, so that attempt times and "now" agree (a test's clock included).
        now = next((log.now() for log in logs.values() if log is not None), None)
        body = snapshot(registry, logs, time.time() if now is None else now)
        body["actions"] = actions
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    return router


def _log_of(instruments: tuple[Any, ...]) -> AttemptLog | None:
    return next((i for i in instruments if isinstance(i, AttemptLog)), None)
