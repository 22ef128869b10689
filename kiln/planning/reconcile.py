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

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from kiln.model import (
    Action,
    AppKey,
    FinishRollout,
    GroupRole,
    Instance,
    InstanceStatus,
    ObservedApp,
    ObservedInstance,
    Peer,
    Release,
    ReleaseGroup,
    RemoveInstance,
    RolloutState,
    RouteEntry,
    ScaleGroup,
    SetPeers,
    StartInstance,
    StopInstance,
    TrafficPolicy,
    Wait,
)
from kiln.planning.backoff import next_start_at
from kiln.planning.inputs import DesiredApp
from kiln.planning.instances import instance_spec, new_instance_id
from kiln.planning.placement import group_targets
from kiln.planning.recreate import select_recreate
from kiln.planning.rolling import select_rolling
from kiln.planning.rollout import SHARED_STRATEGIES, RolloutDecision, decide
from kiln.planning.selection import Selection, by_age
from kiln.planning.single_writer import has_single_writer, one_writer
from kiln.spec import Deploy, Strategy

CRASH_LOOP_FAILS_ROLLOUT_AFTER = 3
"""Crashes in a row of the release being rolled out that fail the rollout before its deadline."""

IN_FLIGHT_RECHECK = 0.1
"""Seconds between looks at a draining instance's requests in flight."""
DRAIN_SETTLE = 0.1
"""Seconds between leaving the peer list and a stop, even with nothing in flight: a request
that picked the instance just before the list changed is counted by then."""

# An app without releases (orphans of a destroyed app): nothing routes to its instances any
# more, so a short drain is enough.
_DEFAULT_DEPLOY = Deploy(drain=2.0)
_DEFAULT_STOP_GRACE = 10.0


@dataclass(frozen=True, kw_only=True)
class Plan:
    actions: tuple[Action, ...]
    retiring: frozenset[str] = (
        frozenset()
    )  # instances this plan retires (the controller dates them)
    summary: str = ""  # one line for `kiln status`: what the app is doing or waiting for
    peers: tuple[Peer, ...] = ()
    policy: TrafficPolicy | None = None
    routes: tuple[RouteEntry, ...] = ()  # the app's part of the route table
    groups: tuple[ReleaseGroup, ...] = ()
    ready: int = 0  # ready instances of the target release
    waits: tuple[Wait, ...] = field(default=())
    window_closed: bool = False  # an analysis window was judged: the next starts now
    # The same starts and stops as release-group targets, for an orchestrator driver.
    group_targets: tuple[ScaleGroup, ...] = ()
    analysing: bool = False  # a rollout is judged on its traffic: the router's counters matter


