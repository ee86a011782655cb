"""
What `GET /clients.json` answers: every client of the registry, its strategies' state now and
its recent attempts, as plain JSON.

The strategies are read generically: every strategy in `client.transport.strategies.by_option`
that has a `status()` is shown under its option's name, whatever it returns (a dict or a
dataclass), so a strategy added later shows up without a change here. Each section says its
`scope`: `"fleet"` when a shared store shares that state (and its fleet view is known),
`"process"` for this process's own.
"""

from __future__ import annotations

import dataclasses
import math
import os
import urllib.parse
from collections.abc import Mapping
from typing import Any

from .._client import Client
from .._fastapi.registry import ClientRegistry
from .log import WINDOW, AttemptLog, ClientLog

__all__ = ["jsonable", "snapshot"]


def snapshot(registry: ClientRegistry, logs: Mapping[str, AttemptLog | None], now: float) -> dict[str, Any]:
    """The state of every client in `registry` at wall-clock `now`; `logs` by client name."""
    return {
        "time": now,
        "pid": os.getpid(),
        "clients": [_client(name, client, logs.get(name), now) for name, client in sorted(registry.items())],
    }


def _client(name: str, client: Client, log: AttemptLog | None, now: float) -> dict[str, Any]:
    strategies: dict[str, Any] = {}
    for option, strategy in client.transport.strategies.by_option.items():
        status = getattr(strategy, "status", None)
        if not callable(status):
            continue
        shown = jsonable(status())
        if not isinstance(shown, dict):
            shown = {"value": shown}
        shown.setdefault("scope", _scope(strategy))
        strategies[option] = shown
    breaker = strategies.get("circuit_breaker")
    if breaker is not None:
        wait = breaker.get("retry_after")
        breaker["next_probe_at"] = now + wait if breaker.get("state") == "open" and wait is not None else None
    kept = None if log is None else log.of(client.name)
    return {
        "name": name,
        "base_url": _origin_and_path(str(client.base_url)),
        "closed": client.is_closed,
        "strategies": strategies,
        "recorded": log is not None,
        "outcomes": _outcomes(kept, log),
        "outcomes_window": WINDOW,
        "attempts": [] if kept is None else _attempts(kept),
        "circuit_events": [] if kept is None else _circuit_events(kept),
    }


def _scope(strategy: object) -> str:
    # The fleet states of a shared store carry the fleet's view in `fleet` (None: not known yet).
    state = getattr(strategy, "state", None)
    return "fleet" if getattr(state, "fleet", None) is not None else "process"


def _outcomes(kept: ClientLog | None, log: AttemptLog | None) -> dict[str, int]:
    return {} if kept is None or log is None else kept.counts(log.now())


def _attempts(kept: ClientLog) -> list[dict[str, Any]]:
    # Newest first: what an operator reads first.
    return [
        {
            "time": at,
            "method": event.method,
            "path": _path(event.url),
            "attempt": event.attempt,
            "status": event.status_code,
            "error": event.error,
            "outcome": event.outcome,
            "reason": event.reason,
            "duration": _number(event.duration),
            "injected": event.injected,
        }
        for at, event in reversed(kept.attempts)
    ]


def _circuit_events(kept: ClientLog) -> list[dict[str, Any]]:
    return [
        {"time": at, "state": event.state, "previous": event.previous, "retry_after": _number(event.retry_after)}
        for at, event in reversed(kept.circuit)
    ]


def _path(url: str) -> str:
    # Events already leave the query and userinfo out; the path alone is what the table shows.
    try:
        return urllib.parse.urlsplit(url).path or "/"
    except ValueError:
        return "?"


def _origin_and_path(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _number(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def jsonable(value: Any) -> Any:
    """`value` as JSON can hold it: dataclasses and mappings as objects, infinities as null."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, float):
        return _number(value)
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)
