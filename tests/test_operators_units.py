"""Small pieces of the operators' view, each on its own: value rendering, URL checks, a closed pipe."""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, SecretStr

from fastapi_retry_http import ClientSettings
from fastapi_retry_http._cli import main
from fastapi_retry_http._cli.probe import _requested
from fastapi_retry_http._cli.show import _generic, effective
from fastapi_retry_http._config.redis_url import masked_redis_url
from fastapi_retry_http._dashboard.snapshot import _path


@dataclasses.dataclass(frozen=True)
class Option:
    token: SecretStr
    methods: frozenset[str]


class Nested(BaseModel):
    size: int = 3


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "none (off)"),
        (True, "true"),
        (SecretStr("s3cr3t"), "***"),
        (Option(SecretStr("s3cr3t"), frozenset({"PUT", "GET"})), "token=***, methods=[GET, PUT]"),
        (Nested(), "size=3"),
        ({"Authorization": "s3cr3t"}, "Authorization: ***"),
        ({}, "none"),
        (2.5, "2.5"),
    ],
)
def test_a_settings_value_is_shown_generically_secrets_masked(value: Any, shown: str) -> None:
    assert _generic(value) == shown


def test_an_explicit_size_cap_and_a_proxy_without_credentials() -> None:
    config = ClientSettings(base_url="http://b.internal/", max_response_bytes=1000, proxy="http://proxy.internal:3128")
    rows = dict(effective(config))
    assert rows["max_response_bytes"] == "1,000"
    assert rows["proxy"] == "http://proxy.internal:3128/"
    assert (
        dict(effective(ClientSettings(base_url="http://b.internal/", max_response_bytes=None)))["max_response_bytes"]
        == "none"
    )


def test_masked_redis_urls() -> None:
    assert masked_redis_url("redis://u:p@h:1/0") == "redis://***@h:1/0"
    assert masked_redis_url("redis://h") == "redis://h"
    assert masked_redis_url("ftp://u:p@h") == "<invalid Redis URL>"


def test_what_a_probe_requested_when_the_error_has_no_request() -> None:
    assert _requested("GET", "health", httpx.ConnectError("no request")) == "GET health (refused before sending)"
    assert _requested("HEAD", "", ValueError("x")) == "HEAD (base URL) (refused before sending)"


def test_a_path_that_is_no_url() -> None:
    assert _path("http://[::1/x") == "?"
    assert _path("http://b.internal") == "/"


def test_a_closed_pipe_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_CLIENTS__BILLING__BASE_URL", "http://billing.internal/")
    read, write = os.pipe()
    os.close(read)  # the reader went away
    with os.fdopen(write, "w") as pipe:
        monkeypatch.setattr(sys, "stdout", pipe)
        assert main(["check"]) == 1
        pipe.write("after")  # stdout now leads to devnull: nothing more to complain about
        pipe.flush()
