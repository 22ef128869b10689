"""`kiln deploy` and `kiln rollback` against a real local API over a FakeService."""

from __future__ import annotations

import json
from pathlib import Path

from kiln.model import AppKey

from .conftest import Kiln

WEB = AppKey("dev", "web")


def test_deploy_with_an_invalid_spec_prints_every_problem_and_exits_2(
    kiln: Kiln, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("app: Web\ninstances: -1\nimagee: typo\n")
    result = kiln.run("deploy", "-f", str(bad))
    assert result.exit_code == 2, result.output
    assert f"{bad} has 4 problems" in result.stderr
    for field in ("app:", "image:", "instances:", "imagee:"):
        assert any(line.strip().startswith(f"- {field}") for line in result.stderr.splitlines())
    assert "Traceback" not in result.output
    assert kiln.service.apps == {}


def test_deploy_of_a_missing_file_exits_2(kiln: Kiln, tmp_path: Path) -> None:
    result = kiln.run("deploy", "-f", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2
    assert "nope.yaml not found" in result.stderr


def test_deploy_waits_for_the_rollout_and_exits_0_when_live(kiln: Kiln, spec_file: Path) -> None:
    result = kiln.run("deploy", "-f", str(spec_file), "-m", "first")
    assert result.exit_code == 0, result.output
    assert "release 1 is live" in result.stdout
    assert "rollout.started" in result.stdout  # plain event lines: the runner is not a TTY
    assert "rollout.succeeded" in result.stdout
    assert kiln.service.apps[WEB].stable == 1


def test_deploy_exits_3_with_the_reason_when_the_rollout_fails(kiln: Kiln, spec_file: Path) -> None:
    assert kiln.run("deploy", "-f", str(spec_file)).exit_code == 0
    kiln.service.failing_images.add("example/web:2")
    spec_file.write_text(spec_file.read_text().replace("web:1", "web:2"))
    result = kiln.run("deploy", "-f", str(spec_file))
    assert result.exit_code == 3, result.output
    assert "release 2 failed" in result.stderr
    assert "never became ready" in result.stderr
    assert kiln.service.apps[WEB].target == 1


def test_deploying_the_same_spec_twice_says_unchanged(kiln: Kiln, spec_file: Path) -> None:
    kiln.run("deploy", "-f", str(spec_file), "--no-wait")
    result = kiln.run("deploy", "-f", str(spec_file))
    assert result.exit_code == 0
    assert "unchanged" in result.stdout


def test_deploy_no_wait_returns_once_the_release_exists(kiln: Kiln, spec_file: Path) -> None:
    result = kiln.run("deploy", "-f", str(spec_file), "--no-wait")
    assert result.exit_code == 0
    assert "release 1 created" in result.stdout
    assert kiln.service.calls[0][1].count("@") == 1  # the actor is user@host


def test_deploy_json_prints_only_json_with_the_outcome(kiln: Kiln, spec_file: Path) -> None:
    result = kiln.run("deploy", "-f", str(spec_file), "--json")
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert document["outcome"] == "succeeded"
    assert document["result"]["release"]["number"] == 1


def test_rollback_shows_the_same_progress_and_exits_0(kiln: Kiln, spec_file: Path) -> None:
    kiln.run("deploy", "-f", str(spec_file))
    spec_file.write_text(spec_file.read_text().replace("web:1", "web:2"))
    kiln.run("deploy", "-f", str(spec_file))
    result = kiln.run("rollback", "web", "-m", "2 is slow")
    assert result.exit_code == 0, result.output
    assert "rollback release 3" in result.stdout
    assert "release 3 is live" in result.stdout
    releases = json.loads(kiln.run("releases", "web", "--json").stdout)
    assert releases[-1]["origin"] == "rollback"
    assert releases[-1]["rollback_of"] == 1


def test_rollback_with_nothing_before_exits_7(kiln: Kiln, spec_file: Path) -> None:
    kiln.run("deploy", "-f", str(spec_file))
    result = kiln.run("rollback", "web")
    assert result.exit_code == 7
    assert "no release before 1" in result.stderr
