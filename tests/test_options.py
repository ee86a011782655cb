"""A client option is declared once: its strategy's entry, a `Client` keyword and a settings field agree."""

from __future__ import annotations

import inspect

import pytest

from fastapi_retry_http import Client, ClientSettings, RetryTransport
from fastapi_retry_http._strategies import OPTIONS, StrategyOptions

CLIENT = inspect.signature(Client.__init__).parameters
FIELDS = ClientSettings.model_fields


@pytest.mark.parametrize("name", OPTIONS)
def test_every_strategy_option_is_a_client_keyword_and_a_settings_field(name: str) -> None:
    assert name in StrategyOptions.__annotations__
    assert CLIENT[name].kind is inspect.Parameter.KEYWORD_ONLY
    assert name in FIELDS, f"ClientSettings has no field {name!r}"
    # One default, stated once: the strategy's entry.
    assert CLIENT[name].default == OPTIONS[name].default
    assert FIELDS[name].get_default(call_default_factory=True) == OPTIONS[name].default


@pytest.mark.parametrize("name", FIELDS)
def test_every_settings_field_is_a_client_keyword(name: str) -> None:
    assert name in CLIENT


def test_client_kwargs_pass_every_field() -> None:
    settings = ClientSettings(base_url="https://billing.internal/api/")
    assert set(settings.client_kwargs()) == set(FIELDS)


def test_an_unknown_option_is_refused() -> None:
    with pytest.raises(TypeError, match="unknown client option"):
        RetryTransport(retry_bugdet=None)  # type: ignore[call-arg]
