"""`ClientRegistry`: the named clients a lifespan built, as a read-only mapping."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

import httpx

from .._client import Client
from ..exceptions import UnknownClientError

__all__ = ["ClientRegistry", "clients"]

logger: Final = logging.getLogger("fastapi_retry_http")


def normalise_name(name: str) -> str:
    """Names compare case-insensitively: pydantic-settings lowercases names read from the environment."""
    return name.lower()


class ClientRegistry(Mapping[str, Client]):
    """
    The clients a lifespan built, by name: a read-only mapping.

    Names are compared case-insensitively. An unknown name raises
    [`UnknownClientError`][fastapi_retry_http.exceptions.UnknownClientError] (a `KeyError`)
    listing the configured names. Each app may have its own registry; the default one is
    [`clients`][fastapi_retry_http.clients].
    """

    def __init__(self) -> None:
        self._clients: dict[str, Client] = {}
        #: Transports that replace the network of the clients built later, by lowercased name
        #: (set through [`testing.override_transport`][fastapi_retry_http.testing.override_transport]).
        self.transport_overrides: dict[str, httpx.AsyncBaseTransport] = {}
        #: `Client` keyword arguments that win over the settings of the clients built later, by
        #: lowercased name (set through [`testing.chaos_for`][fastapi_retry_http.testing.chaos_for]).
        self.option_overrides: dict[str, dict[str, Any]] = {}

    def __getitem__(self, name: str) -> Client:
        try:
            return self._clients[normalise_name(name)]
        except KeyError:
            raise UnknownClientError(self.unknown_message([name])) from None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and normalise_name(name) in self._clients

    def __iter__(self) -> Iterator[str]:
        return iter(self._clients)

    def __len__(self) -> int:
        return len(self._clients)

    def __repr__(self) -> str:
        return f"<ClientRegistry {sorted(self._clients)}>"

    def unknown_message(self, names: Iterable[str], configured: Iterable[str] | None = None) -> str:
        """The message for names that are not configured, listing the ones that are."""
        wanted = ", ".join(repr(n) for n in sorted(names))
        known = ", ".join(repr(n) for n in sorted(self._clients if configured is None else configured))
        return f"No HTTP client named {wanted}; the configured clients are: {known or 'none'}."

    def add(self, client: Client) -> None:
        """Register a built client under its name; a name already present is an error."""
        key = normalise_name(client.name)
        if key in self._clients:
            raise RuntimeError(
                f"A client named {client.name!r} is already registered: another app started on the same "
                "registry with the same name. Give each app its own ClientRegistry "
                "(clients_lifespan(..., registry=ClientRegistry()))."
            )
        self._clients[key] = client

    async def aclose(self, names: Iterable[str] | None = None) -> None:
        """
        Close and remove every client (or those in `names`), even when some closes fail.

        A failure is logged with the client name and does not stop the others from closing.
        """
        keys = list(self._clients) if names is None else [normalise_name(n) for n in names]
        for key in keys:
            client = self._clients.pop(key, None)
            if client is None:
                continue
            try:
                await client.aclose()
            except Exception:
                logger.exception("%s: closing the client failed.", client.name)


#: The default registry, used by `clients_lifespan` and `get_client` unless given another.
clients: Final = ClientRegistry()
