"""The settings file: optional, typed, and every mistake named by its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln.config import Settings
from kiln.config.file import FileSettings, load_file_settings
from kiln.errors import InvalidInput


def test_no_file_means_every_default(tmp_path: Path) -> None:
    settings = Settings.from_env({"KILN_HOME": str(tmp_path)})
    assert settings.file == FileSettings()
    assert settings.settings_path == tmp_path / "settings.yaml"


def test_an_empty_file_is_every_default(tmp_path: Path) -> None:
    (tmp_path / "settings.yaml").write_text("# nothing yet\n")
    assert Settings.from_env({"KILN_HOME": str(tmp_path)}).file == FileSettings()


def test_an_unknown_key_is_named(tmp_path: Path) -> None:
    (tmp_path / "settings.yaml").write_text("registri: {}\napi: {tsl: {}}\n")
    with pytest.raises(InvalidInput) as caught:
        Settings.from_env({"KILN_HOME": str(tmp_path)})
    assert "registri" in str(caught.value)
    assert "api.tsl" in str(caught.value)


@pytest.mark.parametrize("text", ["[1, 2]\n", "a: [\n", "\xff\xfe"])
def test_a_file_that_is_not_a_mapping_of_sections_is_refused(tmp_path: Path, text: str) -> None:
    (tmp_path / "settings.yaml").write_bytes(text.encode("latin-1"))
    with pytest.raises(InvalidInput, match="settings file"):
        Settings.from_env({"KILN_HOME": str(tmp_path)})


def test_kiln_settings_points_elsewhere_and_survives_a_service_unit(tmp_path: Path) -> None:
    elsewhere = tmp_path / "etc" / "kiln.yaml"
    elsewhere.parent.mkdir()
    elsewhere.write_text("logs: {}\n")
    settings = Settings.from_env({"KILN_HOME": str(tmp_path), "KILN_SETTINGS": str(elsewhere)})
    assert settings.settings_path == elsewhere
    assert Settings.from_env(settings.environment()).settings_path == elsewhere


def test_registry_section_names_another_registry_with_a_login(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text(
        "registry:\n  url: https://registry.example.com\n  username: ci\n"
        "  password_file: /run/secrets/registry\n  retain_releases: 3\n"
    )
    section = load_file_settings(path).registry
    assert section.url == "https://registry.example.com"
    assert section.retain_releases == 3


def test_registry_username_without_password_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("registry:\n  url: 10.0.0.5:5000\n  username: ci\n")
    with pytest.raises(InvalidInput, match="username and password_file go together"):
        load_file_settings(path)
