"""
The demo: a flaky upstream and the example app on loopback, traffic through it, and what the
retrying clients did. Run it with `uv run python -m examples.demo`; it needs no network.
"""

import asyncio
import logging
import socket
from typing import Any

import httpx
import uvicorn

from examples.app import Settings, create_app
from examples.upstream import FlakyUpstream
from fastapi_retry_http import ClientSettings, RetryPolicy, clients


class RetryLog(logging.Handler):
    """Collects the library's one-record-per-retry log."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def serve(app: Any) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110 (uvicorn offers no event to wait on)
        await asyncio.sleep(0.01)
    return server, task, f"http://127.0.0.1:{sock.getsockname()[1]}"


async def main() -> list[str]:
    lines: list[str] = []

    def say(line: str = "") -> None:
        lines.append(line)
        print(line)

    log = RetryLog()
    logging.getLogger("fastapi_retry_http").addHandler(log)
    logging.getLogger("fastapi_retry_http").setLevel(logging.INFO)

    upstream = FlakyUpstream()
    upstream_server, upstream_task, upstream_url = await serve(upstream.app)
    # Short backoff so the demo is quick; Retry-After is honoured as sent.
    policy = RetryPolicy(attempts=3, wait_initial=0.05, wait_max=0.5)
    settings = Settings(
        http_clients={
            "billing": ClientSettings(base_url=f"{upstream_url}/billing/", retry=policy),
            "shipping": ClientSettings(base_url=f"{upstream_url}/shipping/", retry=policy),
        }
    )
    app_server, app_task, app_url = await serve(create_app(settings))
    say(f"flaky upstream on {upstream_url}, example app on {app_url}")
    say()

    upstream.fail("/billing/invoices/1", 503, 502)
    upstream.fail("/shipping/parcels/1", 429, headers={"Retry-After": "1"})
    upstream.fail("/billing/charges", 503)
    upstream.fail("/billing/refunds", 503)

    async with httpx.AsyncClient(base_url=app_url, timeout=30) as http:
        for method, path, note in [
            ("GET", "/orders/1", "billing answers 503, 502, then 200; shipping 429 with Retry-After: 1"),
            ("POST", "/orders/1/charge", "billing answers 503: a POST is not sent twice"),
            ("POST", "/orders/1/refund", "billing answers 503, but this POST has an Idempotency-Key"),
        ]:
            before = len(log.records)
            response = await http.request(method, path)
            say(f"{method} {path}  ({note})")
            say(f"    -> {response.status_code} {response.text}")
            for record in log.records[before:]:
                say(f"    retry: {record.getMessage()}")

    say()
    say("requests the upstream received:")
    for key, count in sorted(upstream.hits.items()):
        say(f"    {count} x {key}")
    running = dict(clients)
    app_server.should_exit = True
    await app_task
    say()
    say(
        f"after shutdown: registry holds {len(clients)} clients; closed: "
        + ", ".join(f"{name}={client.is_closed}" for name, client in running.items())
    )
    upstream_server.should_exit = True
    await upstream_task
    logging.getLogger("fastapi_retry_http").removeHandler(log)
    return lines


if __name__ == "__main__":
    asyncio.run(main())
