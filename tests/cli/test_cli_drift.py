"""`kiln drift` against a real local API over a FakeService."""

from __future__ import annotations

import json
from pathlib import Path

from kiln.controller.drift import DriftFinding
from kiln.model import AppKey

from .conftest import Kiln

WEB = AppKey("dev", "web")


def test_no_drift_says_so_and_exits_0(kiln: Kiln, spec_file: Path) -> None:
    assert kiln.run("deploy", "-f", str(spec_file)).exit_code == 0
    result = kiln.run("drift", "--check")
    assert result.exit_code == 0, result.output
    assert "no drift" in result.stdout


def test_findings_are_listed_and_check_exits_3(kiln: Kiln, spec_file: Path) -> None:
    assert kiln.run("deploy", "-f", str(spec_file)).exit_code == 0
    kiln.service.drift_findings.append(
        DriftFinding(
            key=WEB,
            kind="drifted",
            instance="r1-abcdef",
            release=1,
            container_id="c" * 64,
            details=("files changed outside the writable paths: C /www/index.html",),
            action="replace",
        )
    )
    table = kiln.run("drift", "web")
    assert table.exit_code == 0, table.output
    assert "r1-abcdef" in table.stdout and "C /www/index.html" in table.stdout
    assert kiln.run("drift", "--check").exit_code == 3
    data = json.loads(kiln.run("drift", "web", "--json").stdout)
    assert data["findings"][0]["kind"] == "drifted"
    assert data["findings"][0]["app"] == "web"


def test_drift_of_an_unknown_app_exits_4(kiln: Kiln) -> None:
    result = kiln.run("drift", "nope")
    assert result.exit_code == 4, result.output
