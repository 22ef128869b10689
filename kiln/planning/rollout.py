"""The rollout machine: an app's releases and rollout → release groups, for one round. Pure.

    steady ─────────────▶ [stable 100%] (+ [warm 0%] inside the rollback window) (+ [held])
    rolling / recreate ─▶ [next] [stable]  one pool; the instance planner moves capacity
    canary, step i ─────▶ [stable 100-w%] [canary w%]  stable keeps its full size
        step ready (capacity up) → pause → (analysis passed) → step i+1 … → promote:
        canary grows to full size, then takes 100% → SUCCEEDED; old release warm
    blue-green ─────────▶ [stable 100%] [green 0%, preview]
        green ready → `kiln promote` or auto_promote_after → [green 100%] → SUCCEEDED; old warm

Failures (the step's capacity not ready within the deadline, a crash loop, analysis) close the
rollout FAILED: traffic goes back to the stable release at once and the new release is held
for inspection. Time is an argument; the machine's memory is the persisted ``RolloutProgress``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from kiln.model import (
    AWAITS_PROMOTE,
    EventKind,
    FinishRollout,
    GroupRole,
    ObservedApp,
    Release,
    ReleaseGroup,
    Rollout,
    RolloutKind,
    RolloutProgress,
    RolloutState,
    UpdateRollout,
    Wait,
)
from kiln.planning.analysis import VerdictKind, judge, window_between
from kiln.planning.inputs import DesiredApp
from kiln.planning.params import RolloutParams, rollout_params
from kiln.spec import Strategy

SHARED_STRATEGIES = frozenset({Strategy.ROLLING, Strategy.RECREATE})
"""Strategies whose releases share one pool of peers (no exact shares)."""


@dataclass(frozen=True, kw_only=True)
class RolloutDecision:
    groups: tuple[ReleaseGroup, ...]
    update: UpdateRollout | None = None
    finish: FinishRollout | None = None
    waits: tuple[Wait, ...] = ()
    status: str = ""  # what the rollout is doing, for `kiln status` / `kiln rollout status`
    window_closed: bool = False  # an analysis window was judged: start the next one now
    shared_pool: bool = False  # rolling/recreate: the instance planner moves capacity itself
    pool_target: int | None = None  # shared pool: the release it converges to (the target)
    analysing: bool = False  # the rollout is judged on its traffic (the router's counters)

    def group_of(self, release: int) -> ReleaseGroup | None:
        for group in self.groups:
            if group.number == release:
                return group
        return None


def decide(
    desired: DesiredApp,
    *,
    ready: Mapping[int, int],
    alive: Mapping[int, int],
    observed: ObservedApp,
    now: datetime,
) -> RolloutDecision:
    """The groups of ``desired`` for this round; ``ready`` and ``alive`` count live instances
    per release (ready ones, and all)."""
    extra = _kept_groups(desired, now)
    target = desired.target
    rollout = desired.rollout
    if target is None:
        return RolloutDecision(groups=extra.groups, waits=extra.waits)
    active = (
        rollout is not None and not rollout.state.finished and rollout.to_release == target.number
    )
    if not active or desired.stopped:
        return _steady(desired, target, extra)
    assert rollout is not None
    params = rollout_params(target.spec.deploy)
    stable = desired.stable if desired.stable and desired.stable.number != target.number else None
    if rollout.kind is RolloutKind.SWITCH_BACK or (
        stable is None and params.strategy not in SHARED_STRATEGIES
    ):
        return _switch(desired, rollout, target, stable, params, ready, now, extra)
    if params.strategy in SHARED_STRATEGIES:
        groups = [ReleaseGroup(release=target, role=GroupRole.NEXT, size=desired.scale, share=None)]
        if stable is not None:
            groups.append(
                ReleaseGroup(release=stable, role=GroupRole.STABLE, size=desired.scale, share=None)
            )
        return RolloutDecision(
            groups=(*groups, *extra.groups),
            waits=extra.waits,
            shared_pool=True,
            pool_target=target.number,
        )
    assert stable is not None
    leftovers = set(alive) - {target.number, stable.number} - {g.number for g in extra.groups}
    if leftovers and ready.get(stable.number, 0) < desired.scale:
        # A superseded rollout left other releases serving: bring the stable release back to
        # full size first (a rolling move, no capacity cliff), then start this rollout.
        return RolloutDecision(
            groups=(
                ReleaseGroup(release=stable, role=GroupRole.STABLE, size=desired.scale, share=None),
                *extra.groups,
            ),
            waits=extra.waits,
            shared_pool=True,
            pool_target=stable.number,
            status=(
                f"{params.strategy.value}: release {stable.number} first gets back to "
                f"{desired.scale} ready instance(s) ({ready.get(stable.number, 0)} now)"
            ),
        )
    if params.strategy is Strategy.BLUE_GREEN:
        return _blue_green(desired, rollout, target, stable, params, ready, now, extra)
    return _canary(desired, rollout, target, stable, params, ready, observed, now, extra)


@dataclass(frozen=True)
class _Kept:
    groups: tuple[ReleaseGroup, ...]
    waits: tuple[Wait, ...]
    warm: Release | None


def _kept_groups(desired: DesiredApp, now: datetime) -> _Kept:
    """The warm release inside its window and the held one: kept, no traffic, not replaced."""
    groups: list[ReleaseGroup] = []
    waits: list[Wait] = []
    current = {r.number for r in (desired.target, desired.stable) if r is not None}
    warm = desired.warm
    if (
        warm is not None
        and desired.warm_until is not None
        and now < desired.warm_until
        and warm.number not in current
        and not desired.stopped
    ):
        groups.append(ReleaseGroup(release=warm, role=GroupRole.WARM, size=None, share=0))
        waits.append(
            Wait(
                reason=f"release {warm.number} kept warm for a rollback until "
                f"{desired.warm_until:%H:%M:%S}",
                until=desired.warm_until,
                kind="window",
            )
        )
    else:
        warm = None
    held = desired.held
    if (
        held is not None
        and held.number not in current
        and (warm is None or held.number != warm.number)
    ):
        groups.append(
            ReleaseGroup(release=held, role=GroupRole.HELD, size=None, share=0, routable=False)
        )
    return _Kept(groups=tuple(groups), waits=tuple(waits), warm=warm)


def _steady(desired: DesiredApp, target: Release, extra: _Kept) -> RolloutDecision:
    share = 100 if extra.warm is not None else None
    groups = (
        ReleaseGroup(release=target, role=GroupRole.STABLE, size=desired.wanted, share=share),
        *extra.groups,
    )
    return RolloutDecision(
        groups=groups, waits=extra.waits, shared_pool=share is None, pool_target=target.number
    )


def _switch(
    desired: DesiredApp,
    rollout: Rollout,
    target: Release,
    stable: Release | None,
    params: RolloutParams,
    ready: Mapping[int, int],
    now: datetime,
    extra: _Kept,
) -> RolloutDecision:
    """All at once: the target at full size; it takes all traffic once every instance is ready
    (a switch back to a warm release, or a first deploy with an exact-share strategy)."""
    size = desired.scale
    others = tuple(g for g in extra.groups if g.number != target.number)
    if ready.get(target.number, 0) >= size:
        warm_until = _window_end(params, now) if stable is not None else None
        groups = [ReleaseGroup(release=target, role=GroupRole.STABLE, size=size, share=100)]
        if stable is not None:
            groups.append(ReleaseGroup(release=stable, role=GroupRole.WARM, size=None, share=0))
        return RolloutDecision(
            groups=(*groups, *others),
            finish=FinishRollout(
                rollout_id=rollout.id,
                state=RolloutState.SUCCEEDED,
                reason=f"release {target.number} takes all traffic: {size}/{size} ready"
                + (
                    f"; release {stable.number} stays warm for {params.rollback_window:g}s"
                    if stable is not None and warm_until is not None
                    else ""
                ),
                warm_until=warm_until,
            ),
        )
    groups = [ReleaseGroup(release=target, role=GroupRole.GREEN, size=size, share=0, preview=True)]
    if stable is not None:
        groups.append(ReleaseGroup(release=stable, role=GroupRole.STABLE, size=None, share=100))
    else:
        groups[0] = replace(groups[0], share=100, preview=False, role=GroupRole.NEXT)
    return RolloutDecision(
        groups=(*groups, *others),
        waits=extra.waits,
        status=f"waiting for release {target.number}: {ready.get(target.number, 0)}/{size} ready",
        finish=_capacity_deadline(
            desired, rollout, target, rollout.progress, params, now, ready, size
        ),
    )


def _blue_green(
    desired: DesiredApp,
    rollout: Rollout,
    target: Release,
    stable: Release,
    params: RolloutParams,
    ready: Mapping[int, int],
    now: datetime,
    extra: _Kept,
) -> RolloutDecision:
    size = desired.scale
    progress = rollout.progress
    update: RolloutProgress | None = None
    event = ""
    if progress.step_entered_at is None:
        progress = update = replace(progress, step_entered_at=now)
    green_ready = ready.get(target.number, 0) >= size
    if green_ready and progress.step_ready_at is None:
        progress = update = replace(progress, step_ready_at=now)
        event = (
            f"release {target.number} is ready beside release {stable.number}: preview it with "
            f"the X-Kiln-Preview: 1 header; "
            + (
                f"it takes all traffic in {params.auto_promote_after:g}s"
                if params.auto_promote_after is not None
                else "`kiln promote` switches all traffic to it"
            )
        )
    waits: list[Wait] = list(extra.waits)
    promote = False
    if green_ready and progress.step_ready_at is not None and not progress.paused:
        if progress.promote or progress.promote_full:
            promote = True
        elif params.auto_promote_after is not None:
            at = progress.step_ready_at + timedelta(seconds=params.auto_promote_after)
            if now >= at:
                promote = True
            else:
                waits.append(
                    Wait(
                        reason=f"promoting release {target.number} at {at:%H:%M:%S}",
                        until=at,
                        kind="step",
                    )
                )
    others = tuple(g for g in extra.groups if g.number not in (target.number, stable.number))
    if promote:
        return _promoted(rollout, target, stable, others, params, size, now, what="release")
    if green_ready:
        status = f"blue-green: release {target.number} ready on preview ({size}/{size}); " + (
            "paused"
            if progress.paused
            else AWAITS_PROMOTE
            if params.auto_promote_after is None
            else "promoting soon"
        )
    else:
        status = f"blue-green: starting release {target.number} ({ready.get(target.number, 0)}/{size} ready)"
    return RolloutDecision(
        groups=(
            ReleaseGroup(release=stable, role=GroupRole.STABLE, size=size, share=100),
            ReleaseGroup(release=target, role=GroupRole.GREEN, size=size, share=0, preview=True),
            *others,
        ),
        update=_update(rollout, update, event, kind=EventKind.ROLLOUT_STEP),
        finish=None
        if green_ready
        else _capacity_deadline(desired, rollout, target, progress, params, now, ready, size),
        waits=tuple(waits),
        status=status,
    )


def _canary(
    desired: DesiredApp,
    rollout: Rollout,
    target: Release,
    stable: Release,
    params: RolloutParams,
    ready: Mapping[int, int],
    observed: ObservedApp,
    now: datetime,
    extra: _Kept,
) -> RolloutDecision:
    scale = desired.scale
    steps = params.steps
    last = len(steps)
    progress = rollout.progress
    update: RolloutProgress | None = None
    events: list[str] = []
    kind = EventKind.ROLLOUT_STEP  # a judged window makes the note a verdict
    warning = False
    if progress.step_entered_at is None:
        progress = update = replace(progress, step_entered_at=now)
    step = min(progress.step, last)
    promoting = step >= last
    weight = steps[step].weight if not promoting else (steps[-1].weight if steps else 0)
    size = scale if promoting else _canary_size(params, scale, weight)
    ready_new = ready.get(target.number, 0)
    capacity_ready = ready_new >= size
    share = weight if ready_new > 0 else 0
    others = tuple(g for g in extra.groups if g.number not in (target.number, stable.number))
    waits: list[Wait] = list(extra.waits)

    if promoting and capacity_ready:
        return _promoted(rollout, target, stable, others, params, scale, now, what="canary release")

    if capacity_ready and progress.step_ready_at is None:
        progress = update = replace(progress, step_ready_at=now)
        if not promoting:
            pause = steps[step].pause
            events.append(
                f"canary step {step + 1}/{last}: release {target.number} takes {weight}% of "
                "requests, "
                + (
                    f"next step in {pause:g}s"
                    if pause is not None
                    else "waiting for `kiln promote`"
                )
            )

    # Analysis: judge the window that just ended, while the canary takes traffic.
    window_closed = False
    rules = params.analysis
    if (
        rules is not None
        and share > 0
        and observed.traffic is not None
        and observed.window_started_at is not None
    ):
        elapsed = (now - observed.window_started_at).total_seconds()
        if elapsed >= rules.interval:
            window_closed = True
            start = observed.window_start or {}
            canary_window = window_between(
                start.get(target.number), observed.traffic.get(target.number)
            )
            stable_window = window_between(
                start.get(stable.number), observed.traffic.get(stable.number)
            )
            verdict = judge(
                target.number, canary_window, stable=stable_window, rules=rules, seconds=elapsed
            )
            failing = progress.failing + 1 if verdict.kind is VerdictKind.FAIL else 0
            inconclusive = (
                progress.inconclusive + 1 if verdict.kind is VerdictKind.INCONCLUSIVE else 0
            )
            progress = update = replace(
                progress,
                failing=failing,
                inconclusive=inconclusive,
                windows=progress.windows + 1,
                last_verdict=f"{verdict.kind.value}: {verdict.reason}",
                step_passed=progress.step_passed or verdict.kind is VerdictKind.PASS,
            )
            if verdict.kind is VerdictKind.FAIL and failing >= rules.failure_limit:
                return _fail(
                    rollout,
                    target,
                    stable,
                    others,
                    f"analysis failed {failing} window(s) in a row: {verdict.reason};"
                    f" traffic back to release {stable.number}",
                    scale,
                    update,
                )
            if (
                verdict.kind is VerdictKind.INCONCLUSIVE
                and inconclusive >= rules.inconclusive_limit
            ):
                reason = (
                    f"analysis inconclusive {inconclusive} window(s) in a row ({verdict.reason});"
                    " no data is never a pass"
                )
                if not rules.pause_on_inconclusive:
                    return _fail(
                        rollout,
                        target,
                        stable,
                        others,
                        reason + f"; traffic back to release {stable.number}",
                        scale,
                        update,
                    )
                if not progress.paused:
                    progress = update = replace(
                        progress, paused=True, pause_reason=reason, inconclusive=0
                    )
                    events.append(
                        f"rollout paused: {reason}; `kiln resume` or `kiln promote` goes on"
                    )
                    warning = True
            event_text = (
                f"analysis window {progress.windows}: {verdict.kind.value} — {verdict.reason}"
            )
            events.append(event_text)
            kind = EventKind.ROLLOUT_VERDICT
            warning = warning or verdict.kind is not VerdictKind.PASS

    # Advance a step.
    if (
        not promoting
        and capacity_ready
        and progress.step_ready_at is not None
        and not progress.paused
    ):
        pause = steps[step].pause
        advance_to: int | None = None
        if progress.promote_full:
            advance_to = last
        elif progress.promote:
            advance_to = step + 1
        elif pause is not None:
            at = progress.step_ready_at + timedelta(seconds=pause)
            if now < at:
                waits.append(
                    Wait(
                        reason=f"canary step {step + 1}/{last}: next step at {at:%H:%M:%S}",
                        until=at,
                        kind="step",
                    )
                )
            elif rules is not None and not progress.step_passed:
                pass  # no passing window yet in this step: no data is never a pass
            else:
                advance_to = step + 1
        if advance_to is not None:
            progress = update = replace(
                progress,
                step=advance_to,
                step_entered_at=now,
                step_ready_at=None,
                promote=False,
                promote_full=False if advance_to >= last else progress.promote_full,
                step_passed=False,
            )
            events.append(
                f"promoting release {target.number}: growing to {scale} instance(s) before it takes all traffic"
                if advance_to >= last
                else f"canary: moving to step {advance_to + 1}/{last} ({steps[advance_to].weight}%)"
            )
    if rules is not None and share > 0 and observed.window_started_at is not None:
        waits.append(
            Wait(
                reason="next analysis window",
                until=observed.window_started_at + timedelta(seconds=rules.interval),
                kind="window",
            )
        )

    status = (
        f"canary: promoting release {target.number} ({ready_new}/{scale} ready)"
        if promoting
        else f"canary step {step + 1}/{last}: {share}% to release {target.number} "
        f"({ready_new}/{size} ready)" + (" — paused" if progress.paused else "")
    )
    if not promoting and capacity_ready and steps[step].pause is None and not progress.paused:
        status += f"; {AWAITS_PROMOTE}"
    if progress.last_verdict:
        status += f"; last window {progress.last_verdict}"
    finish = None
    if not capacity_ready:
        finish = _capacity_deadline(
            desired, rollout, target, progress, params, now, ready, size, back_to=stable.number
        )
    return RolloutDecision(
        groups=(
            ReleaseGroup(release=stable, role=GroupRole.STABLE, size=scale, share=100 - share),
            ReleaseGroup(release=target, role=GroupRole.CANARY, size=size, share=share),
            *others,
        ),
        update=_update(rollout, update, "; ".join(events), warning=warning, kind=kind),
        finish=finish,
        waits=tuple(waits),
        status=status,
        window_closed=window_closed,
        analysing=rules is not None and share > 0,  # a window starts when the canary takes traffic
    )


def _promoted(
    rollout: Rollout,
    target: Release,
    stable: Release,
    others: tuple[ReleaseGroup, ...],
    params: RolloutParams,
    size: int,
    now: datetime,
    *,
    what: str,
) -> RolloutDecision:
    """All traffic to the new release at once; the old one stays warm for the rollback window."""
    return RolloutDecision(
        groups=(
            ReleaseGroup(release=target, role=GroupRole.STABLE, size=size, share=100),
            ReleaseGroup(release=stable, role=GroupRole.WARM, size=None, share=0),
            *others,
        ),
        finish=FinishRollout(
            rollout_id=rollout.id,
            state=RolloutState.SUCCEEDED,
            reason=f"{what} {target.number} promoted: it takes all traffic; release "
            f"{stable.number} stays warm for a rollback for {params.rollback_window:g}s",
            warm_until=_window_end(params, now),
        ),
    )


def _fail(
    rollout: Rollout,
    target: Release,
    stable: Release,
    others: tuple[ReleaseGroup, ...],
    reason: str,
    scale: int,
    update: RolloutProgress | None,
) -> RolloutDecision:
    return RolloutDecision(
        groups=(
            ReleaseGroup(release=stable, role=GroupRole.STABLE, size=scale, share=100),
            ReleaseGroup(release=target, role=GroupRole.HELD, size=None, share=0, routable=False),
            *others,
        ),
        update=_update(rollout, update, ""),
        finish=FinishRollout(
            rollout_id=rollout.id, state=RolloutState.FAILED, reason=reason, hold=True
        ),
        window_closed=True,
    )


def _canary_size(params: RolloutParams, scale: int, weight: int) -> int:
    if params.canary_instances is not None:
        return max(1, params.canary_instances)
    return max(1, math.ceil(scale * weight / 100))


def _window_end(params: RolloutParams, now: datetime) -> datetime | None:
    if params.rollback_window <= 0:
        return None
    return now + timedelta(seconds=params.rollback_window)


def _update(
    rollout: Rollout,
    progress: RolloutProgress | None,
    event: str,
    *,
    warning: bool = False,
    kind: EventKind = EventKind.ROLLOUT_PROGRESS,
) -> UpdateRollout | None:
    if progress is None:
        return None
    return UpdateRollout(
        rollout_id=rollout.id, progress=progress, reason=event, event=kind, warning=warning
    )


def _capacity_deadline(
    desired: DesiredApp,
    rollout: Rollout,
    target: Release,
    progress: RolloutProgress,
    params: RolloutParams,
    now: datetime,
    ready: Mapping[int, int],
    size: int,
    *,
    back_to: int | None = None,
) -> FinishRollout | None:
    """A step whose capacity is not ready within the deadline fails the rollout."""
    entered = progress.step_entered_at or rollout.started_at
    deadline = max(rollout.deadline_at, entered + timedelta(seconds=params.deadline))
    if now < deadline:
        return None
    back = back_to if back_to is not None else rollout.from_release
    return FinishRollout(
        rollout_id=rollout.id,
        state=RolloutState.FAILED,
        reason=(
            f"release {target.number} was not ready within its {params.deadline:g}s deadline"
            f" ({ready.get(target.number, 0)}/{size} instances ready); "
            + (f"traffic stays on release {back}" if back else "no earlier release: app stopped")
        ),
        hold=back is not None and desired.stable is not None,
    )
