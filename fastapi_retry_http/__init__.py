"""
Named, retrying async HTTP clients for FastAPI services.

Everything public is importable from here; `exceptions` and `testing` are public modules.
"""

from __future__ import annotations

from importlib.metadata import version as _version

from . import exceptions, testing
from ._budget import RetryBudget
from ._client import Client
from ._fastapi import clients_lifespan, get_client
from ._policy import RetryPolicy
from ._registry import ClientRegistry, clients
from ._settings import ClientSettings, PoolLimits
from ._transport import RetryTransport

__all__ = [
    "Client",
    "ClientRegistry",
    "ClientSettings",
    "PoolLimits",
    "RetryBudget",
    "RetryPolicy",
    "RetryTransport",
    "__version__",
    "clients",
    "clients_lifespan",
    "exceptions",
    "get_client",
    "testing",
]

__version__ = _version("fastapi-retry-http")

for _name in (
    "Client",
    "ClientRegistry",
    "ClientSettings",
    "PoolLimits",
    "RetryBudget",
    "RetryPolicy",
    "RetryTransport",
):
    # Show the public path in reprs, tracebacks and the docs, not the private module.
    globals()[_name].__module__ = __name__
