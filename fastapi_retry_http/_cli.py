"""
The operator CLI: `python -m fastapi_retry_http` (or `fastapi-retry-http`).

- `check [SETTINGS_PATH]` loads the settings the way the app does, validates them, builds
  each client once and prints its effective configuration, secrets masked.
- `probe NAME...` sends one request through each named client, configured for real, and
  reports status, latency, TLS and attempts.

Plain text, no dependency beyond the library's: every line fits an 80-column terminal.
Exit codes: 0 fine, 1 invalid configuration or a failed probe, 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import sys
import textwrap
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import httpx
from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsError

from . import _backends
from ._client import Client
from ._config.app import HttpClientsSettings
from ._config.client import ClientSettings
from ._fastapi.registry import normalise_name
from ._pipeline.transport import ATTEMPTS_EXTENSION
from .exceptions import ConfigurationError

__all__ = ["main"]

WIDTH = 80
MASK = "***"
_KEY_WIDTH = 20
_EXIT_OK, _EXIT_INVALID, _EXIT_USAGE = 0, 1, 2


class _Invalid(Exception):
    """A configuration problem, worded for the operator (names only, never values)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with `argv` (the process arguments if `None`) and return its exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits 2 on usage errors, 0 for --help
        return int(exit_.code or 0)
    out: TextIO = sys.stdout
    try:
        configs = _load(args.settings, args.settings_path)
        if args.command == "check":
            return _check(configs, out)
        return asyncio.run(_probe(configs, args.names, args.method, args.path, out))
    except _Invalid as error:
        for problem in str(error).splitlines():
            for line in textwrap.wrap(f"error: {problem}", WIDTH, subsequent_indent="    ", break_on_hyphens=False):
                print(_fit(line), file=sys.stderr)
        return _EXIT_INVALID


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastapi-retry-http",
        description="Check and probe the HTTP clients configured for a service.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument(
        "--settings",
        metavar="MODULE:CLASS",
        help="the app's pydantic-settings class (default: the library's, HTTP_CLIENTS__...)",
    )
    check = commands.add_parser(
        "check", parents=[shared], help="validate the settings and print each client's configuration"
    )
    check.add_argument("settings_path", nargs="?", metavar="SETTINGS_PATH", help="a .env file to read as well")
    probe = commands.add_parser("probe", parents=[shared], help="send one request through each named client")
    probe.add_argument("names", nargs="+", metavar="NAME", help="client names")
    probe.add_argument("--env-file", dest="settings_path", metavar="SETTINGS_PATH", help="a .env file to read")
    probe.add_argument("--path", default="", help="the path to request, relative to the base URL (default: none)")
    probe.add_argument("--method", default="HEAD", type=str.upper, help="the method (default: HEAD)")
    return parser


# Loading


def _settings_class(spec: str | None) -> type[BaseSettings]:
    if spec is None:
        return HttpClientsSettings
    module_name, _, class_name = spec.partition(":")
    if not module_name or not class_name:
        raise _Invalid(f"--settings {spec!r}: expected MODULE:CLASS, for example myapp.settings:Settings")
    try:
        found = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise _Invalid(f"--settings {spec!r}: {type(error).__name__}: {error}") from None
    if not (isinstance(found, type) and issubclass(found, BaseSettings)):
        raise _Invalid(f"--settings {spec!r} is not a pydantic-settings BaseSettings class")
    return found


def _load(spec: str | None, env_file: str | None) -> dict[str, ClientSettings]:
    cls = _settings_class(spec)
    kwargs: dict[str, Any] = {}
    if env_file is not None:
        try:
            with open(env_file, encoding="utf-8"):
                pass
        except OSError as error:
            raise _Invalid(f"{env_file}: {error.strerror or error}") from None
        kwargs["_env_file"] = env_file
    try:
        settings = cls(**kwargs)
    except ValidationError as error:
        raise _Invalid("\n".join(_problems(error))) from None
    except SettingsError as error:
        # pydantic-settings names the field and the source, not the value.
        raise _Invalid(f"{error}{_cause(error)}") from None
    return _client_settings(settings)


def _problems(error: ValidationError) -> list[str]:
    # Locations and messages only, as the lifespan words them: the inputs may be secrets.
    problems: list[str] = []
    for e in error.errors():
        loc = [str(part) for part in e["loc"]]
        if len(loc) >= 2 and loc[0] == "http_clients":
            field = ".".join(loc[2:]) or "settings"
            problems.append(f"Client {loc[1]!r} has invalid settings: {field}: {e['msg']}")
        else:
            problems.append(f"{'.'.join(loc) or 'settings'}: {e['msg']}")
    return problems


def _cause(error: BaseException) -> str:
    cause = error.__cause__
    # A JSON decoding error names the position, never the text.
    return f" ({type(cause).__name__})" if cause is not None else ""


def _client_settings(settings: BaseSettings) -> dict[str, ClientSettings]:
    found = getattr(settings, "http_clients", None)
    if found is None:
        for name in type(settings).model_fields:
            value = getattr(settings, name)
            if isinstance(value, Mapping) and value and all(isinstance(v, ClientSettings) for v in value.values()):
                found = value
                break
    if not isinstance(found, Mapping):
        raise _Invalid(f"{type(settings).__name__} has no mapping of ClientSettings (such as http_clients)")
    configs: dict[str, ClientSettings] = {}
    for name, config in found.items():
        key = normalise_name(name)
        if key in configs:
            raise _Invalid(f"Client {name!r} is configured twice (names ignore case).")
        configs[key] = config
    return configs


# check


