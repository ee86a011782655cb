"""
Named, retrying async HTTP clients for FastAPI services.

Everything public is importable from here; `chaos`, `exceptions` and `testing` are public modules.
"""

from __future__ import annotations

import inspect as _inspect
from importlib.metadata import version as _version

from . import chaos, exceptions, testing
from ._client import Client
from ._config.app import HttpClientsSettings
from ._config.client import ClientSettings, PoolLimits
from ._fastapi.errors import exception_handlers
from ._fastapi.lifespan import clients_lifespan, get_client
from ._fastapi.registry import ClientRegistry, clients
from ._pipeline.attempts import Call, CallOptions, Outcome
from ._pipeline.events import AttemptEvent, CircuitEvent, Instrument
from ._pipeline.policy import RetryPolicy
from ._pipeline.strategy import Refusal, Strategy
from ._pipeline.transport import RetryTransport
from ._stores.memory import MemoryStore, StateStore
from ._strategies.breaker import CircuitBreaker, CircuitStatus
from ._strategies.budget import RetryBudget
from ._strategies.concurrency import ConcurrencyLimit
from ._strategies.overload import OverloadStatus
from ._strategies.rate_limit import RateLimit
from ._strategies.throttle import AdaptiveThrottle

__all__ = [
    "AdaptiveThrottle",
    "AttemptEvent",
    "Call",
    "CallOptions",
    "CircuitBreaker",
    "CircuitEvent",
    "CircuitStatus",
    "Client",
    "ClientRegistry",
    "ClientSettings",
    "ConcurrencyLimit",
    "HttpClientsSettings",
    "Instrument",
    "MemoryStore",
    "Outcome",
    "OverloadStatus",
    "PoolLimits",
    "RateLimit",
    "Refusal",
    "RetryBudget",
    "RetryPolicy",
    "RetryTransport",
    "StateStore",
    "Strategy",
    "__version__",
    "chaos",
    "clients",
    "clients_lifespan",
    "exception_handlers",
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
