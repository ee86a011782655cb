"""
The sending half of `Client`: `request()`, `stream()` and the per-method shortcuts (each is
`request()` with its method filled in). `_client.py` builds what they send through.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Unpack

import httpx
from httpx import Response

from ._lean import LeanPath
from ._pipeline.policy import RetryPolicy
from ._safety.headers import header_problem
from ._safety.urls import check_path
from ._service_httpx import build_request
from ._types import (
    USE_CLIENT_DEFAULT,
    BodyOptions,
    Options,
    QueryParams,
    RequestContent,
    RequestData,
    RequestFiles,
    TimeoutValue,
    UseClientDefault,
)
from .exceptions import ClientClosedError

__all__ = ["HttpMethods"]


class HttpMethods:
    """`request`, `stream`, and `get`, `head`, `options`, `delete`, `post`, `put` and `patch` over it."""

    # Set by `Client.__init__`.
    name: str
    httpx: httpx.AsyncClient
    _lean: LeanPath | None
    _closed: bool
    _allow_absolute_urls: bool

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: QueryParams | None = None,
        content: RequestContent | None = None,
        json: Any = None,
        data: RequestData | None = None,
        files: RequestFiles | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: TimeoutValue | UseClientDefault = USE_CLIENT_DEFAULT,
        retry: RetryPolicy | None = None,
    ) -> Response:
        """
        Send a request and return its response, body read, after any retries.

        Args:
            method: The HTTP method.
            path: Relative to `base_url`.
            params: Query parameters.
            content: A raw body (`bytes`, `str`, or an async iterator, which is never retried).
            json: A body to send as JSON.
            data: A form body.
            files: Multipart files.
            headers: Headers for this request only, merged over the client's.
            timeout: Per-attempt timeout for this request.
            retry: A policy for this request only.

        Returns:
            The final response: the first that is not retried, or the last one when retries
            are spent. Statuses are not raised; call `raise_for_status()` if you want that.

        Raises:
            httpx.HTTPError: The original httpx error when the last attempt failed.
            UnsafePathError: `path` would leave `base_url`.
            ClientClosedError: The client was closed.
        """
        self._check(path, headers)
        if self._lean is not None and self._lean.plain():
            url = self._lean.url(path)
            if url is not None:
                return await self._lean.send(method, url, params, content, json, data, files, headers, timeout, retry)
        options: BodyOptions = {"params": params, "content": content, "json": json, "data": data, "files": files}
        request = build_request(
            self.httpx, method, path, {**options, "headers": headers, "timeout": timeout, "retry": retry}, False
        )
        return await self.httpx.send(request)

    @asynccontextmanager
    async def stream(self, method: str, path: str, **options: Unpack[BodyOptions]) -> AsyncIterator[Response]:
        """
        Send a request and yield the response before its body is read; takes `request`'s
        keyword arguments.

        Retried until the response headers arrive; once the body is being read, a failure is
        raised to the caller (the bytes already handed out cannot be taken back).

        ```python
        async with client.stream("GET", "exports/1") as response:
            async for chunk in response.aiter_bytes():
                ...
        ```
        """
        self._check(path, options.get("headers"))
        request = build_request(self.httpx, method, path, options, True)
        response = await self.httpx.send(request, stream=True)
        try:
            yield response
        finally:
            await response.aclose()

    def _check(self, path: str, headers: Mapping[str, str] | None) -> None:
        if self._closed:
            raise ClientClosedError(f"Client {self.name!r} is closed; it cannot send requests any more.")
        check_path(path, allow_absolute_urls=self._allow_absolute_urls)
        if headers:
            problem = header_problem(headers.items())
            if problem is not None:
                raise httpx.LocalProtocolError(problem)  # before any I/O, and without the value

    async def get(self, path: str, **options: Unpack[Options]) -> Response:
        """Send a `GET`; takes `request`'s keyword arguments but the body ones."""
        return await self.request("GET", path, **options)

    async def head(self, path: str, **options: Unpack[Options]) -> Response:
        """Send a `HEAD`; takes `request`'s keyword arguments but the body ones."""
        return await self.request("HEAD", path, **options)

    async def options(self, path: str, **options: Unpack[Options]) -> Response:
        """Send an `OPTIONS`; takes `request`'s keyword arguments but the body ones."""
        return await self.request("OPTIONS", path, **options)

    async def delete(self, path: str, **options: Unpack[Options]) -> Response:
        """Send a `DELETE`; takes `request`'s keyword arguments but the body ones."""
        return await self.request("DELETE", path, **options)

    async def post(self, path: str, **options: Unpack[BodyOptions]) -> Response:
        """
        Send a `POST`; takes `request`'s keyword arguments.

        Not retried once sent, unless it carries an `Idempotency-Key` header or the policy
        lists `POST` in `methods`; a connection that was never made is always retried.
        """
        return await self.request("POST", path, **options)

    async def put(self, path: str, **options: Unpack[BodyOptions]) -> Response:
        """Send a `PUT`; takes `request`'s keyword arguments."""
        return await self.request("PUT", path, **options)

    async def patch(self, path: str, **options: Unpack[BodyOptions]) -> Response:
        """Send a `PATCH`; takes `request`'s keyword arguments; retried once sent only like `post`."""
        return await self.request("PATCH", path, **options)
