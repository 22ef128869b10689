"""Rich renderables for kiln's read commands: tables of apps, instances, releases, events,
and the rollout view."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from kiln.client import AppStatus, Event, Instance, Release, Rollout, RolloutView
from kiln.client import Group as ReleaseGroup

_STATE_STYLE = {
    "running": "green",
    "deploying": "cyan",
    "degraded": "yellow",
    "failed": "red",
    "stopped": "dim",
    "empty": "dim",
}
_SEVERITY_STYLE = {"info": "", "warning": "yellow", "error": "red"}
_ROLLOUT_STYLE = {
    "in_progress": "cyan",
    "succeeded": "green",
    "failed": "red",
    "aborted": "red",
    "superseded": "yellow",
}
_KIND_TEXT = {
    "retry": "retry: a failed or aborted rollout again from its first step",
    "switch_back": "switch back: traffic returns to the warm release, no new instances",
}
_VERDICT_STYLE = {"pass": "green", "fail": "red", "inconclusive": "yellow"}
STEERED_STRATEGIES = ("canary", "blue-green")  # what promote, pause and resume steer


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


def app_details(s: AppStatus, *, rollout_status: str | None = None) -> RenderableType:
    """``rollout_status``: the server's one-line rollout status (step, weights), if fetched."""
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
    if s.quiet:
        head.add_row(
            "traffic", "none lately: health checks every idle_interval until requests come"
        )
    head.add_row("rollout", rollout_line(s.rollout) if s.rollout else "none active")
    if rollout_status:
        head.add_row("step", rollout_status)
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


# --- the rollout view (kiln rollout status) ------------------------------------------------


def steps_text(view: RolloutView) -> Text:
    """Where the rollout is on its way: ``10% → [50%] → 100%`` for a canary, ``preview →
    promoted`` for a blue-green; the current step is bold and bracketed."""
    rollout = view.rollout
    text = Text()
    if rollout is None:
        return text
    if rollout.strategy == "canary" and view.steps:
        labels = [f"{w}%" for w in view.steps] + ["100%"]
    elif rollout.strategy == "blue-green":
        labels = ["preview", "promoted"]
    else:
        return text
    current = min(rollout.step, len(labels) - 1)
    done = rollout.state == "succeeded"
    for i, label in enumerate(labels):
        if i:
            text.append(" → ", style="dim")
        if i == current and not rollout.finished:
            text.append(f"[{label}]", style="bold cyan")
        elif i < current or done:
            text.append(label)
        else:
            text.append(label, style="dim")
    return text


def verdict_text(verdict: str) -> Text:
    kind = verdict.partition(":")[0].strip()
    return Text(verdict, style=_VERDICT_STYLE.get(kind, ""))


def _percent(share: int | None) -> str:
    return "pool" if share is None else f"{share}%"


def rollout_traffic_table(view: RolloutView) -> Table:
    """One row per release: its group (role, share, ready/size) and its requests in the
    current analysis window."""
    table = Table(box=None, header_style="bold")
    for column in ("RELEASE", "ROLE", "SHARE", "READY", "REQUESTS", "ERRORS", "ERROR RATE", "P95"):
        table.add_column(column, justify="left" if column in ("RELEASE", "ROLE") else "right")
    traffic = {t.release: t for t in view.traffic}
    rows: list[tuple[int, ReleaseGroup | None]] = [(g.release, g) for g in view.groups]
    rows += [(number, None) for number in sorted(set(traffic) - {g.release for g in view.groups})]
    for number, group in rows:
        t = traffic.get(number)
        role = "-" if group is None else group.role + (" (preview)" if group.preview else "")
        ready = "-"
        if group is not None:
            ready = f"{group.ready}/{group.size}" if group.size is not None else str(group.ready)
        table.add_row(
            str(number),
            role,
            "-" if group is None else _percent(group.share),
            ready,
            str(t.requests) if t else "-",
            str(t.errors) if t else "-",
            f"{t.error_rate:.2%}" if t else "-",
            f"{t.p95_ms:.0f} ms" if t and t.p95_ms is not None else "-",
        )
    return table


def rollout_details(view: RolloutView, now: datetime | None = None) -> RenderableType:
    """``kiln rollout status APP``: the rollout, its step, verdicts, groups and traffic."""
    now = now or datetime.now(UTC)
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("app", str(view.key))
    rollout = view.rollout
    if rollout is None:
        head.add_row("rollout", Text("none yet — `kiln deploy` starts one", style="dim"))
        return head
    head.add_row(
        "rollout", Text(rollout_line(rollout, now), style=_ROLLOUT_STYLE.get(rollout.state, ""))
    )
    if rollout.kind in _KIND_TEXT:
        head.add_row("kind", _KIND_TEXT[rollout.kind])
    if view.status and view.status != rollout.reason:
        head.add_row("now", view.status)
    steps = steps_text(view)
    if steps:
        head.add_row("steps", steps)
    if rollout.paused:
        head.add_row("paused", Text(rollout.pause_reason or "paused", style="yellow"))
    if rollout.promote_requested:
        head.add_row("promote", "requested; the next round moves the traffic")
    if rollout.windows or rollout.last_verdict:
        verdict = verdict_text(rollout.last_verdict or "no verdict yet")
        verdict.append(
            f"  ({rollout.windows} window(s) judged; in a row: {rollout.failing} failing, "
            f"{rollout.inconclusive} inconclusive)",
            style="dim",
        )
        head.add_row("last window", verdict)
    if view.warm_release is not None:
        until = ""
        if view.warm_until is not None:
            left = int((view.warm_until - now).total_seconds())
            local = view.warm_until.astimezone().strftime("%H:%M:%S")
            until = f" until {local} ({left}s left)" if left >= 0 else f" (window ended {local})"
        head.add_row(
            "warm",
            f"release {view.warm_release}{until}: `kiln rollback {view.key}` switches back",
        )
    if view.held_release is not None:
        head.add_row(
            "held",
            f"release {view.held_release}: no traffic, kept for inspection until the next deploy",
        )
    parts: list[RenderableType] = [head, Text("")]
    if view.groups or view.traffic:
        parts.append(rollout_traffic_table(view))
    else:
        parts.append(Text("no release groups planned yet", style="dim"))
    return Group(*parts)
