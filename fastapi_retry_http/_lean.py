"""
The lean request path of `Client`: what `httpx.AsyncClient.send` does for a client with nothing
of its own to add (no auth, cookies, default query parameters, event hooks or redirects),
without its auth, redirect and hook loops and its cookie extraction. The request, built as
httpx's `build_request` builds it, goes straight to the pipeline, which reads the body inside
the attempt; the caller gets the same `httpx.Response`. See the Performance page of the docs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

import httpx

from ._arguments import checked_timeout
from ._pipeline.attempts import OPTIONS_EXTENSION, CallOptions
from ._pipeline.httpx_parts import header_list, mark_read
from ._pipeline.policy import RetryPolicy
from ._pipeline.transport import RetryTransport
from ._safety.redirects import remember_first_hop

if TYPE_CHECKING:
    from ._service_httpx import ServiceHttpxClient
from ._types import (
    USE_CLIENT_DEFAULT,
    QueryParams,
    RequestContent,
    RequestData,
    RequestFiles,
    TimeoutValue,
    UseClientDefault,
)

__all__ = ["URL_CACHE_SIZE", "LeanPath"]

#: The logger of httpx's `HTTP Request:` line, which the lean path writes as httpx would.
_httpx_logger = logging.getLogger("httpx")

#: How many merged URLs a client keeps, by path: most services call a few paths over and over,
#: and merging one into the base URL parses two URLs (about 10 us). Bounded, so a path with an
#: id in it costs at most this many entries (cleared when full).
URL_CACHE_SIZE: Final = 128

#: Methods httpx sends without a body, and without `Content-Length: 0`, when given none.
_NO_BODY_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "TRACE"})
#: The body of a request without one; stateless, so shared.
_EMPTY: Final = httpx.ByteStream(b"")


class LeanPath:
    """A client's lean path: its caches, and the send that skips `httpx.AsyncClient.send`."""

    def __init__(self, client: ServiceHttpxClient, transport: RetryTransport) -> None:
        self.httpx = client
        self.transport = transport
        self._urls: dict[str, httpx.URL] = {}
        self._urls_base = client.base_url
        self._prepared_headers = httpx.Headers()
        self._prepared_raw: list[tuple[bytes, bytes, bytes]] = []
        self._prepared_url: httpx.URL | None = None
        self._timeout: httpx.Timeout | None = None
        self._timeout_dict: Mapping[str, float | None] = {}

    def plain(self) -> bool:
        """
        Whether `httpx.AsyncClient.send` has nothing to add: no auth, cookies, default query
        parameters, event hooks or redirects. What the constructor does not set can still be
        set later through `.httpx`; then the call takes the full path.
        """
        client = self.httpx
        hooks = client.event_hooks
        return client.plain and hooks["request"] == [remember_first_hop] and not hooks["response"]

    def url(self, path: str) -> httpx.URL | None:
        """`path` merged into the base URL as httpx merges it; `None` if it carries userinfo."""
        base = self.httpx.base_url
        if base is not self._urls_base:  # replaced through `.httpx`
            self._urls.clear()
            self._urls_base = base
        url = self._urls.get(path)
        if url is None:
            merge = httpx.URL(path)
            if merge.is_relative_url:
                url = base.copy_with(raw_path=base.raw_path + merge.raw_path.lstrip(b"/"))
            elif merge.userinfo:
                return None  # httpx sends it as Basic auth: the full path does that
            else:
                url = merge
            if len(self._urls) >= URL_CACHE_SIZE:
                self._urls.clear()
            self._urls[path] = url
        return url

    def prepared(self, url: httpx.URL) -> httpx.Headers:
        """The client's headers with the `Host` httpx adds for `url`, as httpx.Request orders them."""
        listed = header_list(self.httpx.headers)
        if url is not self._prepared_url or listed != self._prepared_raw:
            # The same URL object (from the cache) has the same `Host`; another may too.
            if self._prepared_url is None or url.netloc != self._prepared_url.netloc or listed != self._prepared_raw:
                host = [] if "host" in self.httpx.headers else [(b"Host", url.netloc)]
                self._prepared_headers = httpx.Headers(host + self.httpx.headers.raw)
                self._prepared_raw = list(listed)  # a copy: httpx changes its list in place
            self._prepared_url = url
        return self._prepared_headers

    # long: httpx's own request building, step for step, so that the bytes sent are the same.
    async def send(
        self,
        method: str,
        url: httpx.URL,
        params: QueryParams | None,
        content: RequestContent | None,
        json: Any,
        data: RequestData | None,
        files: RequestFiles | None,
        headers: Mapping[str, str] | None,
        timeout: TimeoutValue | UseClientDefault,
        retry: RetryPolicy | None,
    ) -> httpx.Response:
        """
        What `httpx.AsyncClient.send` does for a client with nothing of its own to add, without
        its auth, redirect and hook loops and its cookie extraction: the request goes straight
        to the pipeline, which reads the body inside the attempt.
        """
        client = self.httpx
        per_attempt = client.timeout if timeout is USE_CLIENT_DEFAULT else checked_timeout(timeout)
        if per_attempt is not self._timeout:
            # httpx builds this dict anew for every request; here it is built once, read-only.
            self._timeout, self._timeout_dict = per_attempt, MappingProxyType(per_attempt.as_dict())
        extensions: dict[str, Any] = {"timeout": self._timeout_dict}
        if retry is not None:
            extensions[OPTIONS_EXTENSION] = CallOptions(retry)
        if headers or content is not None or data is not None or files is not None or json is not None:
            if headers:
                merged = httpx.Headers(client.headers)
                merged.update(headers)
            else:
                merged = client.headers  # copied by httpx.Request
            request = httpx.Request(
                method,
                url,
                params=params,
                headers=merged,
                content=content,
                data=data,
                files=files,
                json=json,
                extensions=extensions,
            )
        elif method in _NO_BODY_METHODS:
            # The common call: no body, no headers of its own. httpx.Request would encode an
            # empty body and merge `Host` into the headers, again on every call; the result,
            # the same headers in the same order, is kept until the client's headers change.
            request = httpx.Request(
                method, url, params=params, headers=self.prepared(url), stream=_EMPTY, extensions=extensions
            )
            mark_read(request, b"")  # what `request.read()` leaves, without its checks
        else:
            request = httpx.Request(method, url, params=params, headers=client.headers, extensions=extensions)
        if params is None:
            # The URL object the cache holds (httpx wrapped it anew, equal): the backend keeps
            # what it made of the last one by identity.
            request.url = url
        if not isinstance(request.stream, httpx.AsyncByteStream):
            raise RuntimeError("Attempted to send a sync request with an AsyncClient instance.")  # as httpx does
        try:
            response = await self.transport.handle_async_request(request)
        except httpx.RequestError as error:
            error.request = request  # as httpx does, for errors raised without one
            raise
        response.request = request
        if _httpx_logger.isEnabledFor(logging.INFO):
            # httpx's own line, word for word (the redactor rewrites its URL).
            _httpx_logger.info(
                'HTTP Request: %s %s "%s %d %s"',
                request.method,
                request.url,
                response.http_version,
                response.status_code,
                response.reason_phrase,
            )
        return response