def plan(desired: DesiredApp, observed: ObservedApp, now: datetime) -> Plan:
    # A volume that is not shared: recreate, one instance, and nothing starts while any
    # instance (of any release, even a retiring or unhealthy one) still runs.
    single_writer = has_single_writer(desired.target) or has_single_writer(desired.stable)
    desired = one_writer(desired)
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
    # Drifted instances (``drift: replace``) outside a rollout are replaced the way a rolling
    # update replaces old ones: the strategy does not count them, so it starts replacements,
    # and each keeps serving until its release has its size in ready, untouched instances.
    drifted = [i for i in alive if i.drift is not None] if desired.rollout is None else []
    alive = [i for i in alive if i not in drifted]

    ready_by_release = Counter(i.release for i in alive if i.health.ready)
    decision = decide(
        desired,
        ready=ready_by_release,
        alive=Counter(i.release for i in alive),
        observed=observed,
        now=now,
    )
    kept_as_is = {g.number for g in decision.groups if g.size is None}
    kept_fixed = [i for i in alive if i.release in kept_as_is]
    movable = [i for i in alive if i.release not in kept_as_is]

    pool_target = decision.pool_target
    if decision.shared_pool:
        # Recreate must not start the new release while old instances still run, even once
        # they are retiring (and so no longer ``alive``).
        stopping = sum(
            1
            for i in running
            if (single_writer or i.release != pool_target)
            and i not in alive
            and i.release not in kept_as_is
        )
        selection = _select(desired, deploy, movable, pool_target, wanted, stopping)
        starts = {pool_target: selection.start} if pool_target is not None else {}
    else:
        selection, starts = select_groups(movable, decision.groups, target=target_no)
    keep = (*selection.keep, *kept_fixed)
    retire = {**committed, **unhealthy, **selection.retire}
    if drifted:
        sizes = {g.number: g.size for g in decision.groups if g.size is not None}
        if decision.shared_pool and pool_target is not None:
            sizes[pool_target] = wanted
        kept_drifted, drift_retired = _drift_replacement(drifted, keep, sizes)
        keep = (*keep, *kept_drifted)
        retire.update(drift_retired)

    # Peers: kept, ready, with an address, in a group that takes (or is one switch away from
    # taking) traffic. In a shared pool only the pool's releases are peers.
    group_of = {g.number: g for g in decision.groups}
    peers = tuple(
        sorted(
            Peer(
                instance_id=i.id,
                host=i.instance.address.host,
                port=i.instance.address.port,
                release=i.release,
            )
            for i in keep
            if i.health.ready
            and i.instance.address is not None
            and _routable(group_of.get(i.release), shared=decision.shared_pool)
        )
    )
    policy = _policy(decision)
    routable = release is not None and release.spec.port is not None
    if (routable or observed.routed) and (
        frozenset(peers) != observed.routed or policy != observed.policy
    ):
        actions.insert(
            0,
            SetPeers(
                key=desired.key,
                peers=peers,
                policy=policy,
                reason=_peer_change(observed, peers, policy),
            ),
        )
    now_routed = {p.instance_id for p in peers}

    for instance in running:
        if instance.id not in retire:
            continue
        if instance.in_router or instance.id in now_routed:
            continue  # the SetPeers above takes it out; it drains from the next round on
        wait = _drain_wait(instance, deploy.drain, now, unhealthy=instance.id in unhealthy)
        if wait is not None:
            waits.append(wait)
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

    wanted_starts = {number: count for number, count in starts.items() if count > 0}
    if wanted_starts and desired.target is not None:
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
            for number, count in sorted(wanted_starts.items()):
                group = group_of.get(number)
                if group is not None:
                    actions.extend(_starts(group.release, count, observed, now, actions))

    ready_new = sum(1 for i in keep if i.release == target_no and i.health.ready)
    if decision.update is not None:
        actions.append(decision.update)
    if decision.shared_pool and pool_target == target_no:
        finish = _finish_rollout(desired, observed, peers, ready_new, wanted, now)
    elif decision.shared_pool:
        finish = _crash_loop_failure(desired, observed) or _deadline_failure(
            desired, observed, ready_new, wanted, now
        )
    else:
        finish = decision.finish or _crash_loop_failure(desired, observed)
    if finish is not None:
        actions.append(finish)
    waits.extend(decision.waits)

    return Plan(
        actions=tuple(actions),
        group_targets=group_targets(desired.key, actions, observed, decision.groups),
        analysing=decision.analysing,
        retiring=frozenset(i for i in retire if i not in committed),
        summary=_summary(desired, selection, waits, ready_new, wanted, decision),
        peers=peers,
        policy=policy,
        routes=_routes(desired, decision, peers),
        groups=decision.groups,
        ready=ready_new,
        waits=tuple(waits),
        window_closed=decision.window_closed,
    )


