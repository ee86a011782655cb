"""`check`: every setting in effect, one row each, read from the settings model's own fields."""

from __future__ import annotations

import asyncio
import dataclasses
import textwrap
from collections.abc import Callable, Mapping
from typing import Any, Final, TextIO

import httpx
from pydantic import BaseModel, SecretStr

from .. import _backends
from .._client import Client
from .._config.client import ClientSettings
from .._defaults import DEFAULT_MAX_RESPONSE_BYTES
from ..exceptions import ConfigurationError
from .load import Invalid, Loaded

__all__ = ["MASK", "WIDTH", "build", "check", "fit", "table"]

WIDTH: Final = 80
MASK: Final = "***"
_KEY_WIDTH: Final = 20


def check(loaded: Loaded, out: TextIO) -> int:
    """Build every client once, then print the store and each client's settings in effect."""
    configs = loaded.clients
    if not configs:
        print("No clients configured (set HTTP_CLIENTS__<NAME>__BASE_URL=...).", file=out)
        return 0
    asyncio.run(_build_all(configs))
    print(f"{len(configs)} client{'s' if len(configs) != 1 else ''} configured, all valid.", file=out)
    table(None, [("store", loaded.store)], out)
    for name, config in configs.items():
        print(file=out)
        table(name, effective(config), out)
    return 0


async def _build_all(configs: dict[str, ClientSettings]) -> None:
    # Built once and closed, as the lifespan would at startup: a CA bundle path that does
    # not exist or http2 without h2 shows up here, not in production.
    for name, config in configs.items():
        client = build(name, config)
        await client.aclose()


def build(name: str, config: ClientSettings) -> Client:
    """The client `name`, or `Invalid` saying why it cannot be built."""
    try:
        return Client.from_settings(name, config)
    except ConfigurationError as error:
        raise Invalid(str(error)) from None
    except Exception as error:
        raise Invalid(f"Client {name!r} could not be built: {type(error).__name__}: {error}") from None


def effective(config: ClientSettings) -> list[tuple[str, str]]:
    """
    One row per field of the settings model, in its order (`base_url` and `backend` first):
    a field added to `ClientSettings` shows up here without a change.
    """
    names = ["base_url", "backend", *(n for n in type(config).model_fields if n not in ("base_url", "backend"))]
    rows = []
    for name in names:
        value = getattr(config, name)
        shown = _SHOWN.get(name)
        rows.append((name, shown(config) if shown is not None else _generic(value)))
    return rows


def _backend(config: ClientSettings) -> str:
    backend: str = config.backend or _backends.DEFAULT_BACKEND
    if config.http2 and backend == "aiohttp":
        return "httpx (http2 needs it)"
    return backend + " (default)" if config.backend is None else backend


_SHOWN: Final[dict[str, Callable[[ClientSettings], str]]] = {
    "backend": _backend,
    "timeout": lambda c: f"{c.timeout:g} s per attempt",
    "headers": lambda c: ", ".join(f"{k}: {MASK}" for k in c.headers) or "none",
    "proxy": lambda c: _mask_proxy(c.proxy),
    "verify": lambda c: str(c.verify).lower() if isinstance(c.verify, bool) else c.verify,
    "max_response_bytes": lambda c: _size_cap(c.max_response_bytes),
    "retry_budget": lambda c: "none (no cap)" if c.retry_budget is None else _generic(c.retry_budget),
    # Loud when on: an operator must never mistake a drill for an outage.
    "chaos": lambda c: "none (off)" if c.chaos is None else "ON: " + _generic(c.chaos),
}


def _size_cap(cap: int | None) -> str:
    if cap is None:
        return "none"
    if cap is DEFAULT_MAX_RESPONSE_BYTES:  # the default caps buffered calls only
        return f"{cap:,} (the default: buffered calls; stream() uncapped)"
    return f"{cap:,}"


def _generic(value: Any) -> str:
    # Off features are `None` (or False); settings objects are dataclasses or pydantic models.
    if value is None:
        return "none (off)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, SecretStr):
        return MASK
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return ", ".join(f"{f.name}={_item(getattr(value, f.name))}" for f in dataclasses.fields(value)) or "on"
    if isinstance(value, BaseModel):
        return ", ".join(f"{n}={_item(getattr(value, n))}" for n in type(value).model_fields) or "on"
    if isinstance(value, Mapping):
        # A mapping may hold credentials, as headers do: its keys only.
        return ", ".join(f"{k}: {MASK}" for k in value) or "none"
    return str(value)


def _item(item: Any) -> str:
    if isinstance(item, frozenset | set):
        return "[" + ", ".join(str(v) for v in sorted(item)) + "]"
    if isinstance(item, SecretStr):
        return MASK
    return str(item)


def _mask_proxy(proxy: str | None) -> str:
    if proxy is None:
        return "none"
    url = httpx.URL(proxy)
    if url.userinfo:
        url = url.copy_with(username=MASK, password=MASK if url.password else None)
    return str(url).replace("%2A", "*")


def table(name: str | None, rows: list[tuple[str, str]], out: TextIO) -> None:
    """`rows` as `key  value` lines, wrapped at 80 columns, under `name` when given."""
    if name is not None:
        print(name, file=out)
        print("-" * min(WIDTH, max(len(name), 40)), file=out)
    for key, value in rows:
        lines = textwrap.wrap(
            value,
            width=WIDTH,
            initial_indent=f"{key:<{_KEY_WIDTH}}",
            subsequent_indent=" " * _KEY_WIDTH,
            break_on_hyphens=False,
        ) or [key]
        for line in lines:
            print(fit(line), file=out)


def fit(line: str) -> str:
    """`line`, cut to 80 columns."""
    return line if len(line) <= WIDTH else line[: WIDTH - 3] + "..."
