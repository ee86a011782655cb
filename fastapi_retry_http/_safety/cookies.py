"""
Cookies a shared client must not keep.

httpx stores every `Set-Cookie` of a response in the client's jar and sends it on every later
request. A service's client is shared by all of its callers, so one end user's upstream
session would go out on another user's call. Unless a client is built with
`keep_cookies=True`, its jar sends what it was given (`client.httpx.cookies`) and never takes
anything from a response, on any path and through any redirect.
"""

from __future__ import annotations

from collections.abc import Callable
from http.cookiejar import Cookie, CookieJar
from typing import Any

import httpx

__all__ = ["SendOnlyJar", "send_only"]


class SendOnlyJar(CookieJar):
    """A cookie jar that sends the cookies put in it and takes none from responses."""

    def __init__(self, on_set: Callable[[], None] | None = None) -> None:
        super().__init__()
        self._on_set = on_set

    def set_cookie(self, cookie: Cookie) -> None:
        """Keep `cookie` (one put on the client, never a response's), and say so."""
        super().set_cookie(cookie)
        if self._on_set is not None:
            self._on_set()

    def extract_cookies(self, response: Any, request: Any) -> None:
        """Ignore the response's `Set-Cookie` (what httpx calls after every response)."""


def send_only(cookies: httpx.Cookies, on_set: Callable[[], None] | None = None) -> None:
    """Make `cookies` keep what it holds and take nothing more from responses."""
    jar = SendOnlyJar(on_set)
    for cookie in cookies.jar:
        jar.set_cookie(cookie)
    cookies.jar = jar
