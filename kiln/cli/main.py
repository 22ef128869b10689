"""``kiln``: the command line. Wires the commands into one Typer app and maps errors to exit codes.

Every command reaches the server through ``kiln.client`` only. Errors are printed to stderr as
one readable message (a traceback only with KILN_DEBUG=1) and end with the exit code that
``kiln.cli.exit_codes`` assigns to them.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec

import typer
import typer.main
from typer.models import CommandInfo, TyperInfo

from kiln.cli import context
from kiln.cli.exit_codes import EPILOG, ExitCode, exit_code_for
from kiln.errors import KilnError, SpecInvalid

P = ParamSpec("P")


def handles_errors(command: Callable[P, None]) -> Callable[P, None]:
    """The one place where an error becomes a message on stderr and an exit code."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except KilnError as exc:
            if os.environ.get("KILN_DEBUG") == "1":
                raise
            _print_error(exc)
            raise typer.Exit(exit_code_for(exc)) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except Exception as exc:
            if os.environ.get("KILN_DEBUG") == "1":
                raise
            context.err().print(
                f"kiln: unexpected error: {type(exc).__name__}: {exc} "
                "(run again with KILN_DEBUG=1 for the traceback)",
                markup=False,
            )
            raise typer.Exit(ExitCode.UNEXPECTED) from None
        finally:
            context.close_clients()

    return run


def _print_error(exc: KilnError) -> None:
    err = context.err()
    if isinstance(exc, SpecInvalid):
        # The header names the file; then one problem per line, each with its field path.
        err.print(exc.message.splitlines()[0], markup=False)
        for problem in exc.problems:
            err.print(f"  - {problem}", markup=False)
        return
    err.print(f"kiln: {exc.message}", markup=False)


# Every command: the panel `kiln --help` lists it in, its module in kiln.cli.commands and its
# function (the command is named after the function). Named, not imported: `kiln NAME` imports
# the module of NAME only (kiln/cli/README.md, "Start-up"). In the order `kiln --help` shows.
_COMMANDS: list[tuple[str, str, str]] = [
    ("Server", "server", "up"),
    ("Server", "server", "down"),
    ("Deploy", "deploy", "deploy"),
    ("Deploy", "deploy", "rollback"),
    ("Deploy", "images", "build"),
    ("Deploy", "manage", "scale"),
    ("Deploy", "manage", "stop"),
    ("Deploy", "manage", "destroy"),
    ("Deploy", "compose", "convert"),
    ("Inspect", "inspect", "status"),
    ("Inspect", "inspect", "ps"),
    ("Inspect", "inspect", "releases"),
    ("Inspect", "drift", "drift"),
    ("Inspect", "images", "images"),
    ("Inspect", "inspect", "logs"),
    ("Inspect", "inspect", "events"),
    ("Inspect", "top", "top"),
    ("Inspect", "inspect", "schema"),
    ("Inspect", "inspect", "version"),
    # `kiln promote` is both: between environments (--from/--to) and a rollout's next step;
    # the steering commands are top-level verbs, as people say them.
    ("Rollout", "promotion", "promote"),
    ("Rollout", "rollout", "pause"),
    ("Rollout", "rollout", "resume"),
    ("Rollout", "rollout", "abort"),
    ("Rollout", "rollout", "retry"),
    ("Environments", "promotion", "approve"),
    ("Environments", "promotion", "diff"),
    ("Access", "access", "audit"),
]
# Command groups: name, module (its HELP is the group's help), panel, and (command, function).
_GROUPS: list[tuple[str, str, str, list[tuple[str, str]]]] = [
    ("rollout", "rollout", "Rollout", [("status", "status")]),  # `kiln rollout status APP`
    ("token", "access", "Access", [("create", "create"), ("ls", "ls"), ("revoke", "revoke")]),
    (
        "secret",
        "secret",
        "Secrets and volumes",
        [("set", "set_"), ("ls", "ls"), ("rm", "rm"), ("rotate-key", "rotate_key")],
    ),
    (
        "volume",
        "volume",
        "Secrets and volumes",
        [
            ("ls", "ls"),
            ("inspect", "inspect"),
            ("rm", "rm"),
            ("snapshot", "snapshot"),
            ("restore", "restore"),
        ],
    ),
]


def _module(name: str) -> Any:
    return importlib.import_module(f"kiln.cli.commands.{name}")


def _add_command(app: typer.Typer, panel: str, module: str, function: str) -> None:
    app.command(rich_help_panel=panel)(handles_errors(getattr(_module(module), function)))


def _add_group(
    app: typer.Typer, name: str, module: str, panel: str, commands: list[tuple[str, str]]
) -> None:
    home = _module(module)
    group = typer.Typer(
        name=name, help=home.HELP, epilog=EPILOG, no_args_is_help=True, rich_markup_mode="rich"
    )
    for command, function in commands:
        group.command(command)(handles_errors(getattr(home, function)))
    app.add_typer(group, rich_help_panel=panel)


class _Kiln(typer.Typer):
    """The ``kiln`` app. Run (``app()``, the ``kiln`` script), it builds only the command the
    first argument names, and imports only its module: Typer reads the signature of every
    command it builds (~25 ms for all forty), and ``kiln status --json`` in a script's loop
    needs one (kiln/cli/README.md, "Start-up"). ``kiln``, ``kiln --help``, a first argument
    that names no command, and whoever reads the app's commands (Typer's ``get_command``, the
    tests' ``CliRunner``) get every command, as Typer does; a command is built the same way
    either way, so what it accepts, prints and exits with does not change
    (``tests/cli/test_cli_startup.py``)."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._complete = False
        super().__init__(**options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        argv: Sequence[str] | None = kwargs.get("args", args[0] if args else None)
        first = (sys.argv[1:] if argv is None else list(argv))[:1]
        lean = self.only(first[0]) if first else None
        if lean is None:
            return super().__call__(*args, **kwargs)
        return typer.main.get_group(lean)(*args, **kwargs)

    def only(self, name: str) -> typer.Typer | None:
        """The app with the command or command group ``name`` alone; None if none has it."""
        lean = typer.Typer(**self._options)
        for panel, module, function in _COMMANDS:
            if typer.main.get_command_name(function) == name:
                _add_command(lean, panel, module, function)
        for group in _GROUPS:
            if group[0] == name:
                _add_group(lean, *group)
        return lean if lean.registered_commands or lean.registered_groups else None

    # Typer reads these to build the app: the first read registers every command.
    @property
    def registered_commands(self) -> list[CommandInfo]:
        self._register_all()
        return self._commands

    @registered_commands.setter
    def registered_commands(self, value: list[CommandInfo]) -> None:
        self._commands = value

    @property
    def registered_groups(self) -> list[TyperInfo]:
        self._register_all()
        return self._groups

    @registered_groups.setter
    def registered_groups(self, value: list[TyperInfo]) -> None:
        self._groups = value

    def _register_all(self) -> None:
        if self._complete:
            return
        self._complete = True
        for command in _COMMANDS:
            _add_command(self, *command)
        for group in _GROUPS:
            _add_group(self, *group)


app = _Kiln(
    name="kiln",
    help="Run container apps as immutable infrastructure behind NGINX: "
    "releases, rolling deploys, self-healing, rollback.",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


if __name__ == "__main__":
    app()
