"""``kiln promote`` (between environments, and the rollout step it always was), ``kiln approve``
and ``kiln diff``.

    kiln promote web --from staging --to production [--dry-run] [--wait]
        ─▶ POST /v1/promotions ─▶ gates ✓/✗ + diff ─▶ (--wait) watch the production rollout
    kiln approve web --env production --release 4 ─▶ POST /v1/approvals
    kiln diff web 7 9 | kiln diff web --env staging --to production ─▶ GET …/diff
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kiln.cli import context
from kiln.cli.commands import rollout
from kiln.cli.exit_codes import ExitCode
from kiln.errors import InvalidInput

if TYPE_CHECKING:
    from kiln.client import Diff, FieldChange, Gate, Promotion

_APP = Annotated[str, typer.Argument(help="APP (or ENV/APP).", show_default=False)]


def promote(
    app: _APP,
    source: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Environment the release comes from (with --to: promote between environments).",
            show_default=False,
        ),
    ] = None,
    target: Annotated[
        str | None,
        typer.Option(
            "--to", help="The next environment in the order, e.g. production.", show_default=False
        ),
    ] = None,
    release: Annotated[
        int | None,
        typer.Option(
            "--release", min=1, help="Source release (default: the one its environment serves)."
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the gates and the diff; change nothing.")
    ] = False,
    wait: Annotated[
        bool,
        typer.Option("--wait/--no-wait", help="Watch the target's rollout until it ends."),
    ] = False,
    message: Annotated[
        str, typer.Option("--message", "-m", help="Why: kept on the new release.")
    ] = "",
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help="(rollout step) Canary: skip the steps left and send all traffic to the new "
            "release.",
        ),
    ] = False,
    as_json: context.JsonOption = False,
    env: context.EnvOption = None,
) -> None:
    """Promote a release to the next environment (--from/--to), or move a rollout on.

    [bold]Between environments[/] (dev → staging → production by default): a new release in
    --to with exactly the source release's image digest and spec — only --to's `environments:`
    overrides in kiln.yaml differ — rolled out with --to's strategy (a canary there is a
    canary). Gates are checked first and every failing one is listed: the source serves and
    is healthy, its rollout (and analysis) passed, it soaked `min_soak`, and an approval when
    the target requires one (`kiln approve`). Exit 8 when a gate refuses (--dry-run too:
    it only shows what would happen); nothing changes.
    Already there: a no-op (exit 0).

    [bold]A rollout step[/] (no --from/--to): move a canary to its next step (--full: all
    traffic now), or switch a blue-green rollout's traffic to the new release. Rolling and
    recreate rollouts move on by themselves: promoting one is a conflict (exit 7), as is
    promoting when no rollout is in progress.

    Examples:  kiln promote web --from staging --to production --dry-run
               kiln promote web --from staging --to production --wait
               kiln promote web            (the canary's next step)
    """
    if source is None and target is None:
        if release is not None or dry_run or wait or message:
            raise InvalidInput(
                "--release, --dry-run, --wait and -m go with --from/--to (promotion between "
                "environments); without them `kiln promote APP` moves a rollout on"
            )
        rollout.promote(app, full=full, as_json=as_json, env=env)
        return
    if full:
        raise InvalidInput("--full moves a rollout on; it does not go with --from/--to")
    name, source = _app_and_source(app, source, env)
    if target is None:
        raise InvalidInput(f"give the environment to promote to: --to (after {source})")
    from kiln.cli.progress import watch_rollout
    from kiln.model import AppKey

    kiln = context.client()
    after = kiln.last_event_id(AppKey(target, name)) if wait and not dry_run else 0
    result = kiln.promote_release(
        name, source=source, target=target, release=release, dry_run=dry_run, message=message
    )
    if not wait or dry_run or not result.changed or result.release is None:
        if as_json:
            context.print_json(result.model_dump(mode="json"))
        else:
            _print_promotion(result)
        if dry_run and not result.passed:
            # A CI step can ask "would it go?" and act on the answer.
            raise typer.Exit(ExitCode.GATE_REFUSED)
        return
    if not as_json:
        _print_promotion(result)
    key = AppKey(target, name)
    out = context.out()
    outcome = watch_rollout(
        kiln,
        key,
        result.release.number,
        after_event=after,
        console=None if as_json else out,
        live=not as_json and out.is_terminal and not out.is_dumb_terminal,
    )
    if as_json:
        context.print_json(
            {
                **result.model_dump(mode="json"),
                "outcome": outcome.state,
                "reason": outcome.reason,
            }
        )
    elif outcome.state == "succeeded":
        out.print(f"[green]✓[/] {key}: release {result.release.number} is live")
    elif outcome.state == "waiting":
        out.print(
            f"[yellow]…[/] {key}: release {result.release.number}: {outcome.reason}; go on "
            f"with `kiln promote {key}` (or `kiln abort {key}`)"
        )
    else:
        context.err().print(
            f"[red]✗[/] {key}: release {result.release.number} {outcome.state}: "
            f"{outcome.reason or 'no reason given'}"
        )
    if outcome.state == "gave_up":
        raise typer.Exit(ExitCode.UNEXPECTED)
    if outcome.state not in ("succeeded", "waiting"):
        raise typer.Exit(ExitCode.ROLLOUT_FAILED)


def _app_and_source(app: str, source: str | None, env: str | None) -> tuple[str, str]:
    """``staging/web --to production`` and ``web --from staging`` say the same."""
    if "/" in app:
        prefix, _, name = app.partition("/")
        if source is not None and source != prefix:
            raise InvalidInput(f"{app!r} names environment {prefix!r} but --from says {source!r}")
        source = prefix
    else:
        name = app
    source = source or env
    if source is None:
        raise InvalidInput("give the environment the release comes from: --from staging")
    key = context.resolve_app(name, source)  # checks both names
    return key.app, key.environment


def _value(value: Any) -> str:
    if value is None:
        return "—"
    text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    return text if len(text) <= 120 else text[:119] + "…"


def _change_lines(changes: list[FieldChange]) -> list[str]:
    width = max((len(c.path) for c in changes), default=0)
    return [f"  {c.path:<{width}}  {_value(c.before)} → {_value(c.after)}" for c in changes]


def _diff_lines(diff: Diff) -> list[str]:
    lines = []
    if diff.digest_changed:
        before = diff.left.digest or "—"
        lines.append(f"  image digest  {before} → {diff.right.digest}")
    else:
        lines.append(f"  image digest  {diff.right.digest} (same)")
    lines += _change_lines(diff.changes)
    if diff.secrets:
        lines.append("  secrets:")
        lines += ["  " + line for line in _change_lines(diff.secrets)]
    return lines


def _gate_line(gate: Gate) -> str:
    mark = "[green]✓[/]" if gate.passed else "[red]✗[/]"
    return f"  {mark} {gate.name:<9} {gate.detail}"


def _print_promotion(result: Promotion) -> None:
    out = context.out()
    source = result.source
    head = f"{source.environment}/{source.app} release {source.number} → {result.environment}"
    out.print(f"{head}: {result.message}", markup=False)
    if result.gates:
        out.print("gates:")
        for gate in result.gates:
            out.print(_gate_line(gate))
    if result.changed or result.dry_run:
        current = result.diff.left.number
        what = f"release {current}" if current is not None else "nothing yet"
        out.print(f"what changes in {result.environment} (now {what}):", markup=False)
        for line in _diff_lines(result.diff):
            out.print(line, markup=False)


def approve(
    app: _APP,
    environment: Annotated[
        str,
        typer.Option(
            "--env", "-e", help="The environment it may be promoted into, e.g. production."
        ),
    ],
    release: Annotated[
        int, typer.Option("--release", min=1, help="The release of the environment before.")
    ],
    source: Annotated[
        str | None,
        typer.Option(
            "--from", help="Its environment (default: the one before --env).", show_default=False
        ),
    ] = None,
    note: Annotated[str, typer.Option("--note", "-m", help="Why; kept with the approval.")] = "",
    as_json: context.JsonOption = False,
) -> None:
    """Approve a release for promotion into an environment with `approval: required`.

    The approval names the release's digest and spec, and who approved it and when; `kiln
    promote APP --from … --to …` then passes its approval gate.

    Example:  kiln approve web --env production --release 4 -m "QA signed off"
    """
    key = context.resolve_app(app, environment)
    approval = context.client().approve(
        key.app, environment=key.environment, release=release, source=source, note=note
    )
    if as_json:
        context.print_json(approval.model_dump(mode="json"))
        return
    context.out().print(approval.message, markup=False)


def diff(
    app: _APP,
    left: Annotated[
        int | None, typer.Argument(help="A release number.", show_default=False)
    ] = None,
    right: Annotated[
        int | None, typer.Argument(help="Another release number.", show_default=False)
    ] = None,
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="Compare what APP runs in --env with what it runs here.",
            show_default=False,
        ),
    ] = None,
    as_json: context.JsonOption = False,
    env: context.EnvOption = None,
) -> None:
    """What differs between two releases: image digest and each spec field.

    Examples:  kiln diff web 7 9                         (two releases, in -e ENV)
               kiln diff web --env staging --to production
    """
    if to is not None:
        if left is not None or right is not None:
            raise InvalidInput("give two release numbers or --to ENV, not both")
        key = context.resolve_app(app, env)
        context.resolve_app(key.app, to)
        result = context.client().diff_environments(key.app, key.environment, to)
    else:
        if left is None or right is None:
            raise InvalidInput(
                "give two release numbers (kiln diff web 7 9) or environments "
                "(kiln diff web --env staging --to production)"
            )
        key = context.resolve_app(app, env)
        result = context.client().diff_releases(key, left, right)
    if as_json:
        context.print_json(result.model_dump(mode="json"))
        return
    a, b = result.left, result.right
    out = context.out()
    out.print(
        f"{a.environment}/{a.app} release {a.number} → {b.environment}/{b.app} release {b.number}"
        + (": identical" if result.identical else ""),
        markup=False,
    )
    if not result.identical:
        for line in _diff_lines(result):
            out.print(line, markup=False)
