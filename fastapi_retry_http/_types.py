"""
The argument types of the request methods, written out here: httpx keeps its own in a private
module (`httpx._types`), which a library must not import. Same shapes as httpx's, so every
value is passed to httpx unchanged.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterable, Callable, Iterable, Mapping, Sequence
from typing import IO, Any, Final, Protocol, TypedDict

import httpx

from ._pipeline.policy import RetryPolicy

__all__ = [
    "USE_CLIENT_DEFAULT",
    "BodyOptions",
    "ClientConfig",
    "EventHooks",
    "Options",
    "QueryParams",
    "RequestContent",
    "RequestData",
    "RequestFiles",
    "TimeoutValue",
    "UseClientDefault",
]

Primitive = str | int | float | bool | None

QueryParams = (
    httpx.QueryParams
    | Mapping[str, Primitive | Sequence[Primitive]]
    | list[tuple[str, Primitive]]
    | tuple[tuple[str, Primitive], ...]
    | str
    | bytes
)
RequestContent = str | bytes | Iterable[bytes] | AsyncIterable[bytes]
RequestData = Mapping[str, Any]
FileContent = IO[bytes] | bytes | str
FileTypes = (
    FileContent
    | tuple[str | None, FileContent]
    | tuple[str | None, FileContent, str | None]
    | tuple[str | None, FileContent, str | None, Mapping[str, str]]
)
RequestFiles = Mapping[str, FileTypes] | Sequence[tuple[str, FileTypes]]
TimeoutValue = float | None | tuple[float | None, float | None, float | None, float | None] | httpx.Timeout


class UseClientDefault(enum.Enum):
    """The type of `USE_CLIENT_DEFAULT`: "this call uses the client's own setting"."""

    USE_CLIENT_DEFAULT = "client default"


#: The default of a call's `timeout=`: the client's own timeout.
USE_CLIENT_DEFAULT: Final = UseClientDefault.USE_CLIENT_DEFAULT


class Options(TypedDict, total=False):
    """The keyword arguments every request method takes (see `Client.request`)."""

    params: QueryParams | None
    headers: Mapping[str, str] | None
    timeout: TimeoutValue | UseClientDefault
    retry: RetryPolicy | None


class BodyOptions(Options, total=False):
    """The keyword arguments of the methods that send a body (see `Client.request`)."""

    content: RequestContent | None
    json: Any
    data: RequestData | None
    files: RequestFiles | None


class ClientConfig(Protocol):
    """What `Client.from_settings` needs of a settings object (`ClientSettings` is one)."""

    def client_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of `Client` the settings stand for."""


EventHooks = Mapping[str, list[Callable[..., Any]]]
