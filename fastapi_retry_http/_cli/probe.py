"""`probe`: one request through each named client, and what came of it."""

from __future__ import annotations

import time
from typing import Final, TextIO

import httpx

from .._config.client import ClientSettings
from .._fastapi.registry import normalise_name
from .._pipeline.transport import ATTEMPTS_EXTENSION
from .load import Invalid
from .show import build, table

__all__ = ["probe"]

#: Statuses that fail a probe although the upstream answered: the client's credentials.
REFUSED: Final = {
    401: "the upstream did not accept the client's credentials: check its headers (Authorization, API key)",
    403: "the upstream refused this client access: its credentials lack the permission for this path",
}

Rows = list[tuple[str, str]]


async def probe(configs: dict[str, ClientSettings], names: list[str], method: str, path: str, out: TextIO) -> int:
    """Probe each of `names`; 1 if any probe failed, else 0."""
    unknown = [n for n in names if normalise_name(n) not in configs]
    if unknown:
        known = ", ".join(repr(n) for n in sorted(configs)) or "none"
        raise Invalid(f"No client named {', '.join(map(repr, unknown))}; the configured clients are: {known}.")
    failed = 0
    for index, name in enumerate(names):
        if index:
            print(file=out)
        rows, ok = await _probe_one(normalise_name(name), configs[normalise_name(name)], method, path)
        failed += not ok
        table(name, rows, out)
    return 1 if failed else 0


async def _probe_one(name: str, config: ClientSettings, method: str, path: str) -> tuple[Rows, bool]:
    client = build(name, config)
    started = time.perf_counter()
    try:
        async with client:
            response = await client.request(method, path)
    except Exception as error:
        elapsed = (time.perf_counter() - started) * 1000
        note = next((n for n in getattr(error, "__notes__", ()) if "attempt" in n), None)
        rows = [
            ("request", _requested(method, path, error)),
            ("error", type(error).__name__),
            ("latency", f"{elapsed:.1f} ms (all attempts)"),
            ("attempts", note.removeprefix("fastapi_retry_http: ") if note else "1 (not retried)"),
            ("result", "FAILED"),
        ]
        return rows, False
    elapsed = (time.perf_counter() - started) * 1000
    attempts = response.extensions.get(ATTEMPTS_EXTENSION, 1)
    rows = [
        # What was sent, as sent: the base URL's path included.
        ("request", f"{method} {response.request.url}"),
        ("status", f"{response.status_code} {response.reason_phrase}".rstrip()),
        ("latency", f"{elapsed:.1f} ms (all attempts)"),
        ("tls", _tls(response)),
        ("attempts", f"{attempts} of at most {config.retry.attempts}"),
    ]
    status = response.status_code
    if status in REFUSED:
        rows.append(("result", f"FAILED: {REFUSED[status]}"))
        return rows, False
    if status >= 500:
        rows.append(("result", "FAILED"))
        return rows, False
    if status == 404:
        rows.append(("warning", "nothing at this path (404): check the base URL and --path"))
    rows.append(("result", "ok"))
    return rows, True


def _requested(method: str, path: str, error: Exception) -> str:
    if isinstance(error, httpx.RequestError):
        try:
            return f"{method} {error.request.url}"
        except RuntimeError:  # raised without its request
            pass
    return f"{method} {path or '(base URL)'} (refused before sending)"


def _tls(response: httpx.Response) -> str:
    if response.url.scheme != "https":
        return "none (http)"
    stream = response.extensions.get("network_stream")
    ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
    if ssl_object is None:
        return "not reported by this backend"
    cipher = ssl_object.cipher()
    return f"{ssl_object.version()}, {cipher[0] if cipher else 'unknown cipher'}"
