"""The environments section of the settings file: order and gates, refused with their keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln.config.file import FileSettings, load_file_settings
from kiln.errors import InvalidInput


def test_defaults_order_dev_staging_production_with_a_soak_before_production() -> None:
    environments = FileSettings().environments
    assert environments.order == ["dev", "staging", "production"]
    assert environments.gate("production").min_soak == 600
    assert environments.gate("production").approval == "none"
    assert environments.gate("staging").min_soak == 0
    assert environments.previous("production") == "staging"
    assert environments.previous("dev") is None


def test_order_and_gates_come_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text(
        "environments:\n  order: [dev, qa, prod]\n"
        "  gates: {prod: {min_soak: 1h30m, approval: required}, qa: {min_soak: 45s}}\n"
    )
    environments = load_file_settings(path).environments
    assert environments.order == ["dev", "qa", "prod"]
    assert environments.gate("prod").min_soak == 5400 and environments.gate("prod").approval == (
        "required"
    )
    assert environments.gate("qa").min_soak == 45


def test_a_gate_of_an_unknown_environment_or_a_bad_duration_is_named(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("environments:\n  gates: {prod: {min_soak: 10m}}\n")
    with pytest.raises(InvalidInput, match=r"gates\.prod: not in order"):
        load_file_settings(path)
    path.write_text("environments:\n  gates: {production: {min_soak: soon, approval: maybe}}\n")
    with pytest.raises(InvalidInput) as refused:
        load_file_settings(path)
    assert "environments.gates.production.min_soak" in refused.value.message
    assert "environments.gates.production.approval" in refused.value.message
