"""``kiln scale``, ``kiln stop`` and ``kiln destroy``: change how many instances run."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from kiln.cli import context
from kiln.cli.exit_codes import ExitCode

AppArgument = Annotated[str, typer.Argument(help="APP or ENV/APP.", show_default=False)]


def scale(
    app: AppArgument,
    instances: Annotated[int, typer.Argument(min=0, max=1000, help="Number of instances.")],
    env: context.EnvOption = None,
) -> None:
    """Set how many instances of the current release run (no new release).

    Example:  kiln scale web 3
    """
    key = context.resolve_app(app, env)
    status = context.client().scale(key, instances)
    context.out().print(f"{key}: scale {status.scale} (ready {status.ready}, {status.state})")


def stop(app: AppArgument, env: context.EnvOption = None) -> None:
    """Stop every instance of an app but keep its releases; `kiln scale` or `kiln deploy` restarts it.

    Example:  kiln stop web
    """
    key = context.resolve_app(app, env)
    status = context.client().stop(key)
    context.out().print(f"{key}: stopped ({status.state}); releases kept")


def destroy(
    app: AppArgument,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    env: context.EnvOption = None,
) -> None:
    """Destroy an app: stop its instances, remove its routes and forget it. Cannot be undone.

    Asks for confirmation; in scripts pass --yes.

    Example:  kiln destroy staging/web --yes
    """
    key = context.resolve_app(app, env)
    err = context.err()
    if not yes:
        if not sys.stdin.isatty():
            err.print(
                f"refusing to destroy {key} without --yes (no terminal to ask); nothing was changed"
            )
            raise typer.Exit(ExitCode.BAD_INPUT)
        if not typer.confirm(f"Destroy {key}: stop its instances and forget it?", default=False):
            err.print("nothing was changed")
            raise typer.Exit(ExitCode.BAD_INPUT)
    context.client().destroy(key)
    context.out().print(f"{key}: destroyed")
