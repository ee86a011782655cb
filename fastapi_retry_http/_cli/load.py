"""Loading the settings as the app would: the settings class, its `.env` file, its store."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsError

from .._config.app import HttpClientsSettings
from .._config.client import ClientSettings
from .._config.redis_url import masked_redis_url, redis_url_problem
from .._fastapi.registry import normalise_name

__all__ = ["Invalid", "Loaded", "load"]


class Invalid(Exception):
    """A configuration problem, worded for the operator (names only, never values)."""


@dataclass(frozen=True, slots=True)
class Loaded:
    """The clients' settings, by lowercased name, and what the store line says."""

    clients: dict[str, ClientSettings]
    store: str


def load(spec: str | None, env_file: str | None) -> Loaded:
    """The settings of class `spec` (the library's by default), with `env_file` read as well."""
    cls = _settings_class(spec)
    kwargs: dict[str, Any] = {}
    if env_file is not None:
        try:
            with open(env_file, encoding="utf-8"):
                pass
        except OSError as error:
            raise Invalid(f"{env_file}: {error.strerror or error}") from None
        kwargs["_env_file"] = env_file
    try:
        settings = cls(**kwargs)
    except ValidationError as error:
        raise Invalid("\n".join(_problems(error))) from None
    except SettingsError as error:
        # pydantic-settings names the field and the source, not the value.
        raise Invalid(f"{error}{_cause(error)}") from None
    return Loaded(_client_settings(settings), _store(settings))


def _settings_class(spec: str | None) -> type[BaseSettings]:
    if spec is None:
        return HttpClientsSettings
    module_name, _, class_name = spec.partition(":")
    if not module_name or not class_name:
        raise Invalid(f"--settings {spec!r}: expected MODULE:CLASS, for example myapp.settings:Settings")
    # As `python -m` does: the installed script's sys.path starts at its own directory.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise Invalid(f"--settings {spec!r}: {type(error).__name__}: {error}") from None
    if not (isinstance(found, type) and issubclass(found, BaseSettings)):
        raise Invalid(f"--settings {spec!r} is not a pydantic-settings BaseSettings class")
    return found


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
        raise Invalid(f"{type(settings).__name__} has no mapping of ClientSettings (such as http_clients)")
    configs: dict[str, ClientSettings] = {}
    for name, config in found.items():
        key = normalise_name(name)
        if key in configs:
            raise Invalid(f"Client {name!r} is configured twice (names ignore case).")
        configs[key] = config
    return configs


def _store(settings: BaseSettings) -> str:
    """The store line: where budgets and breakers live, the Redis URL masked and checked."""
    value = getattr(settings, "http_clients_redis_url", None)
    # A SecretStr in the library's settings; a str, or pydantic's URL type, in an app's own.
    url = value.get_secret_value() if isinstance(value, SecretStr) else str(value or "")
    if not url:
        return "memory (each process keeps its own budgets and breakers)"
    problem = redis_url_problem(url)
    if problem is not None:  # a settings class of the app's own, without the library's check
        raise Invalid(f"http_clients_redis_url: not a usable Redis URL: {problem}")
    if importlib.util.find_spec("redis") is None:
        raise Invalid("http_clients_redis_url is set but redis-py is missing: pip install 'fastapi-retry-http[redis]'")
    prefix = getattr(settings, "http_clients_redis_prefix", None)
    shared = f"shared by every process using it, prefix {prefix}" if prefix else "shared by every process using it"
    return f"redis {masked_redis_url(url)} ({shared})"
