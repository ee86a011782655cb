"""
The operators' actions: force a client's breaker open, or close it, from the dashboard.

resilience4j's users asked for exactly these (manual reset and disable): an operator who knows
the upstream is down (or back) should not wait for the counts to agree. They sit behind the
router's own dependencies, and each needs a header a cross-site form cannot send.
"""

from __future__ import annotations

import logging
import math
from typing import Annotated, Any, Final

from fastapi import APIRouter, Header, HTTPException, Query
from starlette.requests import Request

from .._fastapi.lifespan import _registry_of
from .._strategies.breaker import BreakerGate
from .snapshot import jsonable

__all__ = ["ACTION_HEADER", "add_actions"]

logger: Final = logging.getLogger("fastapi_retry_http")

#: The header every action needs: a browser sends it only from a script of the same origin.
ACTION_HEADER: Final = "X-Operator-Action"


def add_actions(router: APIRouter) -> None:
    """Add the breaker actions to `router`."""

    @router.post("/clients/{name}/circuit/open", summary="Force a client's circuit breaker open")
    async def force_open(
        name: str,
        request: Request,
        seconds: Annotated[float | None, Query(gt=0)] = None,
        x_operator_action: Annotated[str | None, Header()] = None,
    ) -> dict[str, Any]:
        gate = _breaker(request, name, x_operator_action)
        config = gate.state.config
        chosen = config.break_duration if seconds is None else seconds
        if not math.isfinite(chosen) or chosen > config.max_break_duration:
            raise HTTPException(
                422, f"seconds must be at most the breaker's max_break_duration ({config.max_break_duration:g})"
            )
        gate.force_open(chosen)
        logger.warning("%s: circuit forced open for %gs by an operator.", name, chosen, extra={"client": name})
        return _status(gate)

    @router.post("/clients/{name}/circuit/close", summary="Close a client's circuit breaker")
    async def force_close(
        name: str, request: Request, x_operator_action: Annotated[str | None, Header()] = None
    ) -> dict[str, Any]:
        gate = _breaker(request, name, x_operator_action)
        gate.force_close()
        logger.warning("%s: circuit closed by an operator.", name, extra={"client": name})
        return _status(gate)


def _breaker(request: Request, name: str, action_header: str | None) -> BreakerGate:
    if action_header is None:
        raise HTTPException(403, f"an action needs the {ACTION_HEADER} header (sent by the dashboard's page)")
    registry = _registry_of(request)
    if name not in registry:
        raise HTTPException(404, "no client of that name")
    gate = registry[name].transport.breaker
    if gate is None:
        raise HTTPException(409, "this client has no circuit breaker")
    return gate


def _status(gate: BreakerGate) -> dict[str, Any]:
    shown: dict[str, Any] = jsonable(gate.status())
    return shown
