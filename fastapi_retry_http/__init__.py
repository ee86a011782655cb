"""
Named, retrying async HTTP clients for FastAPI services.

Everything public is importable from here; `exceptions` and `testing` are public modules.
"""

from __future__ import annotations

import inspect as _inspect
from importlib.metadata import version as _version

from . import exceptions, testing
from ._client import Client
from ._config.app import HttpClientsSettings
from ._config.client import ClientSettings, PoolLimits
from ._fastapi.lifespan import clients_lifespan, get_client
from ._fastapi.registry import ClientRegistry, clients
from ._pipeline.events import AttemptEvent, CircuitEvent
from ._pipeline.policy import RetryPolicy
from ._pipeline.transport import RetryTransport
from ._stores.memory import MemoryStore
from ._strategies.breaker import CircuitBreaker, CircuitStatus
from ._strategies.budget import RetryBudget
from ._strategies.rate_limit import RateLimit

__all__ = [
    "AttemptEvent",
    "CircuitBreaker",
    "CircuitEvent",
    "CircuitStatus",
    "Client",
    "ClientRegistry",
    "ClientSettings",
    "HttpClientsSettings",
    "MemoryStore",
    "PoolLimits",
    "RateLimit",
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

for _name in __all__:
    _public = globals()[_name]
    if isinstance(_public, type) or _inspect.isfunction(_public):
        # Show the public path in reprs, tracebacks and the docs, not the private module.
        _public.__module__ = __name__
