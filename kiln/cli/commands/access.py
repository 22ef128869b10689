"""``kiln token create|ls|revoke`` and ``kiln audit``: who may do what, and who did what.

Both need an admin token (the home's token file is one).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from kiln.cli import context
from kiln.errors import InvalidInput

HELP = """Manage API tokens: admin (everything), deployer (deploy, steer, secrets), viewer (read).

A deployer or viewer can be limited to environments with --env. Needs an admin token.
"""

ROLES = ("admin", "deployer", "viewer")


def create(
    name: Annotated[str, typer.Argument(help="A name for the token, e.g. ci-staging.")],
    role: Annotated[
        str, typer.Option("--role", "-r", help="admin, deployer or viewer.", show_default=False)
    ],
    environments: Annotated[
        list[str] | None,
        typer.Option(
            "--env",
            "-e",
            help="Only in this environment (repeat for more); default every one. "
            "Not for admin tokens.",
        ),
    ] = None,
    as_json: context.JsonOption = False,
) -> None:
    """Create an API token; it is printed once (kiln keeps only a hash of it).

    Examples:  kiln token create ci-staging --role deployer --env staging
               kiln token create dashboard --role viewer
    """
    if role not in ROLES:
        raise InvalidInput(f"--role must be one of {', '.join(ROLES)}, got {role!r}")
    made = context.client().create_token(name, role=role, environments=list(environments or []))
    if as_json:
        context.print_json(made.model_dump(mode="json"))
        return
    scope = ", ".join(made.environments) or "every environment"
    err = context.err()
    err.print(f"token {made.name}: {made.role} for {scope}", markup=False)
    err.print(
        "It is shown this once; give it to its user as KILN_TOKEN (kiln keeps only a hash).",
        markup=False,
    )
    context.out().print(made.token, markup=False, highlight=False, soft_wrap=True)


def ls(
    revoked: Annotated[bool, typer.Option("--revoked", help="Show revoked tokens too.")] = False,
    as_json: context.JsonOption = False,
) -> None:
    """List API tokens: name, role, environments, who made them (never the tokens).

    Example:  kiln token ls
    """
    tokens = context.client().list_tokens(revoked=revoked)
    if as_json:
        context.print_json([t.model_dump(mode="json") for t in tokens])
        return
    from rich.table import Table
    from rich.text import Text

    from kiln.cli.render import ago

    table = Table(box=None, pad_edge=False)
    for column in ("NAME", "ROLE", "ENVIRONMENTS", "CREATED", "BY", "REVOKED"):
        table.add_column(column)
    for t in tokens:
        table.add_row(
            *(
                Text(cell)
                for cell in (
                    t.name,
                    t.role,
                    ", ".join(t.environments) or "every",
                    ago(t.created_at),
                    t.created_by,
                    ago(t.revoked_at) if t.revoked_at else "",
                )
            )
        )
    context.out().print(table)


def revoke(
    name: Annotated[str, typer.Argument(help="The token's name (kiln token ls).")],
    as_json: context.JsonOption = False,
) -> None:
    """Revoke an API token: it stops working at once.

    Example:  kiln token revoke ci-staging
    """
    token = context.client().revoke_token(name)
    if as_json:
        context.print_json(token.model_dump(mode="json"))
        return
    context.out().print(f"token {token.name} revoked; it no longer works", markup=False)


_AT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``30m``, ``2h``, ``7d`` ago, or a date / date and time (``2026-12-01``,
    ``2026-12-01T09:30``; no zone: UTC)."""
    value = text.strip()
    if _AT.match(value):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError as exc:
            raise InvalidInput(f"--since {text!r} is not a date and time: {exc}") from exc
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if value.endswith("d") and value[:-1].isdigit():
        seconds = int(value[:-1]) * 86_400.0
    else:
        from kiln.spec.units import parse_duration

        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise InvalidInput(
                f"--since {text!r}: give a time ago (30m, 2h, 7d) or a date (2026-12-01)"
            ) from exc
    return (now or datetime.now(UTC)) - timedelta(seconds=seconds)


def audit(
    app: Annotated[
        str | None, typer.Option("--app", "-a", help="Only this app (APP or ENV/APP).")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only entries since: 30m, 2h, 7d ago, or a date."),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, max=1000, help="How many entries at most.")
    ] = 50,
    env: context.EnvOption = None,
    as_json: context.JsonOption = False,
) -> None:
    """Show the audit log: every change made through the API and every refused call.

    Who (the token, and the OS user on the local socket), what, when, from where, the
    answer, the release it made. Needs an admin token.

    Examples:  kiln audit          kiln audit --app staging/web --since 2h          kiln audit --json
    """
    environment, name = None, None
    if app:
        key = context.resolve_app(app, env)
        environment, name = key.environment, key.app
    elif env:
        environment = env
    entries = context.client().audit(
        environment=environment,
        app=name,
        since=parse_since(since) if since else None,
        limit=limit,
    )
    if as_json:
        context.print_json([e.model_dump(mode="json") for e in entries])
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False)
    for column in ("WHEN", "TOKEN", "FROM", "CALL", "APP", "STATUS", "RELEASE", "DETAIL"):
        table.add_column(column)
    for e in entries:
        where = f"{e.environment}/{e.app}" if e.app else (e.environment or "")
        style = "" if e.outcome == "ok" else "red" if e.outcome == "refused" else "yellow"
        # Text, not markup: paths, claims and messages come from callers.
        table.add_row(
            Text(e.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")),
            Text(e.token or "(none)"),
            Text(e.peer + (f" ({e.claimed})" if e.claimed else "")),
            Text(f"{e.method} {e.path}"),
            Text(where),
            Text(f"{e.status} {e.outcome}", style=style),
            Text(str(e.release) if e.release is not None else ""),
            Text(e.detail),
        )
    context.out().print(table)
