"""The examples are part of the docs: they run here, and what they print is checked."""

import httpx
import pytest
from fastapi.testclient import TestClient

from examples import demo
from examples.app import Settings, create_app
from fastapi_retry_http import ClientSettings
from fastapi_retry_http.testing import override_transport

pytestmark = pytest.mark.usefixtures("backend")


@pytest.mark.anyio
async def test_demo_shows_retries_retry_after_a_post_not_resent_and_closed_clients(waits: list[float]) -> None:
    lines = await demo.main()
    text = "\n".join(lines)
    assert "GET /orders/1  (" in text
    assert "failed (503) on attempt 1/3" in text
    assert "failed (429) on attempt 1/3; retrying in 1.000s" in text
    assert "    3 x GET /billing/invoices/1" in text
    assert "    1 x POST /billing/charges" in text
    assert "    2 x POST /billing/refunds" in text
    assert "registry holds 0 clients; closed: billing=True, shipping=True" in text
    assert 1.0 in waits  # Retry-After honoured (and skipped: this test does not sleep)


def test_the_example_app_with_test_transports() -> None:
    seen: list[str] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url}")
        if request.url.path.endswith("/invoices/7") and len(seen) == 1:
            return httpx.Response(503)
        return httpx.Response(200, json={"ok": True})

    settings = Settings(
        http_clients={
            "billing": ClientSettings(base_url="https://billing.internal/api/"),
            "shipping": ClientSettings(base_url="https://shipping.internal/"),
        }
    )
    mock = httpx.MockTransport(upstream)
    with (
        override_transport("billing", mock),
        override_transport("shipping", mock),
        TestClient(create_app(settings)) as http,
    ):
        assert http.get("/orders/7").json() == {"invoice": {"ok": True}, "parcel": {"ok": True}}
    assert seen == [
        "GET https://billing.internal/api/invoices/7",
        "GET https://billing.internal/api/invoices/7",
        "GET https://shipping.internal/parcels/7",
    ]


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_CLIENTS__BILLING__BASE_URL", "https://billing.internal/api/")
    assert str(Settings().http_clients["billing"].base_url) == "https://billing.internal/api/"
