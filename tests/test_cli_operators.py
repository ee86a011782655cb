"""
The CLI as an operator meets it (issue 26): every setting in effect, the store line, one way to
give a .env file, `--settings` from the current directory with the installed script, probes
that say what they requested and fail on refused credentials, `--version`, a closed pipe.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fastapi_retry_http import ClientSettings, __version__
from fastapi_retry_http._cli import main
from fastapi_retry_http._cli.show import effective
from tests.servers import Upstream

SECRET = "s3cr3t-password"
SCRIPT = Path(sys.executable).parent / "fastapi-retry-http"
DOCS = Path(__file__).parent.parent / "docs"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in os.environ:
        if name.upper().startswith("HTTP_CLIENTS"):
            monkeypatch.delenv(name)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    for line in (out + err).splitlines():
        assert len(line) <= 80, line
    return code, out, " ".join(err.split())


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("HTTP_CLIENTS")}
    return {**env, **extra}


class TestEverySettingInEffect:
    def test_one_row_per_field_of_the_settings_model(self) -> None:
        rows = effective(ClientSettings(base_url="http://billing.internal/"))
        assert [key for key, _ in rows][:2] == ["base_url", "backend"]
        assert {key for key, _ in rows} == set(ClientSettings.model_fields)

    def test_the_breaker_row(self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__BASE_URL", "http://billing.internal/")
        code, out, _ = run(capsys, "check")
        assert code == 0
        assert "circuit_breaker     none (off)\n" in out
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__CIRCUIT_BREAKER", "{}")  # on, every default
        code, out, _ = run(capsys, "check")
        assert "circuit_breaker     failure_ratio=0.5, minimum_throughput=20" in out

    def test_the_store_line_masks_the_redis_url(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__BASE_URL", "http://billing.internal/")
        code, out, _ = run(capsys, "check")
        assert "store               memory (each process keeps its own budgets and breakers)\n" in out
        monkeypatch.setenv("HTTP_CLIENTS_REDIS_URL", f"rediss://ops:{SECRET}@redis.internal:6380/2?x={SECRET}")
        code, out, _ = run(capsys, "check")
        assert code == 0
        assert "store               redis rediss://***@redis.internal:6380/2 (shared by every\n" in out
        assert SECRET not in out
        assert "ops" not in out

    @pytest.mark.parametrize(
        ("url", "problem"),
        [
            (f"http://ops:{SECRET}@redis.internal:6379/0", "the scheme must be one of redis, rediss, unix"),
            (f"redis://ops:{SECRET}@redis.internal:63x9/0", "not a URL"),
            (f"redis://ops:{SECRET}@:6379/0", "the URL has no host"),
            (f"redis://ops:{SECRET}@redis.internal/zero", "the database (the URL's path) must be a number"),
            ("unix://", "a unix:// URL needs the socket's path"),
        ],
    )
    def test_a_malformed_redis_url_is_refused_unseen(
        self, url: str, problem: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("HTTP_CLIENTS_REDIS_URL", url)
        code, out, err = run(capsys, "check")
        assert (code, out) == (1, "")
        assert "error: http_clients_redis_url: Value error, not a usable Redis URL: " in err
        assert problem in err
        assert SECRET not in err

    def test_a_unix_socket_url_is_fine(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("HTTP_CLIENTS_REDIS_URL", "unix:///run/redis.sock")
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__BASE_URL", "http://billing.internal/")
        assert "store               redis unix:///run/redis.sock" in run(capsys, "check")[1]

    def test_an_apps_own_settings_class_is_checked_too(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        (tmp_path / "plainsettings.py").write_text(
            "from pydantic_settings import BaseSettings\n"
            "from fastapi_retry_http import ClientSettings\n"
            "class Settings(BaseSettings):\n"
            "    http_clients: dict[str, ClientSettings] = {}\n"
            "    http_clients_redis_url: str | None = None\n"
            "    http_clients_redis_prefix: str = 'svc'\n"
        )
        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
        monkeypatch.setenv("HTTP_CLIENTS_REDIS_URL", f"redis://:{SECRET}@")
        code, _, err = run(capsys, "check", "--settings", "plainsettings:Settings")
        assert code == 1
        assert "error: http_clients_redis_url: not a usable Redis URL: the URL has no host" in err
        assert SECRET not in err
        monkeypatch.setenv("HTTP_CLIENTS_REDIS_URL", "redis://redis.internal")
        monkeypatch.setenv("HTTP_CLIENTS", '{"billing": {"base_url": "http://billing.internal/"}}')
        code, out, _ = run(capsys, "check", "--settings", "plainsettings:Settings")
        assert "redis redis://redis.internal (shared by every process using it, prefix svc)" in " ".join(out.split())
        monkeypatch.setattr("importlib.util.find_spec", lambda name: None)  # as if redis-py were missing
        code, _, err = run(capsys, "check", "--settings", "plainsettings:Settings")
        assert code == 1
        assert "pip install 'fastapi-retry-http[redis]'" in err


class TestOneWayToGiveADotenv:
    def test_env_file_for_check_and_probe(
        self, tmp_path: Path, upstream: Upstream, capsys: pytest.CaptureFixture[str]
    ) -> None:
        env = tmp_path / "prod.env"
        env.write_text(f"HTTP_CLIENTS__BILLING__BASE_URL={upstream.url}/api/\n")
        code, out, _ = run(capsys, "check", "--env-file", str(env))
        assert (code, f"base_url            {upstream.url}/api/\n" in out) == (0, True)
        assert run(capsys, "check", str(env))[0] == 0  # the first spelling still works
        code, out, _ = run(capsys, "probe", "billing", "--env-file", str(env))
        assert (code, upstream.hits["/api/"]) == (0, 1)
        assert run(capsys, "check", str(env), "--env-file", str(env))[0] == 2

    def test_the_app_and_check_read_the_same_dotenv(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        # As docs/configuration.md says: the settings class names its .env file, and both read it.
        (tmp_path / "envsettings.py").write_text(
            "from pydantic_settings import SettingsConfigDict\n"
            "from fastapi_retry_http import HttpClientsSettings\n"
            "class Settings(HttpClientsSettings):\n"
            "    model_config = SettingsConfigDict(env_file='.env')\n"
        )
        (tmp_path / ".env").write_text("HTTP_CLIENTS__BILLING__BASE_URL=http://from-dotenv.internal/\n")
        monkeypatch.chdir(tmp_path)
        monkeypatch.syspath_prepend(str(tmp_path))
        from envsettings import Settings  # type: ignore[import-not-found]

        assert Settings().http_clients["billing"].base_url == "http://from-dotenv.internal/"
        code, out, _ = run(capsys, "check", "--settings", "envsettings:Settings")
        assert (code, "base_url            http://from-dotenv.internal/\n" in out) == (0, True)


def test_settings_from_the_current_directory_with_the_installed_script(tmp_path: Path) -> None:
    (tmp_path / "mysettings.py").write_text(
        "from fastapi_retry_http import HttpClientsSettings\nclass Settings(HttpClientsSettings):\n    pass\n"
    )
    result = subprocess.run(
        [str(SCRIPT), "check", "--settings", "mysettings:Settings"],
        cwd=tmp_path,
        env=clean_env(HTTP_CLIENTS__BILLING__BASE_URL="http://billing.internal/"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "1 client configured, all valid." in result.stdout


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"fastapi-retry-http {__version__}\n"


def test_a_closed_pipe_is_no_traceback() -> None:
    # `fastapi-retry-http check | head -1`: the reader is gone before the CLI writes.
    env = clean_env(**{f"HTTP_CLIENTS__C{i}__BASE_URL": f"http://c{i}.internal/" for i in range(3)})
    with subprocess.Popen(
        [sys.executable, "-m", "fastapi_retry_http", "check"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        process.stdout.close()
        stderr = process.stderr.read().decode()
        assert process.wait(timeout=60) == 1
    assert stderr == ""


class TestProbe:
    def test_prints_exactly_what_it_requested(
        self, upstream: Upstream, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__BASE_URL", f"{upstream.url}/api/")
        upstream.script("/api/etc/passwd", 404)
        code, out, _ = run(capsys, "probe", "billing", "--path", "/etc/passwd", "--method", "GET")
        assert upstream.hits == {"/api/etc/passwd": 1}  # resolved under the base path
        assert f"request             GET {upstream.url}/api/etc/passwd\n" in out
        assert "warning             nothing at this path (404): check the base URL and --path\n" in out
        assert "result              ok\n" in out
        assert code == 0  # a warning, not a failure

    @pytest.mark.parametrize(("status", "why"), [(401, "did not accept the client's credentials"), (403, "access")])
    def test_refused_credentials_fail_saying_why(
        self,
        status: int,
        why: str,
        upstream: Upstream,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__BASE_URL", f"{upstream.url}/api/")
        upstream.script("/api/health", status)
        code, out, _ = run(capsys, "probe", "billing", "--path", "health")
        assert code == 1
        result = " ".join(out[out.index("result") :].split())
        assert result.startswith("result FAILED: the upstream")
        assert why in result

    def test_an_error_after_sending_names_the_url(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__BASE_URL", "http://127.0.0.1:9/api/")
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__RETRY__ATTEMPTS", "1")
        code, out, _ = run(capsys, "probe", "billing", "--path", "health")
        assert code == 1
        assert "request             HEAD http://127.0.0.1:9/api/health\n" in out

    def test_an_error_before_sending_says_so(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__BASE_URL", "http://127.0.0.1:9/")
        out = run(capsys, "probe", "billing", "--path", "//elsewhere")[1]
        assert "request             HEAD //elsewhere (refused before sending)\n" in out


def test_the_check_sample_in_configuration_md_is_true(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    page = (DOCS / "configuration.md").read_text()
    section = page[page.index("### `check`") : page.index("### `probe")]
    console = re.search(r"```console\n(.*?)```", section, re.DOTALL)
    sample = re.search(r"```text\n(.*?)```", section, re.DOTALL)
    assert console is not None
    assert sample is not None
    for line in console.group(1).splitlines():
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            monkeypatch.setenv(name, value.strip("'"))
    code, out, _ = run(capsys, "check")
    assert code == 0
    assert out == sample.group(1), f"docs/configuration.md's check sample is out of date; it prints:\n{out}"