def _drift_replacement(
    drifted: Sequence[ObservedInstance],
    keep: Sequence[ObservedInstance],
    sizes: dict[int, int],
) -> tuple[list[ObservedInstance], dict[str, str]]:
    """Which drifted instances still serve (their release lacks ready, untouched instances)
    and which retire now, with what drifted as the reason."""
    kept: list[ObservedInstance] = []
    retire: dict[str, str] = {}
    for instance in sorted(drifted, key=by_age):
        ready = sum(1 for i in keep if i.release == instance.release and i.health.ready)
        if ready < sizes.get(instance.release, 0):
            kept.append(instance)
        else:
            retire[instance.id] = f"drifted from release {instance.release}: {instance.drift}"
    return kept, retire


def select_groups(
    alive: Sequence[ObservedInstance], groups: Sequence[ReleaseGroup], *, target: int | None
) -> tuple[Selection, dict[int, int]]:
    """Each sized group keeps up to ``size`` instances (ready and oldest first) and starts the
    rest; instances of releases in no group retire."""
    keep: list[ObservedInstance] = []
    retire: dict[str, str] = {}
    starts: dict[int, int] = {}
    sized = {g.number: g for g in groups if g.size is not None}
    for number, group in sized.items():
        assert group.size is not None
        members = sorted(
            (i for i in alive if i.release == number),
            key=lambda i: (not i.health.ready, *by_age(i)),
        )
        keep.extend(members[: group.size])
        for extra in members[group.size :]:
            retire[extra.id] = f"release {number} ({group.role.value}) needs {group.size}"
        starts[number] = max(0, group.size - len(members))
    for instance in alive:
        if instance.release not in sized:
            retire[instance.id] = (
                f"replaced by release {target}" if target is not None else "app stopped"
            )
    return Selection(keep=tuple(keep), retire=retire), starts


def _routable(group: ReleaseGroup | None, *, shared: bool) -> bool:
    if shared:
        # One pool: whatever the rolling selection keeps serves (a superseded release too),
        # except the warm and held releases, which take no traffic.
        return group is None or group.share is None
    return group is not None and group.routable


def _policy(decision: RolloutDecision) -> TrafficPolicy | None:
    if decision.shared_pool:
        return None
    shares = tuple(
        (g.number, g.share)
        for g in sorted(decision.groups, key=lambda g: g.number)
        if g.share is not None and g.routable
    )
    if sum(share for _, share in shares) != 100:
        return None
    canary = next((g.number for g in decision.groups if g.role is GroupRole.CANARY), None)
    preview = next((g.number for g in decision.groups if g.preview), None)
    return TrafficPolicy(shares=shares, canary=canary, preview=preview)


def _routes(
    desired: DesiredApp, decision: RolloutDecision, peers: Sequence[Peer]
) -> tuple[RouteEntry, ...]:
    """The app's routes: those of the releases that take traffic (a new release's routes go
    live with its first request, a failed one's leave with its last); the current release's
    while nothing serves, so its URL answers 503, not 404. Plus the app's preview host."""
    serving: list[Release] = []
    with_peers = {p.release for p in peers}
    for group in decision.groups:
        takes_traffic = group.share is None or group.share > 0
        if group.routable and takes_traffic and group.number in with_peers:
            serving.append(group.release)
    if not serving:
        current = desired.target or desired.stable
        if current is None or current.spec.port is None:
            return ()
        serving = [current]
    return app_routes(desired.key, serving)


def app_routes(key: AppKey, serving: Sequence[Release]) -> tuple[RouteEntry, ...]:
    """The routes of ``serving`` releases for app ``key``, plus its preview host. The preview
    route is always there (503 while nothing waits on it), so a blue-green's preview coming and
    going changes peer data only, never NGINX's config (no reload)."""
    entries: set[RouteEntry] = set()
    for release in serving:
        if release.spec.port is None:
            continue
        for route in release.spec.effective_routes():
            entries.add(RouteEntry(host=route.host, path=route.path, key=key))
    if entries:
        entries.add(
            RouteEntry(host=preview_host(key.app, key.environment), path="/", key=key, preview=True)
        )
    return tuple(sorted(entries, key=lambda e: (e.host or "", e.path, e.preview)))


