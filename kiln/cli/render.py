"""Rich renderables for kiln's read commands: tables of apps, instances, releases, events."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from kiln.client import AppStatus, Event, Instance, Release, Rollout

_STATE_STYLE = {
    "running": "green",
    "deploying": "cyan",
    "degraded": "yellow",
    "failed": "red",
    "stopped": "dim",
    "empty": "dim",
}
_SEVERITY_STYLE = {"info": "", "warning": "yellow", "error": "red"}


def ago(when: datetime | None, now: datetime | None = None) -> str:
    if when is None:
        return "-"
    seconds = int(((now or datetime.now(UTC)) - when).total_seconds())
    if seconds < 0:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def short_hash(value: str, length: int = 12) -> str:
    return value.split(":", 1)[-1][:length]


def yes(flag: bool) -> str:
    return "yes" if flag else "-"


def state_text(state: str) -> Text:
    return Text(state, style=_STATE_STYLE.get(state, ""))


def release_pair(status: AppStatus) -> str:
    target = "-" if status.target_release is None else str(status.target_release)
    stable = "-" if status.stable_release is None else str(status.stable_release)
    return target if target == stable else f"{target} (stable {stable})"


def apps_table(apps: Iterable[AppStatus]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("APP", "ENV", "STATE", "RELEASE", "READY", "URLS"):
        table.add_column(column)
    for s in apps:
        table.add_row(
            s.app,
            s.environment,
            state_text(s.state),
            release_pair(s),
            f"{s.ready}/{s.scale}",
            " ".join(s.urls) or "-",
        )
    return table


def instances_table(instances: Iterable[tuple[str, Instance]], *, with_app: bool) -> Table:
    table = Table(box=None, header_style="bold")
    columns = [
        "INSTANCE",
        "RELEASE",
        "STATUS",
        "READY",
        "IN ROUTER",
        "DRAINING",
        "ADDRESS",
        "STARTED",
        "LAST ERROR",
    ]
    for column in ["APP", *columns] if with_app else columns:
        table.add_column(column, overflow="fold")
    for app, i in instances:
        row = [
            i.id,
            str(i.release),
            i.status,
            yes(i.ready),
            yes(i.in_router),
            yes(i.draining),
            i.address or "-",
            ago(i.started_at),
            i.last_error or "-",
        ]
        table.add_row(*([app, *row] if with_app else row))
    return table


def rollout_line(rollout: Rollout, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    origin = f" ← from {rollout.from_release}" if rollout.from_release is not None else ""
    elapsed = int(((rollout.finished_at or now) - rollout.started_at).total_seconds())
    line = f"release {rollout.to_release}{origin} · {rollout.strategy} · {rollout.state}"
    line += f" · {elapsed}s elapsed"
    if not rollout.finished:
        left = int((rollout.deadline_at - now).total_seconds())
        line += f" · deadline in {left}s" if left >= 0 else f" · deadline passed {-left}s ago"
    if rollout.reason:
        line += f" · {rollout.reason}"
    return line


def app_details(s: AppStatus) -> RenderableType:
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("app", str(s.key))
    head.add_row("state", state_text(s.state))
    if s.message:
        head.add_row("why", s.message)
    head.add_row("release", release_pair(s))
    head.add_row("ready", f"{s.ready}/{s.scale}" + (" (stopped)" if s.stopped else ""))
    head.add_row("urls", " ".join(s.urls) or "-")
    head.add_row("rollout", rollout_line(s.rollout) if s.rollout else "none active")
    parts: list[RenderableType] = [head, Text("")]
    if s.instances:
        parts.append(instances_table((("", i) for i in s.instances), with_app=False))
    else:
        parts.append(Text("no instances", style="dim"))
    return Group(*parts)


def origin_text(release: Release) -> str:
    if release.origin == "rollback" and release.rollback_of is not None:
        return f"rollback of {release.rollback_of}"
    return release.origin


def releases_table(releases: Iterable[Release]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("#", "WHEN", "WHO", "IMAGE", "DIGEST", "SPEC", "ORIGIN", "RESULT", "MESSAGE"):
        table.add_column(column, overflow="fold")
    for r in releases:
        result = r.result or "-"
        if r.result_reason and r.result == "failed":
            result = f"failed: {r.result_reason}"
        table.add_row(
            str(r.number),
            ago(r.created_at),
            r.created_by,
            r.image,
            short_hash(r.digest),
            short_hash(r.spec_hash),
            origin_text(r),
            result,
            r.message or "-",
        )
    return table


def event_text(event: Event) -> Text:
    when = event.at.astimezone().strftime("%H:%M:%S")
    where = str(event.key) if event.key else "kiln"
    text = Text(f"{when} {where} ", style="dim")
    text.append(f"{event.kind:<20} ", style="bold")
    text.append(event.reason, style=_SEVERITY_STYLE.get(event.severity, ""))
    return text
