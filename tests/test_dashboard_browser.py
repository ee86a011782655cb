"""
The dashboard page in a real browser: Debian's chromium driven by Playwright.

The app runs for real (uvicorn on a loopback port, its clients lifespan, an API key checked by
a dependency); the page loads without a console error, shows every client, and shows a
breaker opening within 2 s of it happening, and an operator closing it from the page. A
screenshot is taken each run; with
`DASHBOARD_SCREENSHOT=docs/dashboard.png` it is written where the docs page shows it.

No browser is ever downloaded: the test drives /usr/bin/chromium (`.ci/run` installs the
package when it is missing) and is skipped, saying why, where there is none.
"""

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
import uvicorn
from fastapi import Depends, FastAPI, Header, HTTPException

from fastapi_retry_http import CircuitBreaker, Client, ClientRegistry, clients_lifespan, exception_handlers, get_client
from fastapi_retry_http.dashboard import AttemptLog, clients_router
from tests.servers import Upstream

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
KEY = "operator-key"

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason=f"no chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)"
)


async def operators_only(x_api_key: Annotated[str | None, Header()] = None) -> None:
    if x_api_key != KEY:
        raise HTTPException(401, "operators only")


def make_app(upstream: Upstream) -> FastAPI:
    breaker = CircuitBreaker(failure_ratio=0.5, minimum_throughput=4, break_duration=30)
    configs: dict[str, dict[str, Any]] = {
        "billing": {"base_url": upstream.url + "/billing/", "circuit_breaker": breaker},
        "shipping": {"base_url": upstream.url + "/shipping/", "circuit_breaker": {}},
        "search": {"base_url": upstream.url + "/search/", "retry_budget": None},
    }
    lifespan = clients_lifespan(configs, registry=ClientRegistry(), instrumentation=[AttemptLog()])
    app = FastAPI(lifespan=lifespan, exception_handlers=exception_handlers())
    app.include_router(clients_router(dependencies=[Depends(operators_only)], actions=True), prefix="/ops/clients")

    @app.get("/billing/{path:path}")
    async def billing(path: str, client: Annotated[Client, Depends(get_client("billing"))]) -> int:
        return (await client.get(path)).status_code

    @app.get("/shipping/{path:path}")
    async def shipping(path: str, client: Annotated[Client, Depends(get_client("shipping"))]) -> int:
        return (await client.get(path)).status_code

    @app.get("/search/{path:path}")
    async def search(path: str, client: Annotated[Client, Depends(get_client("search"))]) -> int:
        return (await client.get(path)).status_code

    return app


@pytest.fixture
def service(upstream: Upstream) -> Iterator[str]:
    """The app served by uvicorn on a loopback port, its lifespan run; its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(make_app(upstream), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(10)


def test_the_page_shows_every_client_and_a_breaker_opening_within_2_s(
    service: str, upstream: Upstream, tmp_path: Path
) -> None:
    from playwright.sync_api import ConsoleMessage, sync_playwright

    upstream.script("/billing/invoices", *[503] * 6)
    upstream.script("/shipping/parcels/9", 503)
    with httpx.Client(base_url=service) as http:
        http.get("/shipping/parcels/9?token=never-shown")  # a retry, then a success
        http.get("/search/find")
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(extra_http_headers={"X-Api-Key": KEY}, viewport={"width": 1500, "height": 900})
        page = context.new_page()

        def console(message: ConsoleMessage) -> None:
            if message.type in ("error", "warning"):
                problems.append(f"{message.type}: {message.text}")

        page.on("console", console)
        page.on("pageerror", lambda error: problems.append(f"pageerror: {error}"))
        page.goto(service + "/ops/clients/")
        for name in ("billing", "shipping", "search"):
            page.wait_for_selector(f'[data-client="{name}"]', timeout=5000)
        assert page.locator('[data-client="billing"] [data-breaker="closed"]').count() == 1
        assert page.locator('[data-client="search"] [data-breaker="none"]').count() == 1
        shipping = page.locator('[data-client="shipping"]').inner_text()
        assert "/shipping/parcels/9" in shipping
        assert "never-shown" not in page.content()

        with httpx.Client(base_url=service) as http:
            for _ in range(2):  # 2 calls, 3 attempts each: the breaker opens on the 4th attempt
                http.get("/billing/invoices")
            opened = time.monotonic()
            assert http.get("/billing/invoices").status_code == 503  # refused: the exception handlers
        page.wait_for_selector('[data-client="billing"] [data-breaker="open"]', timeout=2000)
        seen_after = time.monotonic() - opened
        assert seen_after < 2.0
        billing = page.locator('[data-client="billing"]').inner_text()
        assert "next probe" in billing
        assert "refused (breaker)" in billing
        page.wait_for_timeout(300)  # let the page settle for the picture
        screenshot = Path(os.environ.get("DASHBOARD_SCREENSHOT") or tmp_path / "dashboard.png")
        page.screenshot(path=str(screenshot), full_page=True)
        # An operator's order from the page: the breaker closes, on the page too.
        page.click('[data-client="billing"] [data-action="close"]')
        page.wait_for_selector('[data-client="billing"] [data-breaker="closed"]', timeout=2000)
        with httpx.Client(base_url=service) as http:
            upstream.script("/billing/invoices", 200)
            assert http.get("/billing/invoices").json() == 200
        browser.close()
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert problems == []
