"""
The strategies of the pipeline, each declared once: its option's name, its default, where it
stands and how it is built.

A client option flows from `ClientSettings` (a field of the same name) through `Client(...)`
(a keyword of the same name) to `RetryTransport(**options)` and here, without being restated:
`client_kwargs()` and the CLI read the settings' fields, and `tests/test_options.py` checks
that every option below is a keyword of `Client` and a field of `ClientSettings`.

The order of `OPTIONS` is the pipeline's order (docs/architecture.md says why):

- around the call: cache, then coalescing (a hit makes no attempt; misses are coalesced);
- per attempt: breaker (a refused retry must not spend the budget), budget, throttle, the
  gates given by the caller, rate limit, concurrency (the two that may wait come last, so a
  call never waits for a slot and is then refused);
- around the send: chaos, last (every gate and the throttle's feedback see injected outcomes
  as real ones).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from .._pipeline.events import Instruments
from .._pipeline.strategy import CallStrategy, Interceptor, Strategy
from .._stores.memory import StateStore
from ..chaos import Chaos
from ..exceptions import ConfigurationError
from .breaker import BreakerGate, CircuitBreaker
from .budget import DEFAULT_BUDGET, BudgetGate, RetryBudget
from .caching import HttpCache
from .chaos import ChaosInterceptor
from .coalesce import Coalescer
from .concurrency import ConcurrencyGate, ConcurrencyLimit
from .rate_limit import Limiter, RateLimit, RateLimitGate
from .slots import Schedule
from .throttle import AdaptiveThrottle, ThrottleGate

__all__ = ["OPTIONS", "Context", "Option", "Strategies", "StrategyOptions", "build"]


class StrategyOptions(TypedDict, total=False):
    """The resilience options of a client, by the name `Client` and `ClientSettings` give them."""

    retry_budget: RetryBudget | None
    circuit_breaker: CircuitBreaker | None
    chaos: Chaos | None
    cache: HttpCache | None
    coalesce: bool
    throttle: AdaptiveThrottle | None
    concurrency: ConcurrencyLimit | None
    rate_limit: RateLimit | None


@dataclass(frozen=True, slots=True)
class Context:
    """What a strategy is built with: the client's name, its store, its clock and its instruments."""

    name: str
    store: StateStore
    clock: Callable[[], float]
    random: Callable[[], float]
    sleep: Callable[[float], Awaitable[None]]
    instruments: Instruments


Place = Literal["call", "attempt", "send"]


@dataclass(frozen=True, slots=True)
class Option:
    """One client option: its default, where its strategy stands, and how it is built."""

    default: Any
    place: Place
    build: Callable[[Any, Context], Any]


@dataclass(slots=True)
class Strategies:
    """A client's strategies, by place, in order; `by_option` for status reads (`client.circuit`)."""

    around: list[CallStrategy] = field(default_factory=list)
    attempt: list[Strategy] = field(default_factory=list)
    send: list[Interceptor] = field(default_factory=list)
    by_option: dict[str, Any] = field(default_factory=dict)


def _breaker(config: CircuitBreaker, context: Context) -> BreakerGate:
    state = context.store.breaker_state(context.name, config)
    return BreakerGate(state, context.name, context.clock, context.random, context.instruments.emit_circuit)


def _budget(config: RetryBudget, context: Context) -> BudgetGate:
    return BudgetGate(context.store.budget_counter(context.name, config), context.clock)


def _chaos(config: Chaos, context: Context) -> ChaosInterceptor:
    return ChaosInterceptor(config, context.name, context.clock, context.sleep)


def _cache(config: HttpCache, context: Context) -> CallStrategy:
    try:
        from ..cache import CacheStrategy  # the [cache] extra: hishel is imported there alone
    except ImportError:
        raise ConfigurationError(
            f"Client {context.name!r}: cache needs the 'cache' extra: pip install 'fastapi-retry-http[cache]'."
        ) from None
    return CacheStrategy(config, context.name)


def _coalesce(config: bool, context: Context) -> Coalescer:
    return Coalescer(context.name)


def _throttle(config: AdaptiveThrottle, context: Context) -> ThrottleGate:
    return ThrottleGate(
        context.store.throttle_counter(context.name, config), context.name, context.clock, context.random
    )


def _concurrency(config: ConcurrencyLimit, context: Context) -> ConcurrencyGate:
    return ConcurrencyGate(config, context.name, context.clock, context.sleep)


def _rate_limit(config: RateLimit, context: Context) -> RateLimitGate:
    if not isinstance(config, RateLimit):
        raise ConfigurationError(f"Client {context.name!r}: rate_limit must be a RateLimit or None")
    # A store of another kind (a user's own) has no shared limiter: the slots are this process's.
    shared = getattr(context.store, "rate_limiter", None)
    limiter: Limiter = shared(context.name, config) if shared else Schedule(config.interval, config.burst or 0)
    gate = RateLimitGate(config, limiter, context.name, context.clock, context.sleep)
    if hasattr(limiter, "in_flight"):  # a fleet limiter sizes its leases by the attempts here
        limiter.in_flight = gate.in_flight
    return gate


#: Every option, in pipeline order. `"gates"` marks where the caller's own gates stand.
OPTIONS: dict[str, Option] = {
    "cache": Option(None, "call", _cache),
    "coalesce": Option(False, "call", _coalesce),
    "circuit_breaker": Option(None, "attempt", _breaker),
    "retry_budget": Option(DEFAULT_BUDGET, "attempt", _budget),
    "throttle": Option(None, "attempt", _throttle),
    "rate_limit": Option(None, "attempt", _rate_limit),
    "concurrency": Option(None, "attempt", _concurrency),
    "chaos": Option(None, "send", _chaos),
}

#: The caller's gates (`RetryTransport(gates=...)`) stand before this option, or last.
GATES_BEFORE = "rate_limit"


def check(options: StrategyOptions) -> None:
    """Refuse a keyword that is no option (a typo would otherwise turn nothing on)."""
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise TypeError(f"unknown client option(s): {', '.join(sorted(unknown))}")


def build(options: StrategyOptions, context: Context, gates: tuple[Strategy, ...] = ()) -> Strategies:
    """The strategies `options` turn on, in pipeline order; an option that is off builds nothing."""
    check(options)
    built = Strategies()
    values: dict[str, Any] = dict(options)
    for name, option in OPTIONS.items():
        if name == GATES_BEFORE:
            built.attempt.extend(gates)
            gates = ()
        config = values.get(name, option.default)
        if config is None or config is False:
            continue
        strategy = option.build(config, context)
        built.by_option[name] = strategy
        if option.place == "call":
            built.around.append(strategy)
        elif option.place == "attempt":
            built.attempt.append(strategy)
        else:
            built.send.append(strategy)
    built.attempt.extend(gates)
    return built
