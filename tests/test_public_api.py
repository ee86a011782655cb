"""The curated public surface: exactly these names, each documented."""

from __future__ import annotations

import inspect
import types

import pytest

import fastapi_retry_http
from fastapi_retry_http import cache, chaos, dashboard, exceptions, otel, prometheus, testing

PUBLIC = {
    "AdaptiveThrottle",
    "AttemptEvent",
    "Call",
    "CallOptions",
    "Instrument",
    "Outcome",
    "Refusal",
    "StateStore",
    "Strategy",
    "CircuitBreaker",
    "CircuitStatus",
    "CircuitEvent",
    "Client",
    "ClientRegistry",
    "ClientSettings",
    "ConcurrencyLimit",
    "HttpClientsSettings",
    "MemoryStore",
    "OverloadStatus",
    "PoolLimits",
    "RateLimit",
    "RetryBudget",
    "RetryPolicy",
    "RetryTransport",
    "__version__",
    "chaos",
    "clients",
    "clients_lifespan",
    "exception_handlers",
    "exceptions",
    "get_client",
    "testing",
}


#: Public modules of the optional extras: never imported by the package, so not in `__all__`;
#: they show as attributes once a test (or an app) has imported them.
EXTRAS = {"cache", "dashboard", "otel", "prometheus", "redis"}


def test_all_lists_exactly_the_public_names() -> None:
    assert set(fastapi_retry_http.__all__) == PUBLIC
    public_attributes = {name for name in vars(fastapi_retry_http) if not name.startswith("_")} - {"annotations"}
    # Submodules imported by the package appear as attributes too; only the public ones may.
    assert {n for n in public_attributes if n not in PUBLIC | EXTRAS} == set()


@pytest.mark.parametrize(
    ("module", "name"),
    [
        (m, n)
        for m in (fastapi_retry_http, chaos, dashboard, exceptions, testing, otel, prometheus, cache)
        for n in m.__all__
        if n != "__version__"
    ],
)
def test_every_public_name_has_a_docstring(module: types.ModuleType, name: str) -> None:
    value = getattr(module, name)
    doc = inspect.getdoc(value) if not isinstance(value, fastapi_retry_http.ClientRegistry) else type(value).__doc__
    assert doc, f"{module.__name__}.{name} has no docstring"
    if inspect.isclass(value):
        for member_name, member in vars(value).items():
            if member_name.startswith("_") or (not callable(member) and not isinstance(member, property)):
                continue
            assert inspect.getdoc(member), f"{name}.{member_name} has no docstring"


def test_public_classes_and_functions_show_the_public_module() -> None:
    for name in fastapi_retry_http.__all__:
        value = getattr(fastapi_retry_http, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__module__ == "fastapi_retry_http", name