def _check(configs: dict[str, ClientSettings], out: TextIO) -> int:
    if not configs:
        print("No clients configured (set HTTP_CLIENTS__<NAME>__BASE_URL=...).", file=out)
        return _EXIT_OK
    asyncio.run(_build_all(configs))
    print(f"{len(configs)} client{'s' if len(configs) != 1 else ''} configured, all valid.", file=out)
    for name, config in configs.items():
        print(file=out)
        _table(name, _effective(config), out)
    return _EXIT_OK


async def _build_all(configs: dict[str, ClientSettings]) -> None:
    # Built once and closed, as the lifespan would at startup: a CA bundle path that does
    # not exist or http2 without h2 shows up here, not in production.
    for name, config in configs.items():
        client = _build(name, config)
        await client.aclose()


def _build(name: str, config: ClientSettings) -> Client:
    try:
        return Client.from_settings(name, config)
    except ConfigurationError as error:
        raise _Invalid(str(error)) from None
    except Exception as error:
        raise _Invalid(f"Client {name!r} could not be built: {type(error).__name__}: {error}") from None


def _effective(config: ClientSettings) -> list[tuple[str, str]]:
    backend: str = config.backend or _backends.DEFAULT_BACKEND
    if config.http2 and backend == "aiohttp":
        backend = "httpx (http2 needs it)"
    elif config.backend is None:
        backend += " (default)"
    limits = config.limits
    rows = [
        ("base_url", config.base_url),
        ("backend", backend),
        ("timeout", f"{config.timeout:g} s per attempt"),
        ("headers", ", ".join(f"{k}: {MASK}" for k in config.headers) or "none"),
        ("proxy", _mask_proxy(config.proxy)),
        ("verify", str(config.verify).lower() if isinstance(config.verify, bool) else config.verify),
        ("http2", str(config.http2).lower()),
        ("follow_redirects", str(config.follow_redirects).lower()),
        ("max_response_bytes", "none" if config.max_response_bytes is None else f"{config.max_response_bytes:,}"),
        (
            "limits",
            f"max_connections={limits.max_connections}, "
            f"max_keepalive_connections={limits.max_keepalive_connections}, "
            f"keepalive_expiry={limits.keepalive_expiry}",
        ),
        ("retry", _fields(config.retry)),
        ("retry_budget", "none (no cap)" if config.retry_budget is None else _fields(config.retry_budget)),
        ("chaos", "off" if config.chaos is None else "ON: " + _fields(config.chaos)),
    ]
    return rows


def _fields(value: Any) -> str:
    parts = []
    for field in dataclasses.fields(value):
        item = getattr(value, field.name)
        if isinstance(item, frozenset):
            item = "[" + ", ".join(str(v) for v in sorted(item)) + "]"
        parts.append(f"{field.name}={item}")
    return ", ".join(parts)


def _mask_proxy(proxy: str | None) -> str:
    if proxy is None:
        return "none"
    url = httpx.URL(proxy)
    if url.userinfo:
        url = url.copy_with(username=MASK, password=MASK if url.password else None)
    return str(url).replace("%2A", "*")


def _table(name: str, rows: list[tuple[str, str]], out: TextIO) -> None:
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
            print(_fit(line), file=out)


def _fit(line: str) -> str:
    return line if len(line) <= WIDTH else line[: WIDTH - 3] + "..."


# probe


async def _probe(configs: dict[str, ClientSettings], names: list[str], method: str, path: str, out: TextIO) -> int:
    unknown = [n for n in names if normalise_name(n) not in configs]
    if unknown:
        known = ", ".join(repr(n) for n in sorted(configs)) or "none"
        raise _Invalid(f"No client named {', '.join(map(repr, unknown))}; the configured clients are: {known}.")
    failed = 0
    for index, name in enumerate(names):
        if index:
            print(file=out)
        rows, ok = await _probe_one(normalise_name(name), configs[normalise_name(name)], method, path)
        failed += not ok
        _table(name, rows, out)
    return _EXIT_INVALID if failed else _EXIT_OK


async def _probe_one(name: str, config: ClientSettings, method: str, path: str) -> tuple[list[tuple[str, str]], bool]:
    client = _build(name, config)
    target = str(client.base_url.join(path)) if path else str(client.base_url)
    rows = [("request", f"{method} {target.split('?')[0]}")]
    started = time.perf_counter()
    try:
        async with client:
            response = await client.request(method, path)
            elapsed = (time.perf_counter() - started) * 1000
            attempts = response.extensions.get(ATTEMPTS_EXTENSION, 1)
            rows += [
                ("status", f"{response.status_code} {response.reason_phrase}".rstrip()),
                ("latency", f"{elapsed:.1f} ms (all attempts)"),
                ("tls", _tls(response)),
                ("attempts", f"{attempts} of at most {config.retry.attempts}"),
            ]
            ok = response.status_code < 500
    except Exception as error:
        elapsed = (time.perf_counter() - started) * 1000
        note = next((n for n in getattr(error, "__notes__", ()) if "attempt" in n), None)
        rows += [
            ("error", type(error).__name__),
            ("latency", f"{elapsed:.1f} ms (all attempts)"),
            ("attempts", note.removeprefix("fastapi_retry_http: ") if note else "1 (not retried)"),
        ]
        ok = False
    rows.append(("result", "ok" if ok else "FAILED"))
    return rows, ok


def _tls(response: httpx.Response) -> str:
    if response.url.scheme != "https":
        return "none (http)"
    stream = response.extensions.get("network_stream")
    ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
    if ssl_object is None:
        return "not reported by this backend"
    cipher = ssl_object.cipher()
    return f"{ssl_object.version()}, {cipher[0] if cipher else 'unknown cipher'}"
