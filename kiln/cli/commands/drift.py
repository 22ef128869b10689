"""``kiln drift [APP]``: check running instances against their releases now."""

from __future__ import annotations

from typing import Annotated

import typer

from kiln.cli import context
from kiln.cli.exit_codes import ExitCode


def drift(
    app: Annotated[
        str | None, typer.Argument(help="APP or ENV/APP; omit for every app.", show_default=False)
    ] = None,
    as_json: context.JsonOption = False,
    env: context.EnvOption = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Exit 3 when anything drifted, is unowned or missing (for scripts)."
        ),
    ] = False,
) -> None:
    """Compare every running instance with its release, now: image, configuration (env,
    command, mounts, limits, labels) and files changed outside the writable paths (tmpfs).

    kiln also checks on its own every 30 s (settings.yaml: drift: {interval: 30}). An app with
    `drift: replace` (the default) has a drifted instance replaced through the normal drain
    path; `drift: report` only reports it. Containers with kiln's labels that no release owns
    are removed; missing instances are started again.

    Examples:  kiln drift          kiln drift web --json          kiln drift --check
    """
    key = context.resolve_app(app, env) if app is not None else None
    report = context.client().drift(key)
    if as_json:
        context.print_json(report.model_dump(mode="json"))
    elif not report.findings:
        where = f"{key}" if key is not None else "every app"
        context.out().print(
            f"no drift: {report.checked} running instance(s) of {where} match their releases"
        )
    else:
        from rich.table import Table

        table = Table(box=None, pad_edge=False)
        for column in ("APP", "KIND", "INSTANCE", "RELEASE", "ACTION", "WHAT"):
            table.add_column(column, overflow="fold")
        for finding in report.findings:
            table.add_row(
                str(finding.key),
                finding.kind,
                finding.instance or "-",
                str(finding.release) if finding.release is not None else "-",
                finding.action,
                "; ".join(finding.details),
            )
        context.out().print(table)
    if check and report.findings:
        raise typer.Exit(ExitCode.ROLLOUT_FAILED)
