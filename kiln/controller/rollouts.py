"""Commands that steer a rollout — promote, pause, resume, abort, retry — and its read view.

Each command changes the persisted rollout (desired state) and wakes the app's loop; the
rollout machine (``kiln.planning.rollout``) does the rest on its next round. A command that
makes no sense for the rollout at hand is a ``Conflict`` that says what would.
"""

from __future__ import annotations

from dataclasses import replace

from kiln.controller.runtime import ControlPlane
from kiln.controller.views import GroupView, ReleaseTrafficView, RolloutView
from kiln.errors import Conflict
from kiln.model import (
    AppKey,
    EventKind,
    Rollout,
    RolloutKind,
    RolloutProgress,
    RolloutState,
    Severity,
)
from kiln.planning.analysis import window_between
from kiln.planning.params import rollout_params
from kiln.planning.rollout import SHARED_STRATEGIES
from kiln.spec import Strategy

STEERABLE = (Strategy.CANARY, Strategy.BLUE_GREEN)


async def _active(plane: ControlPlane, key: AppKey, verb: str) -> Rollout:
    await plane.require_app(key)
    rollout = await plane.store.active_rollout(key)
    if rollout is None:
        raise Conflict(f"{key} has no rollout in progress to {verb}; `kiln deploy` starts one")
    return rollout


def _steerable(rollout: Rollout, verb: str) -> None:
    if rollout.strategy not in STEERABLE:
        raise Conflict(
            f"the {rollout.strategy.value} rollout of {rollout.key} to release "
            f"{rollout.to_release} moves on by itself; only canary and blue-green rollouts "
            f"can be told to {verb}"
        )


async def _steer(
    plane: ControlPlane, rollout: Rollout, progress: RolloutProgress, kind: EventKind, reason: str
) -> RolloutView:
    """Persist a person's change to the rollout, say so, and let the loop act on it."""
    await plane.store.update_rollout(rollout.id, progress, now=plane.clock())
    plane.events.record(rollout.key, kind, reason, release=rollout.to_release)
    plane.loops.wake(rollout.key)
    return await rollout_view(plane, rollout.key)


async def promote(plane: ControlPlane, key: AppKey, *, full: bool, who: str) -> RolloutView:
    rollout = await _active(plane, key, "promote")
    _steerable(rollout, "promote")
    progress = replace(
        rollout.progress, promote=True, promote_full=full, paused=False, pause_reason=""
    )
    what = "to all traffic" if full or rollout.strategy is Strategy.BLUE_GREEN else "a step"
    return await _steer(
        plane,
        rollout,
        progress,
        EventKind.ROLLOUT_PROMOTED,
        f"{who} promoted release {rollout.to_release} {what}",
    )


async def pause(plane: ControlPlane, key: AppKey, *, who: str) -> RolloutView:
    rollout = await _active(plane, key, "pause")
    _steerable(rollout, "pause")
    if rollout.progress.paused:
        return await rollout_view(plane, key)
    progress = replace(rollout.progress, paused=True, pause_reason=f"paused by {who}")
    return await _steer(
        plane,
        rollout,
        progress,
        EventKind.ROLLOUT_PAUSED,
        f"{who} paused the rollout to release {rollout.to_release}; traffic stays as it is",
    )


async def resume(plane: ControlPlane, key: AppKey, *, who: str) -> RolloutView:
    rollout = await _active(plane, key, "resume")
    _steerable(rollout, "resume")
    if not rollout.progress.paused:
        return await rollout_view(plane, key)
    progress = replace(rollout.progress, paused=False, pause_reason="", inconclusive=0)
    return await _steer(
        plane,
        rollout,
        progress,
        EventKind.ROLLOUT_RESUMED,
        f"{who} resumed the rollout to release {rollout.to_release}",
    )


