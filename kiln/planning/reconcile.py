"""The reconcile planner: ``plan(desired, observed, now) -> Plan``. Pure; the clock is an argument.

    observed instances
        │ not running ───────────────▶ RemoveInstance   (and counted as a crash by the controller)
        │ failing liveness ──────────▶ retire
        ▼
    strategy (rolling | recreate) ──▶ keep / retire / start N
        │
        ├─ peers = kept ∩ ready ─────▶ SetPeers         (only when it differs from the router)
        ├─ retiring, out of router,
        │  drained ──────────────────▶ StopInstance     (never while still in the router)
        ├─ start N (crash backoff) ──▶ StartInstance
        └─ rollout done / deadline ──▶ FinishRollout    (FAILED sends the app back to stable)

Level-based: the same inputs give the same plan, and running a plan twice is harmless; the
controller re-plans after every observation, so an action that failed is simply planned again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from kiln.model import (
    Action,
    FinishRollout,
    Instance,
    InstanceStatus,
    ObservedApp,
    ObservedInstance,
    Peer,
    Release,
    RemoveInstance,
    RolloutState,
    SetPeers,
    StartInstance,
    StopInstance,
    Wait,
)
from kiln.planning.backoff import next_start_at
from kiln.planning.inputs import DesiredApp
from kiln.planning.instances import instance_spec, new_instance_id
from kiln.planning.recreate import select_recreate
from kiln.planning.rolling import select_rolling
from kiln.planning.selection import Selection, by_age
from kiln.spec import Deploy, Strategy

CRASH_LOOP_FAILS_ROLLOUT_AFTER = 3
"""Crashes in a row of the release being rolled out that fail the rollout before its deadline."""

_DEFAULT_DEPLOY = Deploy()
_DEFAULT_STOP_GRACE = 10.0


@dataclass(frozen=True, kw_only=True)
class Plan:
    actions: tuple[Action, ...]
    retiring: frozenset[str] = (
        frozenset()
    )  # instances this plan retires (the controller dates them)
    summary: str = ""  # one line for `kiln status`: what the app is doing or waiting for
    peers: tuple[Peer, ...] = ()
    ready: int = 0  # ready instances of the target release
    waits: tuple[Wait, ...] = field(default=())


def plan(desired: DesiredApp, observed: ObservedApp, now: datetime) -> Plan:
    release = desired.target or desired.stable
    deploy = release.spec.deploy if release else _DEFAULT_DEPLOY
    target_no = desired.target.number if desired.target else None
    wanted = desired.wanted
    actions: list[Action] = []
    waits: list[Wait] = []

    dead = [i for i in observed.instances if i.instance.status is not InstanceStatus.RUNNING]
    running = [i for i in observed.instances if i.instance.status is InstanceStatus.RUNNING]
    for gone in dead:
        actions.append(
            RemoveInstance(
                instance_id=gone.id,
                container_id=gone.instance.container_id,
                release=gone.release,
                reason=describe_exit(gone.instance),
            )
        )

    # The reason it was retired for went out with the round that retired it; what is left
    # to say when it is finally stopped is that it is out of the router.
    committed = {
        i.id: "retired earlier, now out of the router"
        for i in running
        if i.retiring_since is not None
    }
    unhealthy = {
        i.id: f"failed its liveness check: {i.health.last_error or 'unhealthy'}"
        for i in running
        if not i.health.live and i.id not in committed
    }
    alive = [i for i in running if i.id not in committed and i.id not in unhealthy]

    # Recreate must not start the new release while old instances still run, even once they
    # are retiring (and so no longer ``alive``).
    stopping = sum(1 for i in running if i.release != target_no and i not in alive)
    selection = _select(desired, deploy, alive, target_no, wanted, stopping)
    retire = {**committed, **unhealthy, **selection.retire}

    # Peers: kept and ready, with an address. Everything else is out of the router.
    peers = tuple(
        sorted(
            Peer(instance_id=i.id, host=i.instance.address.host, port=i.instance.address.port)
            for i in selection.keep
            if i.health.ready and i.instance.address is not None
        )
    )
    routable = release is not None and release.spec.port is not None
    if (routable or observed.routed) and frozenset(peers) != observed.routed:
        actions.insert(
            0, SetPeers(key=desired.key, peers=peers, reason=_peer_change(observed, peers))
        )
    now_routed = {p.instance_id for p in peers}

    for instance in running:
        if instance.id not in retire:
            continue
        if instance.in_router or instance.id in now_routed:
            continue  # the SetPeers above takes it out; it drains from the next round on
        since = instance.retiring_since or now
        drained_at = since + timedelta(seconds=deploy.drain)
        if instance.health.ready and now < drained_at and instance.id not in unhealthy:
            waits.append(Wait(reason=f"draining {instance.id}", until=drained_at, kind="drain"))
            continue
        actions.append(
            StopInstance(
                instance_id=instance.id,
                container_id=instance.instance.container_id,
                release=instance.release,
                grace=_stop_grace(desired, instance.release),
                reason=retire[instance.id],
            )
        )

    if selection.start and desired.target is not None:
        resume_at = next_start_at(observed.crashes)
        if resume_at is not None and now < resume_at:
            waits.append(
                Wait(
                    reason=(
                        f"crash loop backoff: next start in {(resume_at - now).total_seconds():.1f}s"
                        f" (last exit: {observed.crashes.last_reason or 'unknown'})"
                    ),
                    until=resume_at,
                    kind="backoff",
                )
            )
        else:
            actions.extend(_starts(desired.target, selection.start, observed, now))

    ready_new = sum(1 for i in selection.keep if i.release == target_no and i.health.ready)
    finish = _finish_rollout(desired, observed, peers, ready_new, wanted, now)
    if finish is not None:
        actions.append(finish)

    return Plan(
        actions=tuple(actions),
        retiring=frozenset(i for i in retire if i not in committed),
        summary=_summary(desired, selection, waits, ready_new, wanted),
        peers=peers,
        ready=ready_new,
        waits=tuple(waits),
    )


def _select(
    desired: DesiredApp,
    deploy: Deploy,
    alive: list[ObservedInstance],
    target_no: int | None,
    wanted: int,
    stopping: int,
) -> Selection:
    if deploy.strategy is Strategy.RECREATE:
        return select_recreate(alive, target=target_no, wanted=wanted, stopping=stopping)
    return select_rolling(
        alive,
        target=target_no,
        stable=desired.stable.number if desired.stable else None,
        wanted=wanted,
        max_surge=deploy.max_surge,
        max_unavailable=deploy.max_unavailable,
    )


def _starts(target: Release, count: int, observed: ObservedApp, now: datetime) -> list[Action]:
    taken = {i.id for i in observed.instances}
    starts: list[Action] = []
    for n in range(count):
        instance_id = new_instance_id(target.key, target.number, now=now, taken=taken, salt=n)
        taken.add(instance_id)
        starts.append(
            StartInstance(
                spec=instance_spec(target, instance_id),
                reason=f"release {target.number} needs another instance",
            )
        )
    return starts


def _finish_rollout(
    desired: DesiredApp,
    observed: ObservedApp,
    peers: tuple[Peer, ...],
    ready_new: int,
    wanted: int,
    now: datetime,
) -> FinishRollout | None:
    rollout = desired.rollout
    target = desired.target
    if rollout is None or rollout.state.finished or target is None:
        return None
    if rollout.to_release != target.number:
        return None
    release_of = {i.id: i.release for i in observed.instances}
    only_new_routed = all(release_of.get(p.instance_id) == target.number for p in peers)
    old_alive = any(
        i.release != target.number and i.instance.status is InstanceStatus.RUNNING
        for i in observed.instances
        if i.retiring_since is None
    )
    if ready_new >= wanted and only_new_routed and not (wanted == 0 and old_alive):
        return FinishRollout(
            rollout_id=rollout.id,
            state=RolloutState.SUCCEEDED,
            reason=f"release {target.number} serves all traffic: {ready_new}/{wanted} ready",
        )
    crashes = observed.crashes
    if (
        crashes.last_release == target.number
        and crashes.consecutive >= CRASH_LOOP_FAILS_ROLLOUT_AFTER
        and crashes.last_at is not None
        and crashes.last_at >= rollout.started_at
    ):
        return FinishRollout(
            rollout_id=rollout.id,
            state=RolloutState.FAILED,
            reason=(
                f"release {target.number} crashed {crashes.consecutive} times in a row"
                f" (last: {crashes.last_reason or 'unknown'}); {_back_to(rollout.from_release)}"
            ),
        )
    if now >= rollout.deadline_at:
        # The newest instance's error is the one a person can still reproduce.
        failing = sorted(
            (i for i in observed.instances if i.release == target.number and i.health.last_error),
            key=by_age,
        )
        detail = f"; last error: {failing[-1].health.last_error}" if failing else ""
        seconds = (rollout.deadline_at - rollout.started_at).total_seconds()
        return FinishRollout(
            rollout_id=rollout.id,
            state=RolloutState.FAILED,
            reason=(
                f"release {target.number} was not ready within its {seconds:g}s deadline"
                f" ({ready_new}/{wanted} instances ready{detail}); {_back_to(rollout.from_release)}"
            ),
        )
    return None


def _back_to(release: int | None) -> str:
    return f"rolling back to release {release}" if release else "no earlier release: app stopped"


def _stop_grace(desired: DesiredApp, release: int) -> float:
    for candidate in (desired.target, desired.stable):
        if candidate is not None and candidate.number == release:
            return candidate.spec.stop_grace
    candidate = desired.target or desired.stable
    return candidate.spec.stop_grace if candidate else _DEFAULT_STOP_GRACE


def describe_exit(state: Instance) -> str:
    """Why an instance is no longer running, for events and crash history."""
    if state.status is InstanceStatus.CREATED:
        return "container was created but never started"
    if state.oom_killed:
        return "exited: killed for running out of memory (OOM)"
    if state.exit_code is None:
        return "container is gone"
    if state.exit_code == 137:
        return "exited with code 137 (killed)"
    return f"exited with code {state.exit_code}"


def _peer_change(observed: ObservedApp, peers: tuple[Peer, ...]) -> str:
    before = {p.instance_id for p in observed.routed}
    after = {p.instance_id for p in peers}
    parts = []
    if added := sorted(after - before):
        parts.append("ready: " + ", ".join(added))
    if removed := sorted(before - after):
        parts.append("out: " + ", ".join(removed))
    if not parts:
        parts.append("addresses changed")
    return f"router now sends traffic to {len(peers)} instance(s) ({'; '.join(parts)})"


def _summary(
    desired: DesiredApp, selection: Selection, waits: list[Wait], ready_new: int, wanted: int
) -> str:
    if desired.target is None:
        return "stopped" if desired.stopped else "no release"
    if desired.stopped:
        return "stopped"
    head = f"release {desired.target.number}: {ready_new}/{wanted} ready"
    reasons = [w.reason for w in waits if w.kind != "drain"]
    if selection.waiting_for:
        reasons.append(selection.waiting_for)
    return head + (" — " + "; ".join(reasons) if reasons else "")