def preview_host(app: str, environment: str) -> str:
    """Where a release waiting for promotion can be tried before it takes traffic."""
    return f"{app}.preview.{environment}.localhost"


def _drain_wait(
    instance: ObservedInstance, drain: float, now: datetime, *, unhealthy: bool
) -> Wait | None:
    """None when the instance may stop now: out of the router and its requests finished
    (or the drain timeout passed, or it cannot serve anyway)."""
    if unhealthy or not instance.health.ready:
        return None
    since = instance.retiring_since or now
    limit = since + timedelta(seconds=drain)
    if now >= limit:
        return None
    if instance.in_flight is None:
        # The router cannot say: give requests the whole drain time to finish.
        until = limit
    elif instance.in_flight > 0:
        until = min(limit, now + timedelta(seconds=IN_FLIGHT_RECHECK))
        return Wait(
            reason=f"draining {instance.id}: {instance.in_flight} request(s) in flight",
            until=until,
            kind="drain",
        )
    else:
        until = since + timedelta(seconds=DRAIN_SETTLE)
    if now >= until:
        return None
    return Wait(reason=f"draining {instance.id}", until=until, kind="drain")


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


def _starts(
    target: Release, count: int, observed: ObservedApp, now: datetime, planned: Sequence[Action]
) -> list[Action]:
    taken = {i.id for i in observed.instances}
    taken.update(a.spec.id for a in planned if isinstance(a, StartInstance))
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
    return _crash_loop_failure(desired, observed) or _deadline_failure(
        desired, observed, ready_new, wanted, now
    )


def _crash_loop_failure(desired: DesiredApp, observed: ObservedApp) -> FinishRollout | None:
    rollout = desired.rollout
    target = desired.target
    if rollout is None or rollout.state.finished or target is None:
        return None
    if rollout.to_release != target.number:
        return None
    crashes = observed.crashes
    stable = desired.stable
    hold = stable is not None and rollout.strategy not in SHARED_STRATEGIES
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
            hold=hold,
        )
    return None


def _deadline_failure(
    desired: DesiredApp, observed: ObservedApp, ready_new: int, wanted: int, now: datetime
) -> FinishRollout | None:
    rollout = desired.rollout
    target = desired.target
    assert rollout is not None and target is not None
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


def _peer_change(
    observed: ObservedApp, peers: tuple[Peer, ...], policy: TrafficPolicy | None
) -> str:
    before = {p.instance_id for p in observed.routed}
    after = {p.instance_id for p in peers}
    parts = []
    if added := sorted(after - before):
        parts.append("ready: " + ", ".join(added))
    if removed := sorted(before - after):
        parts.append("out: " + ", ".join(removed))
    if policy != observed.policy:
        parts.append(_describe_policy(policy))
    if not parts:
        parts.append("addresses changed")
    return f"router now sends traffic to {len(peers)} instance(s) ({'; '.join(parts)})"


def _describe_policy(policy: TrafficPolicy | None) -> str:
    if policy is None:
        return "one pool of instances"
    shares = ", ".join(f"release {number}: {share}%" for number, share in policy.shares)
    extras = []
    if policy.canary is not None:
        extras.append(f"canary {policy.canary}")
    if policy.preview is not None:
        extras.append(f"preview {policy.preview}")
    return shares + (f" ({', '.join(extras)})" if extras else "")


def _summary(
    desired: DesiredApp,
    selection: Selection,
    waits: list[Wait],
    ready_new: int,
    wanted: int,
    decision: RolloutDecision,
) -> str:
    if desired.target is None:
        return "stopped" if desired.stopped else "no release"
    if desired.stopped:
        return "stopped"
    if decision.status:
        return decision.status
    head = f"release {desired.target.number}: {ready_new}/{wanted} ready"
    reasons = [w.reason for w in waits if w.kind in ("backoff", "")]
    if selection.waiting_for:
        reasons.append(selection.waiting_for)
    return head + (" — " + "; ".join(reasons) if reasons else "")
