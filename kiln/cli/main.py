"""``kiln``: the command line. Wires the commands into one Typer app and maps errors to exit codes.

Every command reaches the server through ``kiln.client`` only. Errors are printed to stderr as
one readable message (a traceback only with KILN_DEBUG=1) and end with the exit code that
``kiln.cli.exit_codes`` assigns to them.
"""

from __future__ import annotations

import copy
import functools
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec

import typer
import typer.main

from kiln.cli import context
from kiln.cli.commands import (
    access,
    compose,
    deploy,
    drift,
    images,
    inspect,
    manage,
    promotion,
    rollout,
    secret,
    server,
    top,
    volume,
)
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


class _Kiln(typer.Typer):
    """The ``kiln`` app. Run (``app()``, the ``kiln`` script), it builds only the command the
    first argument names: Typer reads the signature of every command it builds (~25 ms for all
    forty), and ``kiln status --json`` in a script's loop needs one (kiln/cli/README.md,
    "Start-up"). ``kiln``, ``kiln --help`` and a first argument that names no command build
    every command, as Typer does; a command is built the same way either way, so what it
    accepts, prints and exits with does not change (``tests/cli/test_cli_startup.py``)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        argv: Sequence[str] | None = kwargs.get("args", args[0] if args else None)
        first = (sys.argv[1:] if argv is None else list(argv))[:1]
        lean = self.only(first[0]) if first else None
        if lean is None:
            return super().__call__(*args, **kwargs)
        return typer.main.get_group(lean)(*args, **kwargs)

    def only(self, name: str) -> typer.Typer | None:
        """This app with the command or command group ``name`` alone; None if none has it."""
        commands = [
            command
            for command in self.registered_commands
            if name
            == (
                command.name
                or typer.main.get_command_name(getattr(command.callback, "__name__", ""))
            )
        ]
        groups = [
            group
            for group in self.registered_groups
            if group.typer_instance is not None and group.typer_instance.info.name == name
        ]
        if not commands and not groups:
            return None
        lean = copy.copy(self)
        lean.registered_commands, lean.registered_groups = commands, groups
        return lean


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

_PANELS: list[tuple[str, list[Callable[..., None]]]] = [
    ("Server", [server.up, server.down]),
    (
        "Deploy",
        [
            deploy.deploy,
            deploy.rollback,
            images.build,
            manage.scale,
            manage.stop,
            manage.destroy,
            compose.convert,
        ],
    ),
    (
        "Inspect",
        [
            inspect.status,
            inspect.ps,
            inspect.releases,
            drift.drift,
            images.images,
            inspect.logs,
            inspect.events,
            top.top,
            inspect.schema,
            inspect.version,
        ],
    ),
]
for _panel, _commands in _PANELS:
    for _command in _commands:
        app.command(rich_help_panel=_panel)(handles_errors(_command))

# `kiln rollout status APP` reads; the steering commands are top-level verbs, as people say them.
rollout_group = typer.Typer(
    name="rollout",
    help=rollout.HELP,
    epilog=EPILOG,
    no_args_is_help=True,
    rich_markup_mode="rich",
)
rollout_group.command("status")(handles_errors(rollout.status))
app.add_typer(rollout_group, rich_help_panel="Rollout")
# `kiln promote` is both: between environments (--from/--to) and a rollout's next step.
for _command in (promotion.promote, rollout.pause, rollout.resume, rollout.abort, rollout.retry):
    app.command(rich_help_panel="Rollout")(handles_errors(_command))
for _command in (promotion.approve, promotion.diff):
    app.command(rich_help_panel="Environments")(handles_errors(_command))

# `kiln token create|ls|revoke` and `kiln audit`: access control (admin tokens).
token_group = typer.Typer(
    name="token", help=access.HELP, epilog=EPILOG, no_args_is_help=True, rich_markup_mode="rich"
)
for _name, _command in (("create", access.create), ("ls", access.ls), ("revoke", access.revoke)):
    token_group.command(_name)(handles_errors(_command))
app.add_typer(token_group, rich_help_panel="Access")
app.command(rich_help_panel="Access")(handles_errors(access.audit))
secret_group = typer.Typer(
    name="secret", help=secret.HELP, epilog=EPILOG, no_args_is_help=True, rich_markup_mode="rich"
)
secret_group.command("set")(handles_errors(secret.set_))
secret_group.command("ls")(handles_errors(secret.ls))
secret_group.command("rm")(handles_errors(secret.rm))
secret_group.command("rotate-key")(handles_errors(secret.rotate_key))
app.add_typer(secret_group, rich_help_panel="Secrets and volumes")
volume_group = typer.Typer(
    name="volume", help=volume.HELP, epilog=EPILOG, no_args_is_help=True, rich_markup_mode="rich"
)
for _name, _command in (
    ("ls", volume.ls),
    ("inspect", volume.inspect),
    ("rm", volume.rm),
    ("snapshot", volume.snapshot),
    ("restore", volume.restore),
):
    volume_group.command(_name)(handles_errors(_command))
app.add_typer(volume_group, rich_help_panel="Secrets and volumes")


if __name__ == "__main__":
    app()
