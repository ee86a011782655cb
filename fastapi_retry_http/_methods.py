"""The per-method shortcuts of `Client`: each is `request()` with its method filled in."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx

from ._resilience.policy import RetryPolicy
from ._types import (
    USE_CLIENT_DEFAULT,
    QueryParams,
    RequestContent,
    RequestData,
    RequestFiles,
    TimeoutValue,
    UseClientDefault,
)

__all__ = ["HttpMethods"]


class HttpMethods:
    """`get`, `head`, `options`, `delete`, `post`, `put` and `patch`, over `request()`."""

    #: Provided by `Client`; every shortcut below is this with its method filled in.
    request: Callable[..., Awaitable[httpx.Response]]

    async def get(
        self,
        path: str,
        *,
        params: QueryParams | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: TimeoutValue | UseClientDefault = USE_CLIENT_DEFAULT,
        retry: RetryPolicy | None = None,
    ) -> httpx.Response:
        """Send a `GET`; see [`request`][fastapi_retry_http.Client.request]."""
        return await self.request("GET", path, params=params, headers=headers, timeout=timeout, retry=retry)

    async def head(
        self,
        path: str,
        *,
        params: QueryParams | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: TimeoutValue | UseClientDefault = USE_CLIENT_DEFAULT,
        retry: RetryPolicy | None = None,
    ) -> httpx.Response:
        """Send a `HEAD`; see [`request`][fastapi_retry_http.Client.request]."""
        return await self.request("HEAD", path, params=params, headers=headers, timeout=timeout, retry=retry)

    async def options(
        self,
        path: str,
        *,
        params: QueryParams | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: TimeoutValue | UseClientDefault = USE_CLIENT_DEFAULT,
        retry: RetryPolicy | None = None,
    ) -> httpx.Response:
        """Send an `OPTIONS`; see [`request`][fastapi_retry_http.Client.request]."""
        return await self.request("OPTIONS", path, params=params, headers=headers, timeout=timeout, retry=retry)

    async def delete(
        self,
        path: str,
        *,
        params: QueryParams | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: TimeoutValue | UseClientDefault = USE_CLIENT_DEFAULT,
        retry: RetryPolicy | None = None,
    ) -> httpx.Response:
        """Send a `DELETE`; see [`request`][fastapi_retry_http.Client.request]."""
        return await self.request("DELETE", path, params=params, headers=headers, timeout=timeout, retry=retry)

    async def post(
        self,
        path: str,
        *,
        content: RequestContent | None = None,
        json: Any = None,
        data: RequestData | None = None,
        files: RequestFiles | None = None,
        params: QueryParams | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: TimeoutValue | UseClientDefault = USE_CLIENT_DEFAULT,
        retry: RetryPolicy | None = None,
    ) -> httpx.Response:
        """
        Send a `POST`; see [`request`][fastapi_retry_http.Client.request].

        Not retried once sent, unless it carries an `Idempotency-Key` header or the policy
        lists `POST` in `methods`; a connection that was never made is always retried.
        """
        return await self.request(
            "POST",
            path,
            content=content,
            json=json,
            data=data,
            files=files,
            params=params,
            headers=headers,
            timeout=timeout,
            retry=retry,
        )

    async def put(
        self,
        path: str,
        *,
        content: RequestContent | None = None,
        json: Any = None,
        data: RequestData | None = None,
        files: RequestFiles | None = None,
        params: QueryParams | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: TimeoutValue | UseClientDefault = USE_CLIENT_DEFAULT,
        retry: RetryPolicy | None = None,
    ) -> httpx.Response:
        """Send a `PUT`; see [`request`][fastapi_retry_http.Client.request]."""
        return await self.request(
            "PUT",
            path,
            content=content,
            json=json,
            data=data,
            files=files,
            params=params,
            headers=headers,
            timeout=timeout,
            retry=retry,
        )

    async def patch(
        self,
        path: str,
        *,
        content: RequestContent | None = None,
        json: Any = None,
        data: RequestData | None = None,
        files: RequestFiles | None = None,
        params: QueryParams | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: TimeoutValue | UseClientDefault = USE_CLIENT_DEFAULT,
        retry: RetryPolicy | None = None,
    ) -> httpx.Response:
        """Send a `PATCH`; retried once sent only like `post`."""
        return await self.request(
            "PATCH",
            path,
            content=content,
            json=json,
            data=data,
            files=files,
            params=params,
            headers=headers,
            timeout=timeout,
            retry=retry,
        )
