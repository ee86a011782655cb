"""
The `httpx.AsyncClient` under a `Client`: its transport is the pipeline, its cookie jar keeps
no response cookies (unless asked), every request remembers its origin for the redirect
guard, and environment proxies are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from ._arguments import checked_timeout
from ._defaults import MAX_REDIRECTS
from ._pipeline.attempts import OPTIONS_EXTENSION, CallOptions
from ._safety.cookies import send_only
from ._safety.decoders import ACCEPT_ENCODING
from ._safety.redirects import remember_first_hop
from ._types import USE_CLIENT_DEFAULT, BodyOptions, EventHooks

__all__ = ["ServiceHttpxClient", "build_request", "service_httpx_client"]


#: httpx's own properties, which the subclass extends.
_HTTPX_COOKIES: property = httpx.AsyncClient.cookies  # type: ignore[assignment]
_HTTPX_AUTH: property = httpx.AsyncClient.auth  # type: ignore[assignment]
_HTTPX_PARAMS: property = httpx.AsyncClient.params  # type: ignore[assignment]


class ServiceHttpxClient(httpx.AsyncClient):
    """
    `httpx.AsyncClient` whose cookie jar, however it is replaced, keeps no response cookies,
    and which knows, without looking, whether its send loop has anything to add to a call
    (`plain`): each setter of what it adds (auth, params, cookies, redirects) updates it.
    """

    def __init__(self, *, keep_cookies: bool = False, **kwargs: Any) -> None:
        #: Whether cookies from responses are kept (`Client(keep_cookies=True)`).
        self.keeps_cookies = keep_cookies
        self._extras: dict[str, bool] = {}
        super().__init__(**kwargs)
        if not keep_cookies:
            send_only(self.cookies, lambda: self._extras.__setitem__("cookies", True))
        self._extras.update(cookies=bool(self.cookies), auth=self.auth is not None, params=bool(self.params))

    @property
    def plain(self) -> bool:
        """No auth, params, cookies or redirects: what the lean path may skip (hooks aside)."""
        return not any(self._extras.values())

    @property
    def cookies(self) -> httpx.Cookies:
        """The cookies sent with every request (httpx's own property)."""
        cookies: httpx.Cookies = _HTTPX_COOKIES.fget(self)  # type: ignore[misc]
        return cookies

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        _HTTPX_COOKIES.fset(self, cookies)  # type: ignore[misc]
        if not self.keeps_cookies:
            send_only(self.cookies, lambda: self._extras.__setitem__("cookies", True))
        self._extras["cookies"] = bool(self.cookies)

    @property
    def auth(self) -> httpx.Auth | None:
        """Authentication for every request (httpx's own property)."""
        auth: httpx.Auth | None = _HTTPX_AUTH.fget(self)  # type: ignore[misc]
        return auth

    @auth.setter
    def auth(self, auth: Any) -> None:
        _HTTPX_AUTH.fset(self, auth)  # type: ignore[misc]
        self._extras["auth"] = self.auth is not None

    @property
    def params(self) -> httpx.QueryParams:
        """Query parameters added to every request (httpx's own property)."""
        params: httpx.QueryParams = _HTTPX_PARAMS.fget(self)  # type: ignore[misc]
        return params

    @params.setter
    def params(self, params: Any) -> None:
        _HTTPX_PARAMS.fset(self, params)  # type: ignore[misc]
        self._extras["params"] = bool(self.params)

    @property
    def follow_redirects(self) -> bool:
        """Whether redirects are followed (an attribute in httpx, a property here)."""
        return self._extras.get("redirects", False)

    @follow_redirects.setter
    def follow_redirects(self, follow: bool) -> None:
        self._extras["redirects"] = bool(follow)


def service_httpx_client(
    *,
    base_url: httpx.URL,
    headers: Mapping[str, str] | None,
    timeout: httpx.Timeout,
    transport: httpx.AsyncBaseTransport,
    follow_redirects: bool,
    event_hooks: EventHooks | None,
    keep_cookies: bool,
) -> ServiceHttpxClient:
    """The httpx client of a `Client`, every request of which goes through `transport`."""
    # Only the codings the transport decodes with bounded memory (see _safety/size_cap.py).
    headers = {"Accept-Encoding": ACCEPT_ENCODING, **(headers or {})}
    hooks = {"request": [], "response": [], **(event_hooks or {})}
    # First of all: every request that takes httpx's send loop (the one that follows
    # redirects, whenever they are turned on) remembers its origin for the redirect guard.
    hooks["request"] = [remember_first_hop, *hooks["request"]]
    return ServiceHttpxClient(
        keep_cookies=keep_cookies,
        base_url=base_url,
        headers=headers,
        timeout=timeout,
        transport=transport,
        follow_redirects=follow_redirects,
        max_redirects=MAX_REDIRECTS,
        event_hooks=hooks,
        # Environment proxies would mount transports of their own and bypass the retries;
        # a proxy is configured explicitly with `proxy=`.
        trust_env=False,
    )


def build_request(
    client: httpx.AsyncClient, method: str, path: str, options: BodyOptions, stream: bool
) -> httpx.Request:
    """The request httpx's send path takes, with the call's options as one `CallOptions`."""
    retry = options.get("retry")
    call = CallOptions(retry, stream) if stream or retry is not None else None
    timeout = options.get("timeout", USE_CLIENT_DEFAULT)
    return client.build_request(
        method,
        path,
        params=options.get("params"),
        content=options.get("content"),
        data=options.get("data"),
        files=options.get("files"),
        json=options.get("json"),
        headers=options.get("headers"),
        timeout=httpx.USE_CLIENT_DEFAULT if timeout is USE_CLIENT_DEFAULT else checked_timeout(timeout),
        extensions={} if call is None else {OPTIONS_EXTENSION: call},
    )
