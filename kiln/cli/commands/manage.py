"""``kiln scale``, ``kiln stop`` and ``kiln destroy``: change how many instances run.

``stop`` and ``destroy`` take several apps and ask for them concurrently (a bounded pool of
threads over one client): each app's line is printed as it finishes, every app that failed is
named, and the others are still done.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TYPE_CHECKING, Annotated

import typer

from kiln.cli import context
from kiln.cli.exit_codes import ExitCode, exit_code_for
from kiln.errors import KilnError

if TYPE_CHECKING:
    from kiln.model import AppKey

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


AppsArgument = Annotated[
    list[str],
    typer.Argument(help="One or more apps: APP or ENV/APP.", show_default=False),
]

# Several apps are asked for at once, this many at a time: a script that destroys 100 apps
# waits for the slowest few, not for the sum (the server does the work in the background).
CONCURRENT_CALLS = 8


def stop(apps: AppsArgument, env: context.EnvOption = None) -> None:
    """Stop every instance of one or more apps but keep their releases; `kiln scale` or
    `kiln deploy` starts an app again.

    Several apps are stopped concurrently; an app that fails is named on stderr, the others are
    still stopped, and the exit code is that of the first app (in the order given) that failed.

    Examples:  kiln stop web          kiln stop web api staging/worker
    """
    keys = _resolve_all(apps, env)
    kiln = context.client()

    def stop_one(key: AppKey) -> str:
        status = kiln.stop(key)
        return f"{key}: stopped ({status.state}); releases kept"

    _run_each(keys, stop_one)


def destroy(
    apps: AppsArgument,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Return only once every instance is stopped and removed (up to a minute "
            "an app), legacy containers of its releases too, not as soon as the app is "
            "forgotten and its routes are gone.",
        ),
    ] = False,
    env: context.EnvOption = None,
) -> None:
    """Destroy one or more apps: forget them and remove their routes (their traffic stops at
    once); their instances are stopped and removed in the background. Cannot be undone.

    Asks for confirmation; in scripts pass --yes. Several apps are destroyed concurrently; an
    app that fails is named on stderr, the others are still destroyed, and the exit code is
    that of the first app (in the order given) that failed. Deploying an app of the same name
    again right away works: the deploy waits until the old instances are gone.

    Examples:  kiln destroy staging/web --yes          kiln destroy web api --yes --wait
    """
    keys = _resolve_all(apps, env)
    names = ", ".join(str(key) for key in keys)
    err = context.err()
    if not yes:
        if not sys.stdin.isatty():
            err.print(
                f"refusing to destroy {names} without --yes (no terminal to ask); "
                "nothing was changed"
            )
            raise typer.Exit(ExitCode.BAD_INPUT)
        them = (
            "its instances and forget it" if len(keys) == 1 else "their instances and forget them"
        )
        if not typer.confirm(f"Destroy {names}: stop {them}?", default=False):
            err.print("nothing was changed")
            raise typer.Exit(ExitCode.BAD_INPUT)
    kiln = context.client()

    def destroy_one(key: AppKey) -> str:
        kiln.destroy(key, wait=wait)
        if wait:
            return f"{key}: destroyed; every instance stopped and removed"
        return f"{key}: destroyed; its routes are gone, its instances stop in the background"

    _run_each(keys, destroy_one, waiting="waiting for their instances to go" if wait else None)


def _resolve_all(apps: list[str], env: str | None) -> list[AppKey]:
    """Every ``APP`` checked before anything is asked of the server (a bad name changes
    nothing); an app named twice is done once."""
    keys: list[AppKey] = []
    for app in apps:
        key = context.resolve_app(app, env)
        if key not in keys:
            keys.append(key)
    return keys


def _run_each(
    keys: list[AppKey], action: Callable[[AppKey], str], *, waiting: str | None = None
) -> None:
    """``action`` for every app, ``CONCURRENT_CALLS`` at a time; each app's line is printed as
    it finishes. One app: its error is raised as is (the usual message and exit code)."""
    if len(keys) == 1:
        context.out().print(action(keys[0]), markup=False)
        return
    out, err = context.out(), context.err()
    failed: dict[AppKey, Exception] = {}
    progress = err.status(f"{len(keys)} apps: {waiting}") if waiting and err.is_terminal else None
    with ThreadPoolExecutor(max_workers=min(CONCURRENT_CALLS, len(keys))) as pool:
        futures = {pool.submit(action, key): key for key in keys}
        if progress is not None:
            progress.start()
        try:
            for done, future in enumerate(as_completed(futures), start=1):
                key = futures[future]
                try:
                    out.print(future.result(), markup=False)
                except Exception as exc:  # every app's failure is reported below
                    failed[key] = exc
                if progress is not None:
                    progress.update(f"{done} of {len(keys)} apps done: {waiting}")
        finally:
            if progress is not None:
                progress.stop()
    if not failed:
        return
    in_order = [key for key in keys if key in failed]
    for key in in_order:
        problem = failed[key]
        why = (
            problem.message
            if isinstance(problem, KilnError)
            else f"{type(problem).__name__}: {problem}"
        )
        err.print(f"kiln: {key}: {why}", markup=False)
    err.print(
        f"kiln: {len(failed)} of {len(keys)} apps failed: {', '.join(map(str, in_order))}; "
        "the others are done",
        markup=False,
    )
    raise typer.Exit(exit_code_for(failed[in_order[0]]))
