"""`kiln rollout status`, `promote`, `pause`, `resume`, `abort`, `retry` against a real local
API over a FakeService: output, --json, exit codes, and the watch until the rollout ends."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import pytest
from rich.console import Console

from kiln.cli.progress import follow_rollout
from kiln.client import KilnClient
from kiln.config import Settings
from kiln.controller.views import ReleaseTrafficView
from kiln.model import AppKey

from .conftest import Kiln

WEB = AppKey("dev", "web")

CANARY = """\
app: web
image: example/web:1
port: 8080
instances: 4
deploy:
  strategy: canary
  steps:
    - weight: 10
    - weight: 50
"""
TIMED_CANARY = CANARY.replace("weight: 10", "weight: 10\n      pause: 30").replace(
    "weight: 50", "weight: 50\n      pause: 30"
)


def rolling_out(kiln: Kiln, tmp_path: Path, spec: str = CANARY) -> Kiln:
    """Release 1 live; release 2's canary in progress with its instances running."""
    path = tmp_path / "kiln.yaml"
    path.write_text(spec)
    assert kiln.run("deploy", "-f", str(path)).exit_code == 0
    path.write_text(spec.replace("web:1", "web:2"))
    assert kiln.run("deploy", "-f", str(path), "--no-wait").exit_code == 0
    for _ in range(2):
        assert kiln.run("rollout", "status", "web", "--json").exit_code == 0
    return kiln


@pytest.fixture
def canary(kiln: Kiln, tmp_path: Path) -> Kiln:
    return rolling_out(kiln, tmp_path)


def test_rollout_status_shows_step_groups_traffic_and_verdict(canary: Kiln) -> None:
    canary.service.traffic[WEB] = [
        ReleaseTrafficView(release=1, requests=900, errors=9, error_rate=0.01, p95_ms=41.0),
        ReleaseTrafficView(release=2, requests=100, errors=0, error_rate=0.0, p95_ms=38.4),
    ]
    result = canary.run("rollout", "status", "web")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for expected in (
        "dev/web",
        "release 2 ← from 1",
        "canary",
        "in_progress",
        "canary step 1/2: 10% to release 2",
        "[10%] → 50% → 100%",
        "ROLE",
        "SHARE",
        "P95",
        "stable",
        "90%",
        "1.00%",
        "38 ms",
    ):
        assert expected in out, expected


def test_rollout_status_json_is_the_view(canary: Kiln) -> None:
    result = canary.run("rollout", "status", "dev/web", "--json")
    assert result.exit_code == 0
    view = json.loads(result.stdout)
    assert (view["app"], view["active"], view["steps"]) == ("web", True, [10, 50])
    assert view["rollout"]["strategy"] == "canary"
    assert {g["role"] for g in view["groups"]} == {"stable", "canary"}


def test_promote_says_where_the_canary_goes_next(canary: Kiln) -> None:
    result = canary.run("promote", "web")
    assert result.exit_code == 0, result.output
    assert "promoting release 2 to its next step (50%)" in result.stdout
    assert "kiln rollout status dev/web -f" in result.stdout
    assert "step 2/2" in canary.run("rollout", "status", "web").stdout
    full = canary.run("promote", "web", "--full", "--json")
    assert full.exit_code == 0
    assert json.loads(full.stdout)["rollout"]["promote_requested"] is True
    done = canary.run("rollout", "status", "web")
    assert "succeeded" in done.stdout
    assert "warm" in done.stdout and "release 1 until" in done.stdout


def test_pause_and_resume(canary: Kiln) -> None:
    paused = canary.run("pause", "web")
    assert paused.exit_code == 0, paused.output
    assert "paused at [10%] → 50% → 100%" in paused.stdout
    assert "kiln resume dev/web" in paused.stdout
    shown = canary.run("rollout", "status", "web").stdout
    assert "paused by" in shown
    resumed = canary.run("resume", "web", "--json")
    assert resumed.exit_code == 0
    assert json.loads(resumed.stdout)["rollout"]["paused"] is False


def test_abort_then_retry(canary: Kiln) -> None:
    aborted = canary.run("abort", "web")
    assert aborted.exit_code == 0, aborted.output
    assert "rollout to release 2 aborted" in aborted.stdout
    assert "traffic back to release 1" in aborted.stdout
    shown = canary.run("rollout", "status", "web").stdout
    assert "aborted" in shown
    assert "held" in shown and "kept for inspection until the next deploy" in shown
    retried = canary.run("retry", "web")
    assert retried.exit_code == 0, retried.output
    assert "retrying the canary rollout to release 2 from its first step" in retried.stdout
    view = json.loads(canary.run("rollout", "status", "web", "--json").stdout)
    assert (view["active"], view["rollout"]["kind"], view["held_release"]) == (True, "retry", None)


def test_status_of_the_app_shows_the_canary_step(canary: Kiln) -> None:
    result = canary.run("status", "web")
    assert result.exit_code == 0
    step_lines = [line for line in result.stdout.splitlines() if line.startswith("step")]
    assert step_lines and "canary step 1/2: 10% to release 2" in step_lines[0]


def test_steering_a_rolling_rollout_exits_7_and_says_why(kiln: Kiln, spec_file: Path) -> None:
    assert kiln.run("deploy", "-f", str(spec_file), "--no-wait").exit_code == 0
    for verb in ("promote", "pause", "resume"):
        result = kiln.run(verb, "web")
        assert result.exit_code == 7, (verb, result.output)
        assert "moves on by itself" in result.stderr
    busy = kiln.run("retry", "web")
    assert busy.exit_code == 7
    assert "kiln abort web" in busy.stderr


