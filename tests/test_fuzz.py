"""
Property-based tests of the pure guards: the `Retry-After` parser and the path guard. They
do no I/O, so they run once, not once per backend.
"""

from __future__ import annotations

import math

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from fastapi_retry_http._pipeline.policy import parse_retry_after
from fastapi_retry_http._safety.urls import check_path
from fastapi_retry_http.exceptions import UnsafePathError

MERGER = httpx.Client(base_url="https://api.internal/v1/", transport=httpx.MockTransport(lambda r: httpx.Response(200)))

PATH_PIECES = ["a", "b", "..", ".", "%2e%2e", "%2E.", "%2f", "/", "//", "\\", "x:y", "?", "#", "%", "%5c", ";", ";x=1"]


class TestFuzzed:
    @given(st.text(max_size=60))
    @settings(max_examples=400, deadline=None)
    def test_retry_after_never_raises_and_stays_in_range(self, value: str) -> None:
        seconds = parse_retry_after(value)
        assert seconds is None or seconds >= 0
        stripped = value.strip()
        if stripped.isascii() and stripped.isdigit():  # delta-seconds are always usable, as given
            assert seconds == (float(stripped) if len(stripped) < 300 else math.inf)
        elif seconds is not None:  # otherwise only a date is, and a date is finite
            assert math.isfinite(seconds)

    @given(st.lists(st.sampled_from(PATH_PIECES), max_size=12).map("".join))
    @settings(max_examples=600, deadline=None)
    def test_no_accepted_path_leaves_the_base(self, path: str) -> None:
        try:
            check_path(path, allow_absolute_urls=False)
        except UnsafePathError:
            return
        merged = MERGER.build_request("GET", path).url  # exactly how the client resolves a path
        assert (merged.scheme, merged.host, merged.port) == ("https", "api.internal", None)
        assert merged.path == "/v1" or merged.path.startswith("/v1/")
        decoded = merged.path
        for encoded, plain in [("%2e", "."), ("%2f", "/"), ("%5c", "\\")]:
            decoded = decoded.replace(encoded, plain).replace(encoded.upper(), plain)
        assert "\\" not in decoded
        depth = 0
        for segment in decoded[len("/v1/") :].split("/"):
            segment = segment.split(";", 1)[0]  # Tomcat and Spring drop ";parameters"
            depth += -1 if segment == ".." else (segment not in ("", "."))
            assert depth >= 0