async def abort(plane: ControlPlane, key: AppKey, *, who: str) -> RolloutView:
    """Traffic back to the stable release at once; a canary or green release stays up (no
    traffic) for inspection until the next deploy."""
    rollout = await _active(plane, key, "abort")
    hold = rollout.from_release is not None and rollout.strategy not in SHARED_STRATEGIES
    back = (
        f"traffic back to release {rollout.from_release}"
        if rollout.from_release
        else "no earlier release: app stopped"
    )
    reason = f"aborted by {who}; {back}" + (
        f"; release {rollout.to_release} kept for inspection until the next deploy" if hold else ""
    )
    await plane.store.finish_rollout(
        rollout.id, RolloutState.ABORTED, reason, now=plane.clock(), hold=hold
    )
    plane.events.record(
        key,
        EventKind.ROLLOUT_ABORTED,
        reason,
        severity=Severity.WARNING,
        release=rollout.to_release,
    )
    plane.loops.wake(key)
    return await rollout_view(plane, key)


async def retry(plane: ControlPlane, key: AppKey, *, who: str) -> RolloutView:
    """Start a failed or aborted rollout again from its first step (same release)."""
    await plane.require_app(key)
    if await plane.store.active_rollout(key) is not None:
        raise Conflict(f"{key} has a rollout in progress; `kiln abort {key.app}` first")
    rollouts = await plane.store.list_rollouts(key)
    last = rollouts[-1] if rollouts else None
    if last is None or last.state not in (RolloutState.FAILED, RolloutState.ABORTED):
        raise Conflict(
            f"{key}'s last rollout did not fail or get aborted: nothing to retry; "
            "`kiln deploy` starts a new one"
        )
    release = await plane.store.get_release(key, last.to_release)
    rollout = await plane.store.start_rollout(
        key,
        to_release=release.number,
        strategy=release.spec.deploy.strategy,
        kind=RolloutKind.RETRY,
        deadline_seconds=release.spec.deploy.deadline,
        now=plane.clock(),
    )
    plane.events.record(
        key,
        EventKind.ROLLOUT_STARTED,
        f"{who} retried the {rollout.strategy.value} rollout to release {release.number} "
        "from its first step",
        release=release.number,
    )
    plane.loops.wake(key)
    return await rollout_view(plane, key)


async def rollout_view(plane: ControlPlane, key: AppKey) -> RolloutView:
    app = await plane.require_app(key)
    active = await plane.store.active_rollout(key)
    rollout = active
    if rollout is None:
        history = await plane.store.list_rollouts(key)
        rollout = history[-1] if history else None
    plan = plane.last_plans.get(key)
    memory = plane.observer.memory.get(key)
    ready: dict[int, int] = {}
    await plane.load_releases(plane.last_instances.get(key, []))
    for instance in plane.last_instances.get(key, []):
        if instance.running and plane.health_of(instance).ready:
            ready[instance.release] = ready.get(instance.release, 0) + 1
    groups = [
        GroupView(
            release=g.number,
            role=g.role.value,
            size=g.size,
            share=g.share,
            ready=ready.get(g.number, 0),
            preview=g.preview,
        )
        for g in (plan.groups if plan else ())
    ]
    traffic: list[ReleaseTrafficView] = []
    if memory is not None and memory.window_start is not None and memory.traffic is not None:
        current = memory.traffic
        for number in sorted(current):
            window = window_between(memory.window_start.get(number), current.get(number))
            traffic.append(
                ReleaseTrafficView(
                    release=number,
                    requests=window.requests,
                    errors=window.errors,
                    error_rate=window.error_rate,
                    p95_ms=window.quantile_ms(0.95),
                )
            )
    steps: list[int] = []
    if rollout is not None:
        release = await plane.release_or_none(key, rollout.to_release)
        if release is not None and release.spec.deploy.strategy is Strategy.CANARY:
            # The planner's steps: a canary without `steps:` runs the default ones.
            steps = [s.weight for s in rollout_params(release.spec.deploy).steps]
    status = plan.summary if plan and active else (rollout.reason if rollout else "no rollout yet")
    return RolloutView(
        key=key,
        rollout=rollout,
        active=active is not None,
        status=status,
        steps=steps,
        groups=groups,
        traffic=traffic,
        warm_release=app.warm_release,
        warm_until=app.warm_until,
        held_release=app.held_release,
    )
