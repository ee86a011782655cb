"""
`HttpClientsSettings` and `ClientSettings` from the environment: no secret leaks from a
validation error, a log line or a repr, and `verify` reads as a bool or an existing path.
"""

from __future__ import annotations

import logging
import os
import traceback
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from fastapi_retry_http import ClientSettings, HttpClientsSettings, clients_lifespan
from fastapi_retry_http._config.app import _ValueHidingSource
from fastapi_retry_http.exceptions import ConfigurationError

SECRET = "sk-s3cret"
#: Every way a client field can carry a secret, and a missing base_url next to it: the outer
#: model reports that error, with everything given for the client as its input.
SECRET_ENV = {
    "HTTP_CLIENTS__BILLING__HEADERS": f'{{"Authorization": "Bearer {SECRET}"}}',
    "HTTP_CLIENTS__BILLING__PROXY": f"http://user:{SECRET}@proxy.internal:3128",
}
SECRET_CONFIG: dict[str, Any] = {
    "headers": {"Authorization": f"Bearer {SECRET}"},
    "proxy": f"http://user:{SECRET}@proxy.internal:3128",
}


class UserSettings(HttpClientsSettings):
    """The documented pattern: the ready model, with fields of the user's own."""

    service_name: str = "billing-gateway"


SETTINGS_CLASSES = [HttpClientsSettings, UserSettings]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No HTTP_CLIENTS* variable from the machine, and no .env file of the checkout."""
    for name in list(os.environ):
        if name.upper().startswith("HTTP_CLIENTS"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def assert_hidden(text: str) -> None:
    assert SECRET not in text
    assert "Bearer" not in text


def everything_shown(error: BaseException, caplog: pytest.LogCaptureFixture) -> str:
    """str, repr, the traceback with its chain, and the log line of `logger.exception`."""
    logging.getLogger("tests.app").exception("settings failed")
    logged = "\n".join(caplog.messages) + caplog.text
    chain = "".join(traceback.format_exception(error))
    return "\n".join([str(error), repr(error), chain, logged])


class TestNoSecretInErrors:
    @pytest.mark.parametrize("settings_class", SETTINGS_CLASSES)
    def test_from_the_environment(
        self,
        settings_class: type[HttpClientsSettings],
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        for name, value in SECRET_ENV.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(ValidationError) as caught:
            settings_class()
        assert "http_clients.billing.base_url" in str(caught.value)
        assert_hidden(everything_shown(caught.value, caplog))

    @pytest.mark.parametrize("settings_class", SETTINGS_CLASSES)
    def test_from_a_dotenv_file(
        self, settings_class: type[HttpClientsSettings], tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        dotenv = tmp_path / "prod.env"
        dotenv.write_text("".join(f"{name}='{value}'\n" for name, value in SECRET_ENV.items()))
        with pytest.raises(ValidationError) as caught:
            settings_class(_env_file=dotenv)  # type: ignore[call-arg]
        assert "http_clients.billing.base_url" in str(caught.value)
        assert_hidden(everything_shown(caught.value, caplog))

    @pytest.mark.parametrize("settings_class", SETTINGS_CLASSES)
    def test_from_keyword_arguments(
        self, settings_class: type[HttpClientsSettings], caplog: pytest.LogCaptureFixture
    ) -> None:
        with pytest.raises(ValidationError) as caught:
            settings_class(http_clients={"billing": SECRET_CONFIG})  # type: ignore[dict-item]
        assert "http_clients.billing.base_url" in str(caught.value)
        assert_hidden(everything_shown(caught.value, caplog))

    @pytest.mark.parametrize(
        ("name", "value", "field"),
        [
            ("BASE_URL", f"https://user:{SECRET}@billing.internal/", "base_url"),
            ("BASE_URL", f"https://billing.internal/?key={SECRET}", "base_url"),
            ("BASE_URL", f"billing.internal/{SECRET}", "base_url"),
            ("VERIFY", f"/etc/{SECRET}/ca.pem", "verify"),
            ("PROXY", f"socks9://user:{SECRET}@proxy.internal", "proxy"),
            ("HEADERS", f'{{"X-Api-Key": "{SECRET}\\r\\nX: 1"}}', "headers"),
            ("HEADERS", f'{{"X-Api-Key": ["{SECRET}"]}}', "headers.X-Api-Key"),
            ("TIMEOUT", SECRET, "timeout"),
        ],
    )
    @pytest.mark.parametrize("settings_class", SETTINGS_CLASSES)
    def test_a_bad_value_is_named_not_shown(
        self,
        settings_class: type[HttpClientsSettings],
        name: str,
        value: str,
        field: str,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__BASE_URL", "https://billing.internal/")
        monkeypatch.setenv(f"HTTP_CLIENTS__BILLING__{name}", value)
        with pytest.raises(ValidationError) as caught:
            settings_class()
        assert f"http_clients.billing.{field}" in str(caught.value)
        assert SECRET not in everything_shown(caught.value, caplog)

    def test_a_valid_configuration_keeps_its_secrets_out_of_repr(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name, value in SECRET_ENV.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__BASE_URL", "https://billing.internal/")
        settings = UserSettings()
        assert settings.http_clients["billing"].headers == {"Authorization": f"Bearer {SECRET}"}
        assert_hidden(repr(settings))
        assert_hidden(str(settings))

    def test_a_plain_base_settings_without_hidden_inputs_would_echo_them(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # Why the ready model exists: hide_input_in_errors on ClientSettings cannot help,
        # since the missing base_url is reported by the outer model.
        class Plain(BaseSettings):
            model_config = SettingsConfigDict(env_nested_delimiter="__")
            http_clients: dict[str, ClientSettings] = {}

        monkeypatch.setenv("HTTP_CLIENTS__BILLING__HEADERS", SECRET_ENV["HTTP_CLIENTS__BILLING__HEADERS"])
        with pytest.raises(ValidationError) as caught:
            Plain()
        assert SECRET in str(caught.value)


class TestMalformedJson:
    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("HTTP_CLIENTS__BILLING__HEADERS", f'{{"Authorization": "Bearer {SECRET}'),
            ("HTTP_CLIENTS__BILLING__HEADERS", f'{{"Authorization": "Bearer {SECRET}",}}'),
            ("HTTP_CLIENTS", f'{{"billing": {{"headers": {{"Authorization": "Bearer {SECRET}"'),
        ],
    )
    @pytest.mark.parametrize("settings_class", SETTINGS_CLASSES)
    def test_in_the_environment_the_variable_is_named_and_the_value_not_shown(
        self,
        settings_class: type[HttpClientsSettings],
        name: str,
        value: str,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        monkeypatch.setenv(name, value)
        with pytest.raises(SettingsError) as caught:
            settings_class()
        assert str(caught.value).startswith(f"{name} from EnvSettingsSource is not valid JSON (")
        assert_hidden(everything_shown(caught.value, caplog))
        # The JSON parser's error holds the whole value (`doc`): it is not chained, not even as
        # the context, so no error tracker or traceback-with-locals gets to it.
        assert caught.value.__cause__ is None
        assert caught.value.__context__ is None

    def test_in_a_dotenv_file_the_variable_is_named_and_the_value_not_shown(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        dotenv = tmp_path / "prod.env"
        dotenv.write_text(f'HTTP_CLIENTS__BILLING__HEADERS=\'{{"Authorization": "Bearer {SECRET}\'\n')
        with pytest.raises(SettingsError) as caught:
            UserSettings(_env_file=dotenv)  # type: ignore[call-arg]
        message = str(caught.value)
        assert message.startswith("HTTP_CLIENTS__BILLING__HEADERS from DotEnvSettingsSource is not valid JSON (")
        assert_hidden(everything_shown(caught.value, caplog))
        assert caught.value.__cause__ is None
        assert caught.value.__context__ is None

    def test_in_a_secrets_directory_the_field_is_named_and_the_value_not_shown(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        secrets = tmp_path / "secrets"
        secrets.mkdir()
        (secrets / "http_clients").write_text(f'{{"billing": {{"headers": {{"A": "Bearer {SECRET}"')
        with pytest.raises(SettingsError) as caught:
            UserSettings(_secrets_dir=secrets)  # type: ignore[call-arg]
        assert "'http_clients'" in str(caught.value)
        assert_hidden(everything_shown(caught.value, caplog))
        assert caught.value.__context__ is None

    def test_any_other_parse_failure_names_the_field_and_drops_the_chain(self) -> None:
        class Failing(PydanticBaseSettingsSource):
            def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
                return None, field_name, False

            def __call__(self) -> dict[str, Any]:
                try:
                    raise ValueError(f"cannot decode {SECRET}")
                except ValueError as error:
                    raise SettingsError('error parsing value for field "http_clients" from source "Failing"') from error

        source = _ValueHidingSource(Failing(HttpClientsSettings))
        assert source.get_field_value(HttpClientsSettings.model_fields["http_clients"], "http_clients")[1] == (
            "http_clients"
        )
        with pytest.raises(SettingsError) as caught:
            source()
        assert (
            str(caught.value) == "the value for field 'http_clients' from Failing could not be parsed; value not shown"
        )
        assert caught.value.__context__ is None

    def test_a_case_sensitive_subclass_keeps_the_variable_name_as_written(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        class CaseSensitive(HttpClientsSettings):
            model_config = SettingsConfigDict(case_sensitive=True)

        monkeypatch.setenv("http_clients__billing__headers", "{")
        with pytest.raises(SettingsError, match=r"^http_clients__billing__headers from EnvSettingsSource"):
            CaseSensitive()


class TestReadyModel:
    def test_configures_clients_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__BASE_URL", "https://billing.internal/api/")
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__RETRY__ATTEMPTS", "5")
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__HEADERS", '{"X-Api-Key": "k"}')
        monkeypatch.setenv("SERVICE_NAME", "gateway")
        settings = UserSettings()
        assert settings.service_name == "gateway"
        billing = settings.http_clients["billing"]
        assert (billing.base_url, billing.retry.attempts, billing.headers) == (
            "https://billing.internal/api/",
            5,
            {"X-Api-Key": "k"},
        )
        clients_lifespan(settings.http_clients)  # accepted as is

    def test_no_clients_configured_is_an_empty_mapping(self) -> None:
        assert HttpClientsSettings().http_clients == {}

    def test_a_subclass_keeps_the_settings_that_hide_secrets(self) -> None:
        config = UserSettings.model_config
        assert (config.get("env_nested_delimiter"), config.get("hide_input_in_errors")) == ("__", True)


BOOL_WORDS: list[tuple[str, bool]] = [
    *((word, True) for word in ("true", "TRUE", "True", " 1", "yes", "YES", "on", "On", "t", "y")),
    *((word, False) for word in ("false", "FALSE", "False", "0 ", "no", "NO", "off", "Off", "f", "n")),
]


class TestVerify:
    @pytest.mark.parametrize(("word", "expected"), BOOL_WORDS)
    def test_bool_words_from_the_environment_are_bools(
        self, word: str, expected: bool, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("HTTP_CLIENTS__UP__BASE_URL", "https://up.internal/")
        monkeypatch.setenv("HTTP_CLIENTS__UP__VERIFY", word)
        assert HttpClientsSettings().http_clients["up"].verify is expected

    @pytest.mark.parametrize(("word", "expected"), BOOL_WORDS[:3] + BOOL_WORDS[10:13])
    def test_bool_words_in_a_mapping_are_bools(self, word: str, expected: bool) -> None:
        assert ClientSettings(base_url="https://up.internal", verify=word).verify is expected

    @pytest.mark.parametrize("value", [True, False])
    def test_bools_stay_bools(self, value: bool) -> None:
        assert ClientSettings(base_url="https://up.internal", verify=value).verify is value

    @pytest.mark.parametrize("kind", ["file", "directory"])
    def test_an_existing_ca_bundle_path_stays_a_path(
        self, kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        bundle = tmp_path / "ca"
        bundle.mkdir() if kind == "directory" else bundle.write_text("")
        monkeypatch.setenv("HTTP_CLIENTS__UP__BASE_URL", "https://up.internal/")
        monkeypatch.setenv("HTTP_CLIENTS__UP__VERIFY", str(bundle))
        assert HttpClientsSettings().http_clients["up"].verify == str(bundle)

    def test_a_missing_ca_bundle_is_a_validation_error_naming_the_field(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        missing = str(tmp_path / "s3cret-place" / "ca.pem")
        monkeypatch.setenv("HTTP_CLIENTS__UP__BASE_URL", "https://up.internal/")
        monkeypatch.setenv("HTTP_CLIENTS__UP__VERIFY", missing)
        with pytest.raises(ValidationError) as caught:
            HttpClientsSettings()
        message = str(caught.value)
        assert "http_clients.up.verify" in message
        assert "CA bundle not found" in message
        assert "s3cret" not in message

    def test_a_missing_ca_bundle_fails_clients_lifespan_naming_client_and_field(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigurationError) as caught:
            clients_lifespan({"up": {"base_url": "https://up.internal", "verify": str(tmp_path / "s3cret.pem")}})
        message = str(caught.value)
        assert "'up'" in message
        assert "verify: Value error, CA bundle not found" in message
        assert "s3cret" not in message

    def test_what_pydantic_reads_as_a_bool_is_a_bool_here_too(self) -> None:
        # The words are pydantic's own: the two must not drift apart.
        from pydantic import TypeAdapter

        adapter = TypeAdapter(bool)
        for word, expected in BOOL_WORDS:
            assert adapter.validate_python(word.strip()) is expected
