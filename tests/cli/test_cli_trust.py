"""The CLI finds its kiln on the unix socket, says so when something else holds the TCP port,
never hands that something its token, and refuses a token file others can read."""

from __future__ import annotations

import json
import os
from pathlib import Path

from typer.testing import CliRunner

from kiln.cli.main import app as kiln_app

from ..api.squatter import squatting
from .conftest import INSTALLATION_ID, TOKEN, Kiln, cli_env


def one_line(text: str) -> str:
    """The message as one line: the terminal console wraps long ones."""
    return " ".join(text.split())


def test_a_squatter_on_the_tcp_port_gets_no_token_and_the_cli_exits_5(tmp_path: Path) -> None:
    for mimic in (False, True):
        with squatting(token=TOKEN, mimic=mimic) as squatter:
            env = cli_env(tmp_path / "home", port=squatter.port)
            for command in (
                ["status"],
                ["scale", "web", "3"],
                ["events", "-f"],
                ["releases", "web"],
            ):
                result = CliRunner().invoke(kiln_app, command, env=env)
                assert result.exit_code == 5, (command, result.output)
                assert (
                    f"something else is listening on 127.0.0.1:{squatter.port}; "
                    "it is not this kiln" in one_line(result.stderr)
                ), command
                assert "Traceback" not in result.output
        assert squatter.headers_seen
        assert not squatter.any_token_seen()


def test_the_cli_talks_to_kiln_on_its_unix_socket_by_default(kiln: Kiln) -> None:
    result = kiln.run("status")
    assert result.exit_code == 0, result.output
    assert "no apps yet" in result.stdout


def test_status_and_version_json_show_the_installation_id(kiln: Kiln, spec_file: Path) -> None:
    assert kiln.run("deploy", "-f", str(spec_file)).exit_code == 0
    overview = json.loads(kiln.run("status", "--json").stdout)
    assert overview["installation_id"] == INSTALLATION_ID
    assert [a["app"] for a in overview["apps"]] == ["web"]
    one = json.loads(kiln.run("status", "web", "--json").stdout)
    assert one["installation_id"] == INSTALLATION_ID and one["app"] == "web"
    version = json.loads(kiln.run("version", "--json").stdout)
    assert version["installation_id"] == INSTALLATION_ID
    assert version["server"] == version["cli"]
    assert version["url"] == f"unix:{kiln.env['KILN_API_SOCKET']}"


def test_tcp_when_opted_in_with_the_server_identified(kiln_on_tcp: Kiln) -> None:
    version = json.loads(kiln_on_tcp.run("version", "--json").stdout)
    assert version["installation_id"] == INSTALLATION_ID
    assert version["url"] == f"http://127.0.0.1:{kiln_on_tcp.env['KILN_API_PORT']}"
    assert kiln_on_tcp.run("status").exit_code == 0


def test_kiln_api_url_points_the_cli_at_a_tcp_kiln(kiln_on_tcp: Kiln) -> None:
    port = kiln_on_tcp.env["KILN_API_PORT"]
    env = {**kiln_on_tcp.env, "KILN_API_TCP": "", "KILN_API_URL": f"http://127.0.0.1:{port}"}
    result = CliRunner().invoke(kiln_app, ["status", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["installation_id"] == INSTALLATION_ID


def test_a_bad_kiln_api_url_is_bad_input(kiln: Kiln) -> None:
    result = CliRunner().invoke(
        kiln_app, ["status"], env={**kiln.env, "KILN_API_URL": "127.0.0.1:7070/x"}
    )
    assert result.exit_code == 2
    assert "KILN_API_URL must be like http://127.0.0.1:7070" in result.stderr


def test_a_token_file_others_can_read_is_refused_with_the_chmod_to_run(kiln: Kiln) -> None:
    token_file = kiln.home / "token"
    kiln.home.mkdir(parents=True, exist_ok=True)
    token_file.write_text(TOKEN + "\n")
    os.chmod(token_file, 0o644)
    env = {**kiln.env, "KILN_TOKEN": ""}
    result = CliRunner().invoke(kiln_app, ["status"], env=env)
    assert result.exit_code == 2, result.output
    assert f"chmod 600 {token_file}" in one_line(result.stderr)
    os.chmod(token_file, 0o600)
    assert CliRunner().invoke(kiln_app, ["status"], env=env).exit_code == 0


def test_no_server_on_the_socket_exits_5_with_the_kiln_up_hint(tmp_path: Path) -> None:
    socket_path = tmp_path / "run" / "api.sock"
    env = cli_env(tmp_path / "home", socket_path=socket_path)
    result = CliRunner().invoke(kiln_app, ["status"], env=env)
    assert result.exit_code == 5
    assert f"kiln is not running at the unix socket {socket_path}" in one_line(result.stderr)
    assert "kiln up" in result.stderr
    version = CliRunner().invoke(kiln_app, ["version", "--json"], env=env)
    assert version.exit_code == 0
    assert json.loads(version.stdout)["server"] is None
