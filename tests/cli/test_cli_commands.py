"""Read and manage commands, exit codes, and what happens when no server is running."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kiln.cli.main import app as kiln_app
from kiln.model import AppKey
from kiln.supervisor.pidfile import PidFile, holder

from .conftest import Kiln

WEB = AppKey("dev", "web")


@pytest.fixture
def deployed(kiln: Kiln, spec_file: Path) -> Kiln:
    assert kiln.run("deploy", "-f", str(spec_file)).exit_code == 0
    kiln.service.add_log(WEB, "r1-0", "hello from web")
    return kiln


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["status", "web"],
        ["status", "dev/web"],
        ["ps"],
        ["ps", "web"],
        ["releases", "web"],
        ["events"],
        ["events", "web", "--limit", "3"],
        ["version"],
    ],
)
def test_json_output_of_read_commands_parses(deployed: Kiln, command: list[str]) -> None:
    result = deployed.run(*command, "--json")
    assert result.exit_code == 0, result.output
    json.loads(result.stdout)


def test_schema_prints_json_schema(kiln: Kiln) -> None:
    result = kiln.run("schema")
    assert json.loads(result.stdout)["title"] == "kiln.yaml"


def test_tables_name_the_app_and_its_instances(deployed: Kiln) -> None:
    assert "web" in deployed.run("status").stdout
    details = deployed.run("status", "web").stdout
    assert "r1-0" in details and "r1-1" in details
    assert "r1-0" in deployed.run("ps").stdout
    releases = deployed.run("releases", "web").stdout
    assert "example/web:1" in releases


def test_unknown_app_exits_4(kiln: Kiln) -> None:
    for command in (
        ["status", "ghost"],
        ["releases", "ghost"],
        ["scale", "ghost", "2"],
        ["logs", "ghost"],
    ):
        result = kiln.run(*command)
        assert result.exit_code == 4, (command, result.output)
        assert "no app dev/ghost" in result.stderr


def test_env_option_and_env_prefix_pick_the_environment(kiln: Kiln) -> None:
    assert "no app staging/ghost" in kiln.run("status", "ghost", "-e", "staging").stderr
    assert "no app prod/ghost" in kiln.run("status", "prod/ghost").stderr
    conflicting = kiln.run("status", "prod/ghost", "--env", "dev")
    assert conflicting.exit_code == 2


def test_a_bad_app_name_is_bad_input(kiln: Kiln) -> None:
    result = kiln.run("status", "Not_An_App")
    assert result.exit_code == 2
    assert "not a valid app name" in result.stderr


def test_server_not_running_exits_5_with_the_kiln_up_hint(
    nothing_listening: dict[str, str],
) -> None:
    result = CliRunner().invoke(kiln_app, ["status"], env=nothing_listening)
    assert result.exit_code == 5
    assert "kiln is not running at http://127.0.0.1:" in result.stderr
    assert "kiln up" in result.stderr
    assert "Traceback" not in result.output


def test_wrong_token_exits_6(kiln: Kiln) -> None:
    result = CliRunner().invoke(kiln_app, ["status"], env={**kiln.env, "KILN_TOKEN": "wrong"})
    assert result.exit_code == 6
    assert "wrong API token" in result.stderr


def test_destroy_without_yes_in_a_non_tty_refuses_and_keeps_the_app(deployed: Kiln) -> None:
    result = deployed.run("destroy", "web")
    assert result.exit_code == 2
    assert "without --yes" in result.stderr
    assert WEB in deployed.service.apps


def test_destroy_with_yes_destroys(deployed: Kiln) -> None:
    result = deployed.run("destroy", "web", "--yes")
    assert result.exit_code == 0
    assert WEB not in deployed.service.apps


@pytest.fixture
def three_apps(kiln: Kiln, tmp_path: Path) -> Kiln:
    for name in ("web", "api", "worker"):
        path = tmp_path / f"{name}.yaml"
        path.write_text(f"app: {name}\nimage: example/{name}:1\nport: 8080\n")
        assert kiln.run("deploy", "-f", str(path)).exit_code == 0
    return kiln


def test_destroy_of_several_apps_destroys_each(three_apps: Kiln) -> None:
    result = three_apps.run("destroy", "web", "dev/api", "worker", "--yes")
    assert result.exit_code == 0, result.output
    assert three_apps.service.apps == {}
    for name in ("web", "api", "worker"):
        assert f"dev/{name}: destroyed" in result.stdout
    status = json.loads(three_apps.run("status", "--json").stdout)
    assert status["apps"] == []


def test_destroy_of_several_names_each_app_that_failed_and_does_the_others(
    three_apps: Kiln,
) -> None:
    result = three_apps.run("destroy", "web", "ghost", "worker", "--yes")
    assert result.exit_code == 4  # the failed app's: not found
    assert set(three_apps.service.apps) == {AppKey("dev", "api")}
    assert "dev/web: destroyed" in result.stdout and "dev/worker: destroyed" in result.stdout
    assert "dev/ghost" in result.stderr and "1 of 3 apps failed: dev/ghost" in result.stderr
    assert "dev/web" not in result.stderr


def test_destroy_with_a_bad_app_name_changes_nothing(three_apps: Kiln) -> None:
    result = three_apps.run("destroy", "web", "Not_A_Name", "--yes")
    assert result.exit_code == 2
    assert "Not_A_Name" in result.stderr
    assert len(three_apps.service.apps) == 3


def test_destroy_without_yes_names_every_app_and_keeps_them(three_apps: Kiln) -> None:
    result = three_apps.run("destroy", "web", "api")
    assert result.exit_code == 2
    assert "dev/web, dev/api" in result.stderr and "without --yes" in result.stderr
    assert len(three_apps.service.apps) == 3


def test_destroy_with_wait_asks_the_server_to_wait(deployed: Kiln) -> None:
    result = deployed.run("destroy", "web", "--yes", "--wait")
    assert result.exit_code == 0, result.output
    assert "every instance stopped and removed" in result.stdout
    assert ("destroy --wait", deployed.service.calls[-1][1]) == deployed.service.calls[-1]


def test_stop_of_several_apps_stops_each_and_names_the_one_that_failed(three_apps: Kiln) -> None:
    result = three_apps.run("stop", "web", "ghost", "api")
    assert result.exit_code == 4
    apps = three_apps.service.apps
    assert apps[AppKey("dev", "web")].stopped and apps[AppKey("dev", "api")].stopped
    assert not apps[AppKey("dev", "worker")].stopped
    assert "dev/ghost" in result.stderr


def test_scale_and_stop(deployed: Kiln) -> None:
    assert "scale 5" in deployed.run("scale", "web", "5").stdout
    assert deployed.service.apps[WEB].scale == 5
    assert deployed.run("stop", "web").exit_code == 0
    assert deployed.service.apps[WEB].stopped


def test_logs_print_each_line_with_its_instance(deployed: Kiln) -> None:
    result = deployed.run("logs", "web")
    assert result.exit_code == 0
    assert "r1-0 | hello from web" in result.stdout


def test_logs_of_an_unknown_instance_exit_4(deployed: Kiln) -> None:
    result = deployed.run("logs", "web", "--instance", "r9-9")
    assert result.exit_code == 4


def test_events_lists_recent_events_with_reasons(deployed: Kiln) -> None:
    result = deployed.run("events", "web")
    assert "rollout.succeeded" in result.stdout
    assert "release 1 is live" in result.stdout


def test_up_when_already_running_says_so(tmp_path: Path) -> None:
    # A live server holds its pid file; `kiln up` sees it and starts nothing (not even a
    # supervisor: one already watches).
    env = {"KILN_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    run_dir = tmp_path / "home" / "run"
    run_dir.mkdir(parents=True)
    server, supervisor = PidFile(run_dir / "kiln.pid"), PidFile(run_dir / "supervisor.pid")
    server.acquire()
    supervisor.acquire()
    try:
        result = CliRunner().invoke(kiln_app, ["up"], env=env)
    finally:
        server.release()
        supervisor.release()
    assert result.exit_code == 0, result.output
    assert "already running" in result.stdout
    assert f"supervisor pid {os.getpid()}" in result.stdout


def test_down_asks_the_server_to_stop(kiln: Kiln) -> None:
    # The fake only records the request; a real server would stop and `down` would see it go.
    # Here the server stays, so the wait is cut short by pointing the pid file at a dead pid.
    kiln.home.joinpath("run").mkdir(parents=True)
    kiln.home.joinpath("run", "kiln.pid").write_text("999999999\n")
    result = kiln.run("down")
    assert result.exit_code == 0, result.output
    assert kiln.service.shutdown_requested.wait(timeout=10)  # set just after the 202 is sent
    assert "NGINX and the apps keep serving" in result.stdout


def test_down_when_not_running_says_so(nothing_listening: dict[str, str]) -> None:
    result = CliRunner().invoke(kiln_app, ["down"], env=nothing_listening)
    assert result.exit_code == 0
    assert "not running" in result.stdout


def test_bad_flag_exits_2(kiln: Kiln) -> None:
    assert kiln.run("status", "--no-such-flag").exit_code == 2


def test_help_documents_the_exit_codes() -> None:
    result = CliRunner().invoke(kiln_app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "3 rollout failed" in result.stdout
    assert "5 kiln server not reachable" in result.stdout


def test_up_exits_7_and_starts_nothing_when_the_api_port_is_taken(
    nothing_listening: dict[str, str],
) -> None:
    # The API's TCP port is taken (bound by the fixture): the real server refuses at once,
    # its supervisor gives up, and `kiln up` says why.
    env = {**nothing_listening, "KILN_API_TCP": "1"}
    result = CliRunner().invoke(kiln_app, ["up"], env=env)
    assert result.exit_code == 7, result.output
    assert "kiln did not start (nothing was started)" in result.stderr
    assert f"TCP port 127.0.0.1:{env['KILN_API_PORT']} is in use" in result.stderr
    run_dir = Path(env["KILN_HOME"]) / "run"
    assert holder(run_dir / "supervisor.pid") is None
    assert holder(run_dir / "kiln.pid") is None


def test_events_type_filter_and_app_option(deployed: Kiln) -> None:
    result = deployed.run("events", "--app", "web", "--type", "rollout.succeeded", "--json")
    kinds = {event["kind"] for event in json.loads(result.stdout)}
    assert kinds == {"rollout.succeeded"}
    bad = deployed.run("events", "--type", "rollouts")
    assert bad.exit_code == 2
    assert "not an event type" in bad.output
