"""Watching a rollout until it ends: a live view on a terminal, plain event lines otherwise.

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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from kiln.cli.render import event_text, instances_table, rollout_line
from kiln.client import AppStatus, Event, KilnClient, Rollout
from kiln.model import AppKey

POLL_SECONDS = 0.2
PATIENCE = timedelta(seconds=60)  # past the rollout's own deadline, the server should have ended it
FIRST_SIGHT_SECONDS = 30.0  # a rollout that never shows up in status or releases


@dataclass(frozen=True)
class Outcome:
    state: str  # succeeded | failed | superseded | gave_up
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
