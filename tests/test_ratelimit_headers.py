"""The quota headers an upstream sends, read: a table of what each dialect says, and what is malformed."""

from __future__ import annotations

import httpx
import pytest

from fastapi_retry_http._strategies.ratelimit_headers import ServerWord, read

WALL = 1_800_000_000.0  # the Unix time "now" for epoch resets


def said(status: int = 200, **headers: str) -> ServerWord:
    return read(httpx.Response(status, headers={k.replace("_", "-"): v for k, v in headers.items()}), WALL)


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        (said(), ServerWord()),
        (said(429, Retry_After="7"), ServerWord(pause=7.0)),
        (said(503, Retry_After="0"), ServerWord(pause=0.0)),
        (said(200, Retry_After="7"), ServerWord()),  # only on 429 and 503
        (said(429, Retry_After="soon"), ServerWord(malformed="Retry-After")),
        (said(RateLimit_Policy='"default";q=100;w=60'), ServerWord(quota=100, window=60.0)),
        (said(RateLimit_Policy='"burst";q=10;w=1, "day";q=1000;w=86400'), ServerWord(quota=1000, window=86400.0)),
        (
            said(RateLimit_Policy='"bytes";q=10;w=1;qu="content-bytes", "req";q=50;w=1'),
            ServerWord(quota=50, window=1.0),
        ),
        (said(RateLimit_Policy='"open";q=100'), ServerWord(quota=100, window=None)),
        (said(RateLimit_Policy="default;q=0;w=1"), ServerWord(malformed="RateLimit-Policy")),
        (said(RateLimit_Policy='"d";q=5;w=0'), ServerWord(malformed="RateLimit-Policy")),
        (said(RateLimit_Policy='"d";q=5;w=999999'), ServerWord(malformed="RateLimit-Policy")),
        (said(RateLimit_Policy="q=;;"), ServerWord(malformed="RateLimit-Policy")),
        (said(RateLimit='"default";r=42;t=17'), ServerWord(left=42, reset=17.0)),
        (said(RateLimit='"a, b";r=4;t=2, "c";r=9;t=1'), ServerWord(left=4, reset=2.0)),
        (said(RateLimit='"default";r=-1;t=3'), ServerWord(malformed="RateLimit")),
        (said(RateLimit='"default";r=1.5;t=3'), ServerWord(malformed="RateLimit")),
        (said(RateLimit='"default";r=3'), ServerWord(left=3, reset=None)),
        (said(RateLimit=""), ServerWord()),
        (
            said(X_RateLimit_Limit="60", X_RateLimit_Remaining="5", X_RateLimit_Reset="30"),
            ServerWord(left=5, reset=30.0, quota=60),
        ),
        (said(X_RateLimit_Remaining="0", X_RateLimit_Reset=str(WALL + 12)), ServerWord(left=0, reset=12.0)),
        (said(X_RateLimit_Remaining="0", X_RateLimit_Reset=str(int((WALL + 3) * 1000))), ServerWord(left=0, reset=3.0)),
        (said(X_RateLimit_Remaining="0", X_RateLimit_Reset=str(WALL - 5)), ServerWord(left=0, reset=0.0)),
        (said(X_RateLimit_Remaining="0", X_RateLimit_Reset="1e30"), ServerWord(left=0, reset=86_400.0)),
        (said(X_RateLimit_Remaining="3", X_RateLimit_Reset="-1"), ServerWord(malformed="X-RateLimit-Reset")),
        (said(X_RateLimit_Remaining="3"), ServerWord(malformed="X-RateLimit-Reset")),
        (said(X_RateLimit_Remaining="nan", X_RateLimit_Reset="1"), ServerWord(malformed="X-RateLimit-Reset")),
        (said(X_RateLimit_Limit="x", X_RateLimit_Remaining="1", X_RateLimit_Reset="1"), ServerWord(left=1, reset=1.0)),
        (
            said(RateLimit_Remaining="2", RateLimit_Reset="9", RateLimit_Limit="10"),
            ServerWord(left=2, reset=9.0, quota=10),
        ),
        # The draft wins over the common dialect when both are sent.
        (
            said(RateLimit='"d";r=1;t=2', X_RateLimit_Remaining="50", X_RateLimit_Reset="60"),
            ServerWord(left=1, reset=2.0),
        ),
    ],
)
def test_what_each_dialect_says(word: ServerWord, expected: ServerWord) -> None:
    assert word == expected


def test_the_wall_clock_is_read_when_not_given() -> None:
    response = httpx.Response(200, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1000000000"})
    assert read(response).reset == 0.0  # 2001: long past
