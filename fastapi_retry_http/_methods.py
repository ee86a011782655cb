"""The per-method shortcuts of `Client`: each is `request()` with its method filled in."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Unpack

import httpx

from ._types import BodyOptions, Options

__all__ = ["HttpMethods"]


class HttpMethods:
    """`get`, `head`, `options`, `delete`, `post`, `put` and `patch`, over `request()`."""

    #: Provided by `Client`; every shortcut below is this with its method filled in.
    request: Callable[..., Awaitable[httpx.Response]]

    async def get(self, path: str, **options: Unpack[Options]) -> httpx.Response:
        """Send a `GET`; takes `request`'s keyword arguments but the body ones."""
        return await self.request("GET", path, **options)

    async def head(self, path: str, **options: Unpack[Options]) -> httpx.Response:
        """Send a `HEAD`; takes `request`'s keyword arguments but the body ones."""
        return await self.request("HEAD", path, **options)

    async def options(self, path: str, **options: Unpack[Options]) -> httpx.Response:
        """Send an `OPTIONS`; takes `request`'s keyword arguments but the body ones."""
        return await self.request("OPTIONS", path, **options)

    async def delete(self, path: str, **options: Unpack[Options]) -> httpx.Response:
        """Send a `DELETE`; takes `request`'s keyword arguments but the body ones."""
        return await self.request("DELETE", path, **options)

    async def post(self, path: str, **options: Unpack[BodyOptions]) -> httpx.Response:
        """
        Send a `POST`; takes `request`'s keyword arguments.

        Not retried once sent, unless it carries an `Idempotency-Key` header or the policy
        lists `POST` in `methods`; a connection that was never made is always retried.
        """
        return await self.request("POST", path, **options)

    async def put(self, path: str, **options: Unpack[BodyOptions]) -> httpx.Response:
        """Send a `PUT`; takes `request`'s keyword arguments."""
        return await self.request("PUT", path, **options)

    async def patch(self, path: str, **options: Unpack[BodyOptions]) -> httpx.Response:
        """Send a `PATCH`; takes `request`'s keyword arguments; retried once sent only like `post`."""
        return await self.request("PATCH", path, **options)
