"""The CLI starts quickly: a read does not import what only other commands need.

No timing here (bench/cli_start.py measures the wall time); these tests look at which modules a
fresh interpreter has loaded, which is what start-up time is made of. When one fails, a
module-level import brought a heavy library back: import it inside the function that needs it
(kiln/cli/README.md, "Start-up").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

from kiln.cli.main import app as kiln_app

from .conftest import Kiln

# What the JSON reads (`kiln status --json`, `releases`, `events`, `logs` without -f) must not
# import, and why each one is someone else's cost.
NOT_FOR_A_JSON_READ = {
    "prometheus_client": "parses /metrics for `kiln top` only",
    "kiln.cli.render": "the tables of the human-readable output (needs Rich)",
    "kiln.cli.progress": "the live rollout view of deploy/rollback/promote --wait",
    "kiln.spec.compose": "Compose conversion: `kiln convert` and deploy of a compose.yaml",
    "kiln.supervisor.parent": "the supervisor process itself, started by `kiln up`",
    "rich": "tables, colours and live views: JSON is printed with json.dumps",
    "pygments": "Rich's syntax highlighting",
    "click": "typer has its own copy; only httpx's command line imports this one",
    "httpx._main": "httpx's own command line (click, Rich, Pygments): kiln/client/_httpx.py",
    "kiln.spec.model": "the spec models (pydantic): a read checks APP with kiln.spec.grammar",
    "kiln.model.release": "the server's release model (loads the spec models)",
    "kiln.model.rollout": "the server's rollout model (loads the spec models)",
    "yaml": "PyYAML reads the settings file, when there is one (there is none here)",
    "kiln.client.promotion_models": "the answers of promote, approve and diff",
    "kiln.client.command_models": "the answers of deploy, secrets, tokens, images, volumes, ...",
    "kiln.config.file": "the settings file's sections: the server's; a client asks on TCP only",
    "kiln.cli.commands.server": "kiln up and down: `kiln NAME` imports NAME's module only",
    "kiln.cli.commands.images": "kiln build and images (tarfile)",
    "kiln.supervisor": "pid files, the supervisor and its systemd unit: kiln up and down",
}

# What `import kiln.cli.main` (paid by every command, `--help` included) must not import on
# top of that: the HTTP client and its pydantic answer models load when a command asks for a
# client, not when the command line is parsed.
NOT_AT_IMPORT = {
    **NOT_FOR_A_JSON_READ,
    "httpx": "the HTTP client library: only commands that talk to the server",
    "kiln.client.client": "KilnClient: loaded by context.client()",
    "kiln.client.models": "the API's answer models (pydantic): loaded with the client",
    "kiln.model": "kiln's vocabulary: AppKey loads with the client",
    "kiln.spec": "the spec package: kiln.spec.grammar checks APP when a command parses it",
    "kiln.cli.commands": "the commands: `kiln NAME` imports the module of NAME only",
    "kiln.config": "the settings: read by the command that needs them",
    "pydantic": "the settings and the answer models: loaded by the command that reads them",
}

# Prints the modules loaded after running the command line in argv (none: only the import),
# as one JSON list on stderr's last line (stdout keeps the command's own output).
PROBE = """
import json, sys
from kiln.cli.main import app
code = 0
if sys.argv[1:]:
    try:
        app(sys.argv[1:], prog_name="kiln")
    except SystemExit as exc:
        code = exc.code
sys.stderr.write("\\n" + json.dumps(sorted(sys.modules)) + "\\n")
sys.exit(code)
"""


def loaded_after(args: list[str], env: dict[str, str] | None = None) -> tuple[set[str], str]:
    """Modules a fresh interpreter has loaded after ``kiln ARGS``; and the command's stdout."""
    run_env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    run_env.update(env or {})
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        env=run_env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stderr.splitlines()[-1])), result.stdout


def present(modules: set[str], forbidden: dict[str, str]) -> dict[str, str]:
    return {
        name: why
        for name, why in forbidden.items()
        if name in modules or any(m.startswith(name + ".") for m in modules)
    }


def test_importing_the_cli_loads_no_client_and_no_rich() -> None:
    modules, _ = loaded_after([])  # only the import: what every command pays before it runs
    assert present(modules, NOT_AT_IMPORT) == {}


def test_status_json_loads_only_what_it_needs(kiln: Kiln, spec_file: Path) -> None:
    assert kiln.run("deploy", "-f", str(spec_file), "--no-wait").exit_code == 0
    for args in (["status", "--json"], ["status", "web", "--json"]):
        modules, stdout = loaded_after(args, env=kiln.env)
        assert json.loads(stdout)["installation_id"]  # the read really ran
        assert present(modules, NOT_FOR_A_JSON_READ) == {}, args


@pytest.mark.parametrize(
    "args",
    [
        ["releases", "web", "--json"],
        ["events", "--json"],
        ["events", "web", "--json"],
        ["ps", "--json"],
        ["logs", "web", "--json"],
    ],
    ids=" ".join,
)
def test_other_json_reads_load_only_what_they_need(
    kiln: Kiln, spec_file: Path, args: list[str]
) -> None:
    assert kiln.run("deploy", "-f", str(spec_file), "--no-wait").exit_code == 0
    modules, stdout = loaded_after(args, env=kiln.env)
    if args[0] != "logs":  # logs print one JSON object a line (none yet from the fake)
        assert json.loads(stdout) is not None  # the read really ran and printed JSON
    assert present(modules, NOT_FOR_A_JSON_READ) == {}, args


def help_through(command: TyperGroup, args: list[str]) -> str:
    """What ``kiln ARGS`` prints, run through ``command`` (as the ``kiln`` script runs it)."""
    with CliRunner().isolation(env={"COLUMNS": "200"}) as (stdout, _, _):
        with pytest.raises(SystemExit) as done:
            command.main(args, prog_name="kiln")
        assert done.value.code == 0
        return stdout.getvalue().decode()


FULL_APP = typer.main.get_group(kiln_app)


@pytest.mark.parametrize("name", sorted(FULL_APP.commands))
def test_a_command_is_built_alone_the_same(name: str) -> None:
    # `kiln NAME ...` builds only NAME (kiln.cli.main._Kiln): what it accepts and prints is
    # what the whole app's NAME accepts and prints.
    lean = kiln_app.only(name)
    assert lean is not None
    alone = typer.main.get_group(lean)
    assert list(alone.commands) == [name]
    sub_commands = getattr(FULL_APP.commands[name], "commands", {})
    for args in ([name, "--help"], *([name, sub, "--help"] for sub in sub_commands)):
        assert help_through(alone, args) == help_through(FULL_APP, args), args


def test_only_a_command_name_builds_one_command() -> None:
    assert kiln_app.only("--help") is None
    assert kiln_app.only("statu") is None  # the whole app then says "Did you mean 'status'?"


def every_command(group: TyperGroup, prefix: list[str]) -> list[list[str]]:
    found = []
    for name, command in sorted(group.commands.items()):
        found.append([*prefix, name])
        if isinstance(command, TyperGroup):
            found += every_command(command, [*prefix, name])
    return found


COMMANDS = every_command(typer.main.get_group(kiln_app), [])


def test_every_command_is_found() -> None:
    assert {"status", "deploy", "top", "rollout status", "token create"} <= {
        " ".join(c) for c in COMMANDS
    }


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_of_every_command_works(command: list[str]) -> None:
    # The imports moved into the commands must not have taken anything --help shows.
    result = CliRunner().invoke(kiln_app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and "--help" in result.output
