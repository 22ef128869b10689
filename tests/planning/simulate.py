"""A pure simulator of the world around the planner, to test plans round by round.

It plays the controller and the engine: each round the clock moves on, instances become ready
or crash as their ``Behaviour`` says, the simulator hands ``plan()`` what it sees, checks the
plan against the invariants that must hold in *every* round, and applies it:

    StartInstance  → a new running, not-ready instance (ready ``ready_after`` seconds later)
    SetPeers       → the router's peer list, its traffic policy and the ``in_router`` flags
    UpdateRollout  → the rollout's persisted progress
    plan.retiring  → ``retiring_since = now`` (first time only, like the controller)
    StopInstance   → the instance is gone          RemoveInstance → the exited instance is gone
    FinishRollout  → the rollout is closed; SUCCEEDED makes the target stable (and keeps the
                     old one warm), FAILED sends the target back to the stable release

Traffic: ``requests_per_round`` requests a round are split between releases as the router's
policy says (exactly; one pool by instance count without a policy) and fail at the rate
``error_rate`` gives their release, so analysis windows see real numbers.

Unplanned exits are counted in a ``CrashHistory`` and forgiven after a ready spell, as the
controller does. Invariant checks raise ``Violation`` naming the round and the action.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from kiln.model import (
    Address,
    CrashHistory,
    FinishRollout,
    HealthStatus,
    Instance,
    InstanceSpec,
    InstanceStatus,
    ObservedApp,
    ObservedInstance,
    Peer,
    Release,
    ReleaseTraffic,
    RemoveInstance,
    RolloutState,
    SetPeers,
    StartInstance,
    StopInstance,
    TrafficPolicy,
    UpdateRollout,
)
from kiln.planning import DesiredApp, Plan, forgive, plan, record_crash

from .builders import T0, make_rollout


class Violation(AssertionError):
    """A plan broke an invariant."""


@dataclass(frozen=True)
class Behaviour:
    """How an instance behaves once started, in seconds after its start."""

    ready_after: float | None = 2.0  # None: never passes readiness
    crash_after: float | None = None  # exits with code 1 then
    probe_error: str = "GET /healthz: connection refused"


@dataclass
class SimInstance:
    id: str
    release: int
    address: Address | None
    started_at: datetime
    behaviour: Behaviour
    status: InstanceStatus = InstanceStatus.RUNNING
    ready_since: datetime | None = None
    live: bool = True
    exit_code: int | None = None
    finished_at: datetime | None = None
    retiring_since: datetime | None = None
    ever_routed: bool = False
    left_router_at: datetime | None = None
    crash_counted: bool = False

    @property
    def running(self) -> bool:
        return self.status is InstanceStatus.RUNNING

    @property
    def ready(self) -> bool:
        return self.running and self.ready_since is not None


@dataclass(frozen=True, kw_only=True)
class Round:
    """One reconcile round: what the planner saw, what it planned, and the world after it."""

    number: int
    now: datetime
    observed: ObservedApp
    plan: Plan
    routed_ready: int  # routed instances that are running and ready, after the plan ran
    active: int  # running instances not retiring, after the plan ran
    crashes_so_far: int
    routed_releases: frozenset[int]  # releases of the routed, ready instances after the plan


@dataclass
class Simulator:
    desired: DesiredApp
    now: datetime = T0
    step: float = 1.0
    behave: Callable[[InstanceSpec], Behaviour] = field(default=lambda _spec: Behaviour())
    instances: dict[str, SimInstance] = field(default_factory=dict)
    routed: frozenset[Peer] = frozenset()
    crash_history: CrashHistory = field(default_factory=CrashHistory)
    rounds: list[Round] = field(default_factory=list)
    finished: list[FinishRollout] = field(default_factory=list)
    crashes_injected: int = 0
    policy: TrafficPolicy | None = None
    requests_per_round: int = 0
    error_rate: dict[int, float] = field(default_factory=dict)  # release → share of 5xx
    traffic: dict[int, ReleaseTraffic] = field(default_factory=dict)
    window_start: dict[int, ReleaseTraffic] | None = None
    window_started_at: datetime | None = None
    _ports: itertools.count[int] = field(default_factory=lambda: itertools.count(30000))

    # --- setting the scene ----------------------------------------------------------------

    def add_ready(self, release: Release, count: int) -> list[str]:
        """``count`` instances of ``release`` that are running, ready and routed."""
        added = []
        for n in range(count):
            instance_id = f"r{release.number}-old{n:03d}"
            sim = SimInstance(
                id=instance_id,
                release=release.number,
                address=Address("127.0.0.1", next(self._ports)),
                started_at=self.now - timedelta(seconds=600 - n),
                behaviour=Behaviour(ready_after=0.0),
                ready_since=self.now - timedelta(seconds=300),
                ever_routed=True,
            )
            self.instances[instance_id] = sim
            added.append(instance_id)
        self.routed = frozenset(self._peer(i) for i in self.instances.values() if i.ready)
        return added

    def deploy(self, release: Release) -> None:
        """Start a rollout to ``release`` from the stable release; a rollout still in progress
        is superseded (its release never became stable)."""
        stable = self.desired.stable if self.desired.rollout else self.desired.target
        previous = self.desired.rollout.id if self.desired.rollout else 0
        self.desired = DesiredApp(
            key=release.key,
            scale=release.spec.instances,
            stopped=False,
            target=release,
            stable=stable,
            rollout=make_rollout(
                release, from_release=stable, started_at=self.now, rollout_id=previous + 1
            ),
        )

    def scale(self, instances: int) -> None:
        self.desired = replace(self.desired, scale=instances)

    def crash(self, instance_id: str, *, exit_code: int = 1) -> None:
        sim = self.instances[instance_id]
        sim.status = InstanceStatus.EXITED
        sim.exit_code = exit_code
        sim.finished_at = self.now
        sim.ready_since = None
        self.crashes_injected += 1

    def fail_liveness(self, instance_id: str) -> None:
        self.instances[instance_id].live = False

    # --- what the planner sees --------------------------------------------------------------

    def observe(self) -> ObservedApp:
        routed_ids = {p.instance_id for p in self.routed}
        return ObservedApp(
            instances=tuple(self._observed(s, s.id in routed_ids) for s in self.instances.values()),
            routed=self.routed,
            policy=self.policy,
            crashes=self.crash_history,
            traffic=dict(self.traffic),
            window_start=self.window_start,
            window_started_at=self.window_started_at,
        )

    def _observed(self, sim: SimInstance, in_router: bool) -> ObservedInstance:
        never_ready = sim.behaviour.ready_after is None
        return ObservedInstance(
            instance=Instance(
                id=sim.id,
                key=self.desired.key,
                release=sim.release,
                container_id=f"c-{sim.id}",
                status=sim.status,
                address=sim.address,
                started_at=sim.started_at,
                finished_at=sim.finished_at,
                exit_code=sim.exit_code,
            ),
            health=HealthStatus(
                ready=sim.ready,
                live=sim.live,
                checked=True,
                last_error=sim.behaviour.probe_error if never_ready else None,
                ready_since=sim.ready_since,
            ),
            in_router=in_router,
            retiring_since=sim.retiring_since,
        )

    # --- one round --------------------------------------------------------------------------

    def tick(self) -> Round:
        self.now += timedelta(seconds=self.step)
        self._age_instances()
        self._count_crashes()
        self._serve_requests()
        if self.window_started_at is None:
            self.window_start, self.window_started_at = dict(self.traffic), self.now
        observed = self.observe()
        result = plan(self.desired, observed, self.now)
        self._check(observed, result)
        self._apply(result)
        if result.window_closed:
            self.window_start, self.window_started_at = dict(self.traffic), self.now
        record = Round(
            number=len(self.rounds) + 1,
            now=self.now,
            observed=observed,
            plan=result,
            routed_ready=len(self._routed_ready()),
            active=sum(1 for s in self.instances.values() if s.running and not s.retiring_since),
            crashes_so_far=self.crashes_injected,
            routed_releases=frozenset(s.release for s in self._routed_ready()),
        )
        self.rounds.append(record)
        return record

    def run_until(self, done: Callable[[Simulator], bool], *, max_rounds: int = 500) -> Round:
        for _ in range(max_rounds):
            last = self.tick()
            if done(self):
                return last
        raise Violation(f"not done after {max_rounds} rounds: {self.describe()}")

    def run_rollout(self, *, max_rounds: int = 500) -> FinishRollout:
        """Rounds until the rollout is closed; the FinishRollout that closed it."""
        self.run_until(lambda sim: sim.desired.rollout is None, max_rounds=max_rounds)
        return self.finished[-1]

    def settle(self, *, max_rounds: int = 500) -> Round:
        """Rounds until a plan has nothing to do or wait for, and every instance is ready."""
        return self.run_until(
            lambda sim: (
                not sim.rounds[-1].plan.actions
                and not sim.rounds[-1].plan.waits
                and all(s.ready for s in sim.instances.values())
            ),
            max_rounds=max_rounds,
        )

    def describe(self) -> str:
        parts = [
            f"{s.id}(r{s.release} {s.status}{' ready' if s.ready else ''}"
            f"{' retiring' if s.retiring_since else ''})"
            for s in self.instances.values()
        ]
        last = self.rounds[-1].plan.summary if self.rounds else ""
        return f"t={self.now.isoformat()} [{', '.join(parts)}] {last}"

    # --- the world moving on ---------------------------------------------------------------

    def _age_instances(self) -> None:
        for sim in self.instances.values():
            if not sim.running:
                continue
            age = (self.now - sim.started_at).total_seconds()
            crash_after = sim.behaviour.crash_after
            if crash_after is not None and age >= crash_after:
                sim.status = InstanceStatus.EXITED
                sim.exit_code = 1
                sim.finished_at = sim.started_at + timedelta(seconds=crash_after)
                sim.ready_since = None
                continue
            ready_after = sim.behaviour.ready_after
            if sim.ready_since is None and ready_after is not None and age >= ready_after:
                sim.ready_since = sim.started_at + timedelta(seconds=ready_after)

    def _count_crashes(self) -> None:
        # As the controller's observer: an exit kiln did not ask for is a crash, counted once;
        # a ready spell forgives the history.
        for sim in self.instances.values():
            failed = sim.status is InstanceStatus.EXITED or not sim.live
            if failed and not sim.crash_counted and sim.retiring_since is None:
                sim.crash_counted = True
                self.crash_history = record_crash(
                    self.crash_history,
                    at=sim.finished_at or self.now,
                    reason=f"exited with code {sim.exit_code}",
                    release=sim.release,
                )
        for sim in self.instances.values():
            if sim.ready:
                self.crash_history = forgive(
                    self.crash_history, ready_since=sim.ready_since, now=self.now
                )

    def _routed_ready(self) -> list[SimInstance]:
        routed_ids = {p.instance_id for p in self.routed}
        return [s for s in self.instances.values() if s.id in routed_ids and s.ready]

    def _peer(self, sim: SimInstance) -> Peer:
        assert sim.address is not None
        return Peer(
            instance_id=sim.id, host=sim.address.host, port=sim.address.port, release=sim.release
        )

    # --- invariants every plan must keep ----------------------------------------------------

    def _check(self, observed: ObservedApp, result: Plan) -> None:
        where = f"round {len(self.rounds) + 1} at {self.now.isoformat()}"
        routed_ids = {p.instance_id for p in self.routed}
        new_peers: set[str] | None = None
        target = self.desired.target
        current = self.desired.target or self.desired.stable
        drain = current.spec.deploy.drain if current else 2.0
        for action in result.actions:
            if isinstance(action, SetPeers):
                new_peers = {p.instance_id for p in action.peers}
                for peer in action.peers:
                    sim = self.instances.get(peer.instance_id)
                    if sim is None or not sim.ready or sim.retiring_since is not None:
                        raise Violation(f"{where}: routes {peer.instance_id}, not a ready instance")
            elif isinstance(action, StopInstance | RemoveInstance):
                sim = self.instances.get(action.instance_id)
                if sim is None:
                    raise Violation(f"{where}: {action} targets an instance that does not exist")
                if isinstance(action, RemoveInstance) and sim.running:
                    raise Violation(f"{where}: removes running {sim.id} without stopping it")
            elif isinstance(action, StartInstance):
                wanted = {g.number: g.release.digest for g in result.groups if g.size}
                if target is None or wanted.get(action.spec.release) != action.spec.image:
                    raise Violation(f"{where}: starts {action.spec.image}, not a group's digest")
                if action.spec.id in self.instances:
                    raise Violation(f"{where}: bad StartInstance {action.spec.id}")
        for action in result.actions:
            if not isinstance(action, StopInstance):
                continue
            sim = self.instances[action.instance_id]
            still_routed = sim.id in (new_peers if new_peers is not None else routed_ids)
            if sim.id in routed_ids or still_routed:
                raise Violation(f"{where}: stops {sim.id} while it is in the router")
            if sim.ever_routed and sim.ready and sim.left_router_at is not None:
                drained = (self.now - sim.left_router_at).total_seconds()
                if drained < drain:
                    raise Violation(f"{where}: stops {sim.id} after {drained}s of {drain}s drain")

    # --- carrying the plan out --------------------------------------------------------------

    def _apply(self, result: Plan) -> None:
        for action in result.actions:
            if isinstance(action, SetPeers):
                after = {p.instance_id for p in action.peers}
                for sim in self.instances.values():
                    if sim.id in after:
                        sim.ever_routed = True
                    elif any(p.instance_id == sim.id for p in self.routed):
                        sim.left_router_at = self.now
                self.routed = frozenset(action.peers)
                self.policy = action.policy
            elif isinstance(action, UpdateRollout):
                rollout = self.desired.rollout
                assert rollout is not None and rollout.id == action.rollout_id
                self.desired = replace(
                    self.desired, rollout=replace(rollout, progress=action.progress)
                )
        for instance_id in result.retiring:
            sim = self.instances[instance_id]
            if sim.retiring_since is None:
                sim.retiring_since = self.now
        for action in result.actions:
            if isinstance(action, StopInstance | RemoveInstance):
                del self.instances[action.instance_id]
            elif isinstance(action, StartInstance):
                self.instances[action.spec.id] = SimInstance(
                    id=action.spec.id,
                    release=action.spec.release,
                    address=Address("127.0.0.1", next(self._ports)) if action.spec.port else None,
                    started_at=self.now,
                    behaviour=self.behave(action.spec),
                )
        for action in result.actions:
            if isinstance(action, FinishRollout):
                self.finished.append(action)
                self._close_rollout(action)

    def _close_rollout(self, action: FinishRollout) -> None:
        desired = self.desired
        if action.state is RolloutState.SUCCEEDED:
            warm = desired.stable if action.warm_until is not None else None
            self.desired = replace(
                desired,
                stable=desired.target,
                rollout=None,
                warm=warm,
                warm_until=action.warm_until if warm else None,
            )
        else:
            self.desired = replace(
                desired,
                target=desired.stable,
                rollout=None,
                held=desired.target if action.hold else None,
            )

    def _serve_requests(self) -> None:
        """This round's requests, split as the router would and failing as each release does."""
        if not self.requests_per_round:
            return
        ready_routed = self._routed_ready()
        per_release: dict[int, int] = {}
        if self.policy is not None and self.policy.shares:
            for number, share in self.policy.shares:
                if any(s.release == number for s in ready_routed):
                    per_release[number] = self.requests_per_round * share // 100
        elif ready_routed:
            for sim in ready_routed:
                per_release[sim.release] = per_release.get(sim.release, 0) + (
                    self.requests_per_round // len(ready_routed)
                )
        for number, count in per_release.items():
            errors = round(count * self.error_rate.get(number, 0.0))
            before = self.traffic.get(number, ReleaseTraffic(requests=0, errors=0))
            fast = before.latency_buckets[0][1] if before.latency_buckets else 0
            self.traffic[number] = ReleaseTraffic(
                requests=before.requests + count,
                errors=before.errors + errors,
                latency_buckets=((50.0, fast + count), (float("inf"), fast + count)),
            )
