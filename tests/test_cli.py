"""The operator CLI against loopback servers: `check` and `probe`, in-process and as `python -m`."""

from __future__ import annotations

import os
import runpy
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import trustme
from pydantic_settings import BaseSettings, SettingsConfigDict

from fastapi_retry_http import ClientSettings
from fastapi_retry_http._cli import main
from tests.servers import RawServer, Upstream, ok

SECRET = "s3cr3t-token-value"


class OtherSettings(BaseSettings):
    """An app's own settings class, with the clients under another name."""

    model_config = SettingsConfigDict(env_prefix="APP_", env_nested_delimiter="__")

    upstreams: dict[str, ClientSettings] = {}


class NoClients(BaseSettings):
    debug: bool = False


class Twice(BaseSettings):
    http_clients: dict[str, ClientSettings] = {
        "Billing": ClientSettings(base_url="http://a.internal/"),
        "billing": ClientSettings(base_url="http://b.internal/"),
    }


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in os.environ:
        if name.upper().startswith(("HTTP_CLIENTS__", "APP_")):
            monkeypatch.delenv(name)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    for line in (out + err).splitlines():
        assert len(line) <= 80, line
    return code, out, " ".join(err.split())  # errors wrap at 80 columns: compare them as one line


class TestCheck:
    def test_prints_each_client_with_secrets_masked(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__BASE_URL", "https://billing.internal/api/")
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__HEADERS", f'{{"Authorization": "Bearer {SECRET}"}}')
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__PROXY", f"http://user:{SECRET}@proxy.internal:3128")
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__RETRY__ATTEMPTS", "5")
        monkeypatch.setenv("HTTP_CLIENTS__SHIPPING__BASE_URL", "http://shipping.internal/")
        monkeypatch.setenv("HTTP_CLIENTS__SHIPPING__HTTP2", "true")
        monkeypatch.setenv("HTTP_CLIENTS__SHIPPING__RETRY_BUDGET", "null")
        monkeypatch.setenv("HTTP_CLIENTS__SHIPPING__MAX_RESPONSE_BYTES", "1000000")
        code, out, err = run(capsys, "check")
        assert (code, err) == (0, "")
        assert out.startswith("2 clients configured, all valid.")
        assert SECRET not in out
        assert "user" not in out
        assert "Authorization: ***" in out
        assert "http://***:***@proxy.internal:3128" in out
        assert "attempts=5" in out
        assert "aiohttp (default)" in out
        assert "httpx (http2 needs it)" in out
        assert "none (no cap)" in out
        assert "1,000,000" in out

    def test_reads_a_dotenv_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        env = tmp_path / ".env"
        env.write_text(
            "HTTP_CLIENTS__BILLING__BASE_URL=http://billing.internal/\nHTTP_CLIENTS__BILLING__BACKEND=httpx\n"
        )
        code, out, _ = run(capsys, "check", str(env))
        assert code == 0
        assert "billing\n" in out
        assert "backend             httpx\n" in out

    def test_a_missing_dotenv_file_is_an_error(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        code, _, err = run(capsys, "check", str(tmp_path / "missing.env"))
        assert code == 1
        assert "missing.env" in err

    def test_no_clients(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert run(capsys, "check")[:2] == (0, "No clients configured (set HTTP_CLIENTS__<NAME>__BASE_URL=...).\n")

    def test_an_invalid_field_names_client_and_field_never_the_value(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__BASE_URL", f"ftp://{SECRET}.internal/")
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__RETRY__ATEMPTS", "5")
        code, out, err = run(capsys, "check")
        assert (code, out) == (1, "")
        assert "error: Client 'billing' has invalid settings: base_url:" in err
        assert "retry.atempts" in err
        assert SECRET not in err

    def test_unparsable_json_is_named_without_the_value(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__HEADERS", f'{{"Authorization": "{SECRET}')
        code, _, err = run(capsys, "check")
        assert code == 1
        assert "HTTP_CLIENTS__BILLING__HEADERS" in err
        assert SECRET not in err

    def test_a_client_that_cannot_be_built_is_named(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
    ) -> None:
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__BASE_URL", "https://billing.internal/")
        not_a_bundle = tmp_path / "ca.pem"
        not_a_bundle.write_text("no certificate here")
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__VERIFY", str(not_a_bundle))
        code, _, err = run(capsys, "check")
        assert code == 1
        assert "Client 'billing' could not be built" in err

    def test_a_configuration_error_from_the_client_is_shown(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__BASE_URL", "https://billing.internal/")
        monkeypatch.setattr("importlib.util.find_spec", lambda name: None)  # as if h2 were missing
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__HTTP2", "true")
        code, _, err = run(capsys, "check")
        assert code == 1
        assert "error: Client 'billing': http2=True needs the 'h2' package" in err

    def test_the_apps_own_settings_class(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("APP_UPSTREAMS__BILLING__BASE_URL", "http://billing.internal/")
        code, out, _ = run(capsys, "check", "--settings", "tests.test_cli:OtherSettings")
        assert code == 0
        assert "http://billing.internal/" in out

    def test_errors_outside_the_clients_name_the_field(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("APP_UPSTREAMS", "[1]")
        code, _, err = run(capsys, "check", "--settings", "tests.test_cli:OtherSettings")
        assert code == 1
        assert "error: upstreams: Input should be a valid dictionary" in err

    @pytest.mark.parametrize(
        ("spec", "message"),
        [
            ("tests.test_cli", "expected MODULE:CLASS"),
            ("tests.no_such_module:X", "ModuleNotFoundError"),
            ("tests.test_cli:Missing", "AttributeError"),
            ("tests.test_cli:SECRET", "is not a pydantic-settings BaseSettings class"),
            ("tests.test_cli:NoClients", "NoClients has no mapping of ClientSettings"),
            ("tests.test_cli:Twice", "Client 'billing' is configured twice"),
        ],
    )
    def test_bad_settings_classes(self, spec: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
        code, _, err = run(capsys, "check", "--settings", spec)
        assert code == 1
        assert message in err

    def test_usage(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main([]) == 2
        assert main(["check", "--no-such-option"]) == 2
        assert main(["--help"]) == 0
        assert "check" in capsys.readouterr().out


@pytest.mark.usefixtures("backend")
class TestProbe:
    def test_reports_status_latency_and_retries(
        self, upstream: Upstream, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__BASE_URL", f"{upstream.url}/api/")
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__HEADERS", f'{{"Authorization": "{SECRET}"}}')
        upstream.script("/api/health", 503, 200)
        code, out, err = run(capsys, "probe", "Billing", "--path", "health", "--method", "get")
        assert (code, err) == (0, "")
        assert f"request             GET {upstream.url}/api/health\n" in out
        assert "status              200 OK\n" in out
        assert "tls                 none (http)\n" in out
        assert "attempts            2 of at most 3\n" in out
        assert "result              ok\n" in out
        assert " ms (all attempts)" in out
        assert SECRET not in out
        assert upstream.hits["/api/health"] == 2
        assert upstream.seen["/api/health"][0][0]["authorization"] == SECRET  # sent as configured

    def test_head_to_the_base_url_by_default(
        self, upstream: Upstream, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__BASE_URL", f"{upstream.url}/api/")
        monkeypatch.setenv("HTTP_CLIENTS__SHIPPING__BASE_URL", f"{upstream.url}/ship/")
        upstream.script("/ship/", 500)
        code, out, _ = run(capsys, "probe", "billing", "shipping")
        assert code == 1  # a 5xx is a failed probe
        assert f"HEAD {upstream.url}/api/\n" in out
        assert "status              500 Internal Server Error\n" in out
        assert "result              FAILED\n" in out
        assert upstream.hits == {"/api/": 1, "/ship/": 1}

    def test_a_refused_connection_reports_the_error_and_attempts(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        with RawServerPort() as port:
            monkeypatch.setenv("HTTP_CLIENTS__BILLING__BASE_URL", f"http://127.0.0.1:{port}/")
        code, out, _ = run(capsys, "probe", "billing")
        assert code == 1
        assert "error               ConnectError\n" in out
        assert "attempts            raised by attempt 3 of at most 3.\n" in out

    def test_an_error_without_retries(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__BASE_URL", "http://127.0.0.1:9/")
        code, out, _ = run(capsys, "probe", "billing", "--path", "//elsewhere")
        assert code == 1
        assert "error               UnsafePathError\n" in out
        assert "attempts            1 (not retried)\n" in out

    def test_an_unknown_name(self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__BASE_URL", "http://127.0.0.1:9/")
        code, out, err = run(capsys, "probe", "billng")
        assert (code, out) == (1, "")
        assert "No client named 'billng'; the configured clients are: 'billing'." in err

    @pytest.mark.anyio
    async def test_tls(
        self, backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        ca = trustme.CA()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        bundle = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(bundle))
        async with RawServer(lambda r, w, n: ok(r, w), ssl=context) as server:
            monkeypatch.setenv("HTTP_CLIENTS__BILLING__BASE_URL", server.url)
            monkeypatch.setenv("HTTP_CLIENTS__BILLING__VERIFY", str(bundle))
            # main() runs its own loop: give it a thread, this loop serves the TLS server.
            code = await _in_thread(main, ["probe", "billing", "--method", "GET"])  # RawServer answers with a body
        out = capsys.readouterr().out
        assert code == 0, out
        if backend == "httpx":
            assert "tls                 TLSv1.3, TLS_" in out
        else:
            assert "tls                 not reported by this backend\n" in out


async def _in_thread(func: object, argv: list[str]) -> int:
    import anyio.to_thread

    assert callable(func)
    result = await anyio.to_thread.run_sync(func, argv)
    assert isinstance(result, int)
    return result


class RawServerPort:
    """A port nothing listens on: bound, then closed."""

    def __enter__(self) -> int:
        import socket

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        port: int = self._sock.getsockname()[1]
        return port

    def __exit__(self, *exc: object) -> None:
        self._sock.close()


@pytest.fixture
def subprocess_env(upstream: Upstream) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("HTTP_CLIENTS__")}
    env["HTTP_CLIENTS__BILLING__BASE_URL"] = f"{upstream.url}/api/"
    return env


def test_python_dash_m(upstream: Upstream, subprocess_env: dict[str, str]) -> None:
    upstream.script("/api/", 503)
    probe = subprocess.run(
        [sys.executable, "-m", "fastapi_retry_http", "probe", "billing"],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    assert "attempts            2 of at most 3" in probe.stdout
    check = subprocess.run(
        [sys.executable, "-m", "fastapi_retry_http", "check"],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    assert all(len(line) <= 80 for line in check.stdout.splitlines())


def test_main_module_in_process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["fastapi-retry-http", "check"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module("fastapi_retry_http", run_name="__main__")
    assert exit_.value.code == 0
    assert "No clients configured" in capsys.readouterr().out
