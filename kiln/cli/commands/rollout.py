"""``kiln rollout status`` and the commands that steer a rollout: ``promote``, ``pause``,
``resume``, ``abort``, ``retry``.

Each steering command changes what the server wants and returns at once; the server's next
round moves the traffic. ``kiln rollout status APP -f`` watches it happen.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from kiln.cli import context
from kiln.cli.exit_codes import ExitCode
from kiln.errors import PermanentFailure

if TYPE_CHECKING:
    from kiln.client import Rollout, RolloutView

AppArgument = Annotated[str, typer.Argument(help="APP or ENV/APP.", show_default=False)]

HELP = """See and steer an app's rollout (the move of traffic from one release to the next).

How a rollout moves depends on the app's `deploy.strategy` in kiln.yaml:

  rolling / recreate  move on by themselves; only `kiln abort` stops them.
  canary              the new release gets a growing share of the requests, step by step
                      (`deploy.steps`); a step without a pause waits for `kiln promote`.
  blue-green          the new release starts beside the old one, reachable on preview only;
                      `kiln promote` switches all traffic to it.

Typical session:  kiln deploy -f kiln.yaml --no-wait · kiln rollout status web -f ·
kiln promote web · (something is wrong) kiln abort web · (fixed outside) kiln retry web
"""


def _steered(view: RolloutView) -> Rollout:
    """The rollout a steering command acted on (the server always names it)."""
    if view.rollout is None:
        raise PermanentFailure(
            f"kiln answered without the rollout of {view.key}; see the server log"
        )
    return view.rollout


def _done_hint(view: RolloutView) -> str:
    return f"watch it with `kiln rollout status {view.key} -f`"


def _emit(view: RolloutView, as_json: bool, message: str) -> None:
    if as_json:
        context.print_json(view.model_dump(mode="json"))
        return
    context.out().print(message, markup=False)


def status(
    app: AppArgument,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            "--follow",
            "-w",
            "-f",
            help="Refresh the view until the rollout ends; exit 0 if it succeeded, 3 if it "
            "failed, was aborted or superseded.",
        ),
    ] = False,
    as_json: context.JsonOption = False,
    env: context.EnvOption = None,
) -> None:
    """Show where an app's rollout is: step and weights, each release's share, readiness,
    requests, error rate and p95, the last analysis verdict, and the warm and held releases.

    Without a rollout in progress it shows the last one. With --watch, the view refreshes
    (live on a terminal, one line per change otherwise; with --json one JSON object per line
    per change) until the rollout ends.

    Examples:  kiln rollout status web          kiln rollout status staging/web -f
    """
    key = context.resolve_app(app, env)
    kiln = context.client()
    if not watch:
        view = kiln.rollout_status(key)
        if as_json:
            context.print_json(view.model_dump(mode="json"))
        else:
            from kiln.cli.render import rollout_details

            context.out().print(rollout_details(view))
        return

    def json_line(view: RolloutView) -> None:
        sys.stdout.write(view.model_dump_json() + "\n")
        sys.stdout.flush()

    from kiln.cli.progress import follow_rollout

    out, err = context.out(), context.err()
    end = follow_rollout(
        kiln,
        key,
        console=None if as_json else out,
        live=out.is_terminal and not out.is_dumb_terminal,
        on_view=json_line if as_json else None,
    )
    rollout = end.view.rollout
    if end.state == "none":
        if not as_json:
            out.print(f"{key} has no rollout to watch — `kiln deploy` starts one")
        return
    release = rollout.to_release if rollout else "?"
    if end.state == "succeeded":
        if not as_json:
            out.print(f"[green]✓[/] {key}: rollout to release {release} succeeded")
        return
    if not as_json:
        err.print(
            f"[red]✗[/] {key}: rollout to release {release} {end.state}: "
            f"{end.reason or 'no reason given'}"
        )
    raise typer.Exit(ExitCode.ROLLOUT_FAILED)


def promote(
    app: AppArgument,
    full: Annotated[
        bool,
        typer.Option(
            "--full", help="Canary: skip the steps left and send all traffic to the new release."
        ),
    ] = False,
    as_json: context.JsonOption = False,
    env: context.EnvOption = None,
) -> None:
    """Move a canary to its next step (--full: all traffic now), or switch a blue-green
    rollout's traffic to the new release.

    Rolling and recreate rollouts move on by themselves: promoting one is a conflict (exit 7),
    as is promoting when no rollout is in progress.

    Examples:  kiln promote web          kiln promote staging/web --full
    """
    key = context.resolve_app(app, env)
    view = context.client().promote(key, full=full)
    rollout = _steered(view)
    if full or rollout.strategy == "blue-green":
        what = "to all traffic"
    elif view.steps and rollout.step + 1 < len(view.steps):
        what = f"to its next step ({view.steps[rollout.step + 1]}%)"
    else:
        what = "to all traffic (its last step is done)"
    _emit(
        view,
        as_json,
        f"{key}: promoting release {rollout.to_release} {what}; {_done_hint(view)}",
    )


def pause(
    app: AppArgument, as_json: context.JsonOption = False, env: context.EnvOption = None
) -> None:
    """Hold a canary or blue-green rollout where it is: traffic stays as it is, no step is
    taken until `kiln resume` or `kiln promote`.

    Example:  kiln pause web
    """
    key = context.resolve_app(app, env)
    view = context.client().pause(key)
    rollout = _steered(view)
    from kiln.cli.render import steps_text

    at = steps_text(view).plain
    where = f" at {at}" if at else ""
    _emit(
        view,
        as_json,
        f"{key}: rollout to release {rollout.to_release} paused{where}; traffic stays as it "
        f"is — `kiln resume {view.key}` goes on",
    )


def resume(
    app: AppArgument, as_json: context.JsonOption = False, env: context.EnvOption = None
) -> None:
    """Let a paused canary or blue-green rollout go on from where it was held.

    Example:  kiln resume web
    """
    key = context.resolve_app(app, env)
    view = context.client().resume(key)
    rollout = _steered(view)
    _emit(
        view,
        as_json,
        f"{key}: rollout to release {rollout.to_release} resumed; {_done_hint(view)}",
    )


def abort(
    app: AppArgument, as_json: context.JsonOption = False, env: context.EnvOption = None
) -> None:
    """Abort the rollout in progress: all traffic goes back to the stable release at once.

    The new release is kept, without traffic, for inspection (`kiln logs`, `kiln ps`) until
    the next deploy; `kiln retry` starts its rollout again from the first step.

    Example:  kiln abort web
    """
    key = context.resolve_app(app, env)
    view = context.client().abort(key)
    rollout = _steered(view)
    _emit(
        view,
        as_json,
        f"{key}: rollout to release {rollout.to_release} aborted: {rollout.reason}",
    )


def retry(
    app: AppArgument, as_json: context.JsonOption = False, env: context.EnvOption = None
) -> None:
    """Start a failed or aborted rollout again from its first step (same release, new
    instances).

    A conflict (exit 7) while a rollout is in progress or when the last one did not fail.

    Example:  kiln retry web
    """
    key = context.resolve_app(app, env)
    view = context.client().retry(key)
    rollout = _steered(view)
    _emit(
        view,
        as_json,
        f"{key}: retrying the {rollout.strategy} rollout to release {rollout.to_release} from "
        f"its first step; {_done_hint(view)}",
    )