def test_abort_and_retry_with_nothing_to_do_exit_7(kiln: Kiln, spec_file: Path) -> None:
    assert kiln.run("deploy", "-f", str(spec_file)).exit_code == 0
    aborted = kiln.run("abort", "web")
    assert aborted.exit_code == 7
    assert "no rollout in progress" in aborted.stderr
    retried = kiln.run("retry", "web", "--json")
    assert retried.exit_code == 7
    assert retried.stdout == ""
    assert "nothing to retry" in retried.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["rollout", "status", "ghost"],
        ["rollout", "status", "ghost", "--watch"],
        ["promote", "ghost"],
        ["pause", "ghost"],
        ["resume", "ghost"],
        ["abort", "ghost"],
        ["retry", "ghost"],
    ],
)
def test_unknown_app_exits_4(kiln: Kiln, command: list[str]) -> None:
    result = kiln.run(*command)
    assert result.exit_code == 4, result.output
    assert "no app dev/ghost" in result.stderr


def test_watch_follows_the_rollout_until_it_succeeds_and_exits_0(
    kiln: Kiln, tmp_path: Path
) -> None:
    three_steps = TIMED_CANARY.replace(
        "    - weight: 50", "    - weight: 30\n      pause: 30\n    - weight: 50"
    )
    rolling_out(kiln, tmp_path, three_steps)
    result = kiln.run("rollout", "status", "web", "--watch")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "10% → [30%] → 50% → 100%" in out  # the view as the watch began
    assert "moving to step 2/3 (30%)" in out  # events as they come
    assert "moving to step 3/3 (50%)" in out
    assert "now: canary step 3/3: 50% to release 2" in out  # the status line as it changes
    assert "rollout.succeeded" in out
    assert "✓ dev/web: rollout to release 2 succeeded" in out


def test_watch_exits_3_when_the_canary_fails_its_analysis(kiln: Kiln, tmp_path: Path) -> None:
    kiln.service.failing_images.add("example/web:2")
    spec = CANARY + "  analysis:\n    failure_limit: 2\n"
    rolling_out(kiln, tmp_path, spec)
    result = kiln.run("rollout", "status", "web", "-f")
    assert result.exit_code == 3, result.output
    assert "rollout to release 2 failed: analysis failed 2 window(s)" in result.stderr


def test_watch_of_a_finished_rollout_exits_at_once_with_its_outcome(canary: Kiln) -> None:
    assert canary.run("abort", "web").exit_code == 0
    aborted = canary.run("rollout", "status", "web", "-w")
    assert aborted.exit_code == 3
    assert "rollout to release 2 aborted" in aborted.stderr
    assert canary.run("retry", "web").exit_code == 0
    assert canary.run("promote", "web", "--full").exit_code == 0
    succeeded = canary.run("rollout", "status", "web", "--watch", "--json")
    assert succeeded.exit_code == 0
    lines = [json.loads(line) for line in succeeded.stdout.splitlines()]
    assert lines[-1]["rollout"]["state"] == "succeeded"


def test_watch_json_prints_one_view_per_change(kiln: Kiln, tmp_path: Path) -> None:
    rolling_out(kiln, tmp_path, TIMED_CANARY)
    result = kiln.run("rollout", "status", "web", "--watch", "--json")
    assert result.exit_code == 0, result.output
    views = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(views) >= 2
    assert views[0]["active"] is True
    assert (views[-1]["active"], views[-1]["rollout"]["state"]) == (False, "succeeded")
    assert all(a != b for a, b in itertools.pairwise(views))


def test_watch_with_no_rollout_says_so_and_exits_0(kiln: Kiln, spec_file: Path) -> None:
    assert kiln.run("deploy", "-f", str(spec_file), "--no-wait").exit_code == 0
    kiln.service.apps[WEB].rollouts.clear()
    result = kiln.run("rollout", "status", "web", "--watch")
    assert result.exit_code == 0, result.output
    assert "no rollout to watch" in result.stdout


def test_live_view_shows_groups_steps_and_events_until_the_rollout_ends(
    kiln: Kiln, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rolling_out(kiln, tmp_path, TIMED_CANARY)
    for name, value in kiln.env.items():
        monkeypatch.setenv(name, value)
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=160)
    with KilnClient.from_settings(Settings.from_env(), actor="t") as client:
        end = follow_rollout(client, WEB, console=console, live=True)
    assert end.state == "succeeded"
    text = screen.getvalue()
    for expected in ("dev/web", "canary", "stable", "ROLE", "SHARE", "rollout.step", "10%"):
        assert expected in text, expected


@pytest.mark.parametrize(
    ("command", "words"),
    [
        (["rollout", "--help"], ["canary", "blue-green", "kiln promote web", "Exit codes"]),
        (["rollout", "status", "--help"], ["--watch", "-f", "p95", "Examples"]),
        (["promote", "--help"], ["--full", "exit 7", "Example"]),
        (["pause", "--help"], ["kiln resume", "Example"]),
        (["resume", "--help"], ["Example"]),
        (["abort", "--help"], ["stable release", "kiln retry", "Example"]),
        (["retry", "--help"], ["first step", "Example"]),
    ],
)
def test_help_explains_each_command(kiln: Kiln, command: list[str], words: list[str]) -> None:
    result = kiln.run(*command)
    assert result.exit_code == 0
    for word in words:
        assert word in result.stdout, word
