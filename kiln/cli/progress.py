"""Watching a rollout until it ends: a live view on a terminal, plain event lines otherwise.

``watch_rollout`` follows a deploy's rollout through the app's status (instances);
``follow_rollout`` follows ``kiln rollout status -f`` through the rollout view (step, groups,
traffic, verdicts). Both poll at a bounded rate and stop when the rollout ends.

    every ~0.2 s:  GET status  +  GET events after the last one seen
                      │                    │
                      ▼                    ▼
          header + instances table     event lines (below the table, or printed as they come)
                      │
          rollout finished? ─▶ Outcome (succeeded / failed / superseded / gave_up)

Events are polled in the same loop rather than followed over SSE: a synchronous CLI would need
a thread per stream that it cannot interrupt cleanly, and one more local request per tick is free.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from kiln.cli.render import event_text, instances_table, rollout_details, rollout_line
from kiln.client import AppStatus, Event, KilnClient, Rollout, RolloutView
from kiln.model import AWAITS_PROMOTE, AppKey

POLL_SECONDS = 0.2
VIEW_POLL_SECONDS = 0.5  # the rollout view moves at the pace of reconcile rounds, not faster
PATIENCE = timedelta(seconds=60)  # past the rollout's own deadline, the server should have ended it
FIRST_SIGHT_SECONDS = 30.0  # a rollout that never shows up in status or releases


@dataclass(frozen=True)
class Outcome:
    state: str  # succeeded | failed | superseded | gave_up | waiting (for `kiln promote`)
    reason: str
    status: AppStatus | None


def watch_rollout(
    kiln: KilnClient,
    key: AppKey,
    release: int,
    *,
    after_event: int,
    console: Console | None,
    live: bool,
) -> Outcome:
    """Poll until the rollout to ``release`` ends. ``console`` None: watch silently (--json)."""
    recent: deque[Event] = deque(maxlen=10)
    last_event = after_event
    seen: Rollout | None = None
    started = time.monotonic()

    def tick() -> tuple[AppStatus, Outcome | None]:
        nonlocal last_event, seen
        status = kiln.status(key)
        for event in kiln.events(key=key, after=last_event, limit=200):
            if event.id <= last_event:
                continue
            last_event = event.id
            recent.append(event)
            if console is not None and not live:
                console.print(event_text(event))
        rollout = (
            status.rollout if status.rollout and status.rollout.to_release == release else None
        )
        if rollout is not None:
            seen = rollout
            if rollout.finished:
                return status, Outcome(rollout.state, rollout.reason, status)
            if rollout.paused or AWAITS_PROMOTE in status.message:
                # A person decides the rest: stop watching, say how to go on.
                why = rollout.pause_reason or "paused" if rollout.paused else AWAITS_PROMOTE
                return status, Outcome("waiting", why, status)
            return status, None
        # The server shows only the active rollout; once it is gone, the release says how it ended.
        outcome = _outcome_from_releases(kiln, key, release, status)
        if outcome is None and _gave_up(seen, started):
            outcome = Outcome("gave_up", "the rollout did not end in time", status)
        return status, outcome

    if console is None or not live:
        while True:
            _, outcome = tick()
            if outcome is not None:
                return outcome
            time.sleep(POLL_SECONDS)

    with Live(console=console, refresh_per_second=8, transient=False) as view:
        while True:
            status, outcome = tick()
            view.update(rollout_view(key, release, status, seen, list(recent)))
            if outcome is not None:
                return outcome
            time.sleep(POLL_SECONDS)


def _outcome_from_releases(
    kiln: KilnClient, key: AppKey, release: int, status: AppStatus
) -> Outcome | None:
    for r in kiln.releases(key):
        if r.number != release:
            continue
        if r.result in ("succeeded", "current"):
            return Outcome("succeeded", r.result_reason, status)
        if r.result in ("failed", "superseded"):
            return Outcome(r.result, r.result_reason, status)
    return None


def _gave_up(seen: Rollout | None, started: float) -> bool:
    if seen is None:
        return time.monotonic() - started > FIRST_SIGHT_SECONDS
    if seen.strategy in ("canary", "blue-green"):
        return False  # steps and pauses may outlast the deadline; the server ends these itself
    return datetime.now(UTC) > seen.deadline_at + PATIENCE


def rollout_view(
    key: AppKey,
    release: int,
    status: AppStatus,
    rollout: Rollout | None,
    events: list[Event],
) -> RenderableType:
    header = Text(f"{key} ", style="bold")
    header.append(rollout_line(rollout) if rollout else f"release {release}")
    summary = Text(f"ready {status.ready}/{status.scale} · {status.state}", style="dim")
    if status.message:
        summary.append(f" · {status.message}")
    parts: list[RenderableType] = [header, summary, Text("")]
    if status.instances:
        parts.append(instances_table((("", i) for i in status.instances), with_app=False))
    else:
        parts.append(Text("no instances yet", style="dim"))
    parts.append(Text(""))
    parts.extend(event_text(e) for e in events)
    return Group(*parts)


@dataclass(frozen=True)
class RolloutEnd:
    state: str  # succeeded | failed | aborted | superseded | none (no rollout at all)
    reason: str
    view: RolloutView


def follow_rollout(
    kiln: KilnClient,
    key: AppKey,
    *,
    console: Console | None,
    live: bool,
    on_view: Callable[[RolloutView], None] | None = None,
) -> RolloutEnd:
    """Poll the rollout view until the rollout in progress ends (at once if none is).

    ``live``: one Rich Live view on ``console``; otherwise the view is printed once and then a
    line for every change of the status line and every event. ``console`` None: silent, but
    ``on_view`` gets every view that differs from the one before (``--json``).
    """
    last_event = kiln.last_event_id(key)
    view = kiln.rollout_status(key)
    watched = view.rollout
    if on_view is not None:
        on_view(view)
    if console is not None and not live:
        console.print(rollout_details(view))
    if watched is None or not view.active:
        if console is not None and live:
            console.print(rollout_details(view))
        return _end_of(kiln, key, watched, view)
    recent: deque[Event] = deque(maxlen=8)
    last_seen, last_status = view, view.status

    def poll() -> tuple[RolloutView, RolloutEnd | None]:
        nonlocal last_event, last_seen, last_status
        current = kiln.rollout_status(key)
        for event in kiln.events(key=key, after=last_event, limit=200):
            if event.id <= last_event:
                continue
            last_event = event.id
            recent.append(event)
            if console is not None and not live:
                console.print(event_text(event))
        if on_view is not None and current != last_seen:
            on_view(current)
        last_seen = current
        if console is not None and not live and current.active and current.status != last_status:
            last_status = current.status
            console.print(
                Text(f"{datetime.now():%H:%M:%S} {key} now: {current.status}", style="dim")
            )
        if current.active and current.rollout is not None and current.rollout.id == watched.id:
            return current, None
        return current, _end_of(kiln, key, watched, current)

    if console is None or not live:
        while True:
            time.sleep(VIEW_POLL_SECONDS)
            _, end = poll()
            if end is not None:
                return end

    with Live(
        rollout_details(view), console=console, refresh_per_second=4, transient=False
    ) as screen:
        while True:
            time.sleep(VIEW_POLL_SECONDS)
            current, end = poll()
            screen.update(Group(rollout_details(current), Text(""), *map(event_text, recent)))
            if end is not None:
                return end


def _end_of(
    kiln: KilnClient, key: AppKey, watched: Rollout | None, view: RolloutView
) -> RolloutEnd:
    """How the ``watched`` rollout ended, seen in ``view`` (the latest rollout)."""
    if watched is None:
        return RolloutEnd("none", view.status, view)
    latest = view.rollout
    if latest is not None and latest.id == watched.id:
        return RolloutEnd(latest.state, latest.reason, view)
    # A newer rollout (a deploy, a retry) took its place between two polls: the release says
    # whether ours got to the end first.
    for release in kiln.releases(key):
        if release.number == watched.to_release and release.result in ("succeeded", "current"):
            return RolloutEnd("succeeded", release.result_reason, view)
    newer = f" (release {latest.to_release})" if latest is not None else ""
    return RolloutEnd("superseded", f"a newer rollout{newer} took its place", view)
