"""KILN_* variables: every default without them, and a bad value named with what it must be."""

from __future__ import annotations

from pathlib import Path

import pytest

import kiln.config
from kiln.config import Settings
from kiln.errors import InvalidInput


def test_no_variables_mean_every_default(tmp_path: Path) -> None:
    settings = Settings.from_env({"KILN_HOME": str(tmp_path)})
    assert settings == Settings(home=tmp_path)


def test_variables_are_read_and_an_empty_one_is_its_default(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "KILN_HOME": str(tmp_path),
            "KILN_API_TCP": "yes",
            "KILN_API_PORT": "9000",
            "KILN_HTTP_PORT": "",
            "KILN_RESYNC_SECONDS": "0.5",
            "KILN_BRIDGE_PATH": "Published",
            "KILN_API_URL": "https://kiln.example:7443/",
            "KILN_CA": "~/ca.pem",
            "DOCKER_HOST": "unix:///run/other.sock",
            "KILN_UNRELATED": "ignored",
        }
    )
    assert settings.api_tcp and settings.api_port == 9000 and settings.http_port == 8080
    assert settings.resync_seconds == 0.5 and settings.bridge_path == "published"
    assert settings.client_api_url == "https://kiln.example:7443"
    assert settings.client_ca == Path("~/ca.pem").expanduser()
    assert settings.docker_host == "unix:///run/other.sock"


def test_the_environment_a_settings_object_exports_reads_back_the_same(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"KILN_HOME": str(tmp_path), "KILN_API_SOCKET": str(tmp_path / "s"), "KILN_HTTP_PORT": "81"}
    )
    assert Settings.from_env(settings.environment()) == settings


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        (
            "KILN_API_PORT",
            "seventy",
            "KILN_API_PORT must be a TCP port number (0-65535), got 'seventy'",
        ),
        ("KILN_HTTP_PORT", "70000", "KILN_HTTP_PORT must be a TCP port number"),
        ("KILN_API_TCP", "maybe", "KILN_API_TCP must be 1 or 0, got 'maybe'"),
        (
            "KILN_WATCHDOG_SECONDS",
            "1",
            "KILN_WATCHDOG_SECONDS must be a number of seconds, at least 3",
        ),
        ("KILN_RESYNC_SECONDS", "nan", "KILN_RESYNC_SECONDS must be a number of seconds above 0"),
        ("KILN_BRIDGE_PATH", "tunnel", "KILN_BRIDGE_PATH must be one of auto, direct, published"),
        (
            "KILN_API_URL",
            "http://127.0.0.1:7070/v1",
            "KILN_API_URL must be like http://127.0.0.1:7070",
        ),
    ],
)
def test_a_bad_value_is_named_with_what_it_must_be(
    tmp_path: Path, name: str, value: str, said: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        Settings.from_env({"KILN_HOME": str(tmp_path), name: value})
    assert said in refused.value.message


def test_every_bad_value_is_named_at_once(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as refused:
        Settings.from_env({"KILN_API_PORT": "x", "KILN_HTTP_PORT": "y"})
    assert "KILN_API_PORT" in refused.value.message and "KILN_HTTP_PORT" in refused.value.message


def test_the_table_in_the_docstring_lists_every_variable() -> None:
    doc = kiln.config.__doc__ or ""
    for info in kiln.config._Environment.model_fields.values():
        assert f"``{info.alias}``" in doc, info.alias
