"""The operator-facing docs say what is true (issue 26): /metrics, figures, extras, wording."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def python_block(page: str, containing: str) -> str:
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    found = [b for b in re.findall(r"```python\n(.*?)```", text, re.DOTALL) if containing in b]
    assert len(found) == 1, f"{page}: {len(found)} python blocks contain {containing!r}"
    return str(found[0])


def test_the_documented_metrics_route_answers_curl_without_a_redirect(tmp_path: Path) -> None:
    script = tmp_path / "metrics_app.py"
    script.write_text(
        python_block("observability.md", "/metrics") + "\nfrom fastapi.testclient import TestClient\n"
        "with TestClient(app) as http:\n"
        "    answer = http.get('/metrics', follow_redirects=False)\n"
        "print(answer.status_code, answer.headers['content-type'])\n"
        "print(answer.text)\n"
    )
    # In a process of its own: PrometheusMetrics() registers in the default registry once.
    result = subprocess.run(
        [sys.executable, "-W", "error", str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    status, _, body = result.stdout.partition("\n")
    assert status.startswith("200 text/plain; version=")
    assert "# TYPE fastapi_retry_http_attempts_total counter" in body


def test_the_readmes_speed_is_the_performance_pages() -> None:
    claim = re.search(r"own: ([\d.]+)\u00d7, ([\d.]+)\u00d7 and ([\d.]+)\u00d7 of raw aiohttp's", README)
    assert claim is not None
    row = next(line for line in (ROOT / "docs/performance.md").read_text().splitlines() if "`Client` (default)" in line)
    assert re.findall(r"\(([\d.]+)\u00d7\)", row) == list(claim.groups())


def test_the_readme_names_every_extra() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    install = README[README.index("## Install") : README.index("## Try it")]
    for extra in extras:
        assert f"| `{extra}` |" in install, extra


def test_no_page_speaks_of_what_an_issue_allows() -> None:
    for page in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        assert "the issue allows" not in page.read_text(encoding="utf-8"), page.name


def test_the_operating_page_shows_the_dashboard() -> None:
    page = (ROOT / "docs/operating.md").read_text(encoding="utf-8")
    picture = re.search(r"!\[[^\]]+\]\((dashboard\.png)\)", page)
    assert picture is not None
    assert (ROOT / "docs" / picture.group(1)).read_bytes()[:4] == b"\x89PNG"
    assert "operating.md" in (ROOT / "mkdocs.yml").read_text()


def test_configuration_md_tells_validation_errors_from_configuration_errors(monkeypatch: Any) -> None:
    import pytest
    from pydantic import ValidationError

    from fastapi_retry_http import HttpClientsSettings, clients_lifespan
    from fastapi_retry_http.exceptions import ConfigurationError

    page = " ".join((ROOT / "docs/configuration.md").read_text(encoding="utf-8").split())  # the samples are indented
    monkeypatch.setenv("HTTP_CLIENTS__BILLING__BASE_URL", "https://billing.internal/api/")
    monkeypatch.setenv("HTTP_CLIENTS__BILLING__RETRY__ATEMPTS", "5")
    with pytest.raises(ValidationError) as from_environment:
        HttpClientsSettings()
    assert "http_clients.billing.retry.atempts Unexpected keyword argument" in page
    assert "http_clients.billing.retry.atempts Unexpected keyword argument" in " ".join(
        str(from_environment.value).split()
    )
    with pytest.raises(ConfigurationError) as from_mapping:
        clients_lifespan({"billing": {"base_url": "https://billing.internal/api/", "retry": {"atempts": 5}}})
    assert f"ConfigurationError: {from_mapping.value}" in page


def test_the_alert_rules_name_metrics_that_exist() -> None:
    from prometheus_client import CollectorRegistry

    from fastapi_retry_http.prometheus import PrometheusMetrics

    registry = CollectorRegistry()
    PrometheusMetrics(registry)
    # Labelled metrics have no samples before their first use: the families' names, as scraped.
    exported = {family.name + ("_total" if family.type == "counter" else "") for family in registry.collect()}
    page = (ROOT / "docs/operating.md").read_text(encoding="utf-8")
    rules = page[page.index("```yaml") : page.index("```", page.index("```yaml") + 3)]
    named = set(re.findall(r"fastapi_retry_http_\w+", rules))
    assert named
    assert named <= exported, named - exported
