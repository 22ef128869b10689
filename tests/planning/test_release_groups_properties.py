"""Properties of the rollout machine over random sequences of deploys (rolling, canary,
blue-green; good, failing or never-ready releases), promotes, aborts and switch-backs, played
round by round in the simulator:

- the shares of the groups that take traffic always sum to 100 (TrafficPolicy refuses less);
- the stable release keeps its full ready capacity during a canary;
- an abort or a failure always ends with all traffic on the stable release;
- inconclusive analysis never promotes: a canary without traffic is never promoted on its own;
- whatever happened, once the app settles its routes are those of the release that serves.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kiln.model import GroupRole, Release, RolloutKind, RolloutState, RouteEntry, SetPeers
from kiln.spec import Strategy

from .builders import KEY, make_release, make_rollout, steady
from .simulate import Behaviour, Simulator

_SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ANALYSIS = {"interval": "5s", "min_requests": 10, "failure_limit": 2, "inconclusive_limit": 3}

operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("deploy"),
            st.sampled_from([Strategy.ROLLING, Strategy.CANARY, Strategy.BLUE_GREEN]),
            st.sampled_from(["good", "bad", "never-ready"]),
        ),
        st.tuples(st.just("promote")),
        st.tuples(st.just("abort")),
        st.tuples(st.just("switch-back")),
        st.tuples(st.just("wait"), st.integers(1, 30)),
    ),
    min_size=1,
    max_size=8,
)


def release(number: int, strategy: Strategy) -> Release:
    deploy: dict[str, object] = {"rollback_window": "60s"}
    if strategy is Strategy.CANARY:
        deploy |= {"steps": [{"weight": 20, "pause": "5s"}, {"weight": 60, "pause": "5s"}]}
        deploy |= {"analysis": ANALYSIS}
    return make_release(
        number,
        instances=3,
        strategy=strategy,
        deadline=20,
        routes=[{"host": f"r{number}.test", "path": "/"}],
        deploy=deploy,
    )


def routes_of(number: int) -> tuple[RouteEntry, ...]:
    return (
        RouteEntry(host=f"r{number}.test", path="/", key=KEY),
        RouteEntry(host="web.preview.dev.localhost", path="/", key=KEY, preview=True),
    )


@given(ops=operations)
@_SETTINGS
def test_release_group_invariants_hold_for_any_sequence(ops: list[tuple[object, ...]]) -> None:
    v1 = release(1, Strategy.ROLLING)
    never_ready: set[int] = set()
    sim = Simulator(
        desired=steady(v1),
        requests_per_round=40,
        behave=lambda spec: Behaviour(ready_after=None if spec.release in never_ready else 1.0),
    )
    sim.add_ready(v1, 3)
    number = 1
    for op in ops:
        if op[0] == "deploy":
            _, strategy, kind = op
            number += 1
            if kind == "bad":
                sim.error_rate[number] = 0.5
            if kind == "never-ready":
                never_ready.add(number)
            sim.deploy(release(number, strategy))  # type: ignore[arg-type]
        elif op[0] in ("promote", "abort") and sim.desired.rollout is not None:
            rollout = sim.desired.rollout
            if op[0] == "promote":
                progress = replace(rollout.progress, promote=True)
                sim.desired = replace(sim.desired, rollout=replace(rollout, progress=progress))
            elif sim.desired.stable is not None:
                sim.desired = replace(
                    sim.desired,
                    target=sim.desired.stable,
                    rollout=None,
                    held=sim.desired.target,
                )
        elif op[0] == "switch-back" and sim.desired.rollout is None and sim.desired.warm:
            warm, current = sim.desired.warm, sim.desired.target
            assert current is not None
            rollout = replace(
                make_rollout(
                    warm, from_release=current, started_at=sim.now, rollout_id=99 + number
                ),
                kind=RolloutKind.SWITCH_BACK,
            )
            sim.desired = replace(
                sim.desired,
                target=warm,
                stable=current,
                rollout=rollout,
                warm=None,
                warm_until=None,
            )
        rounds = int(op[1]) if op[0] == "wait" else 3  # type: ignore[call-overload]
        for _ in range(rounds):
            _round_checks(sim)
    # Settle: let the rollout finish (promoting what waits for a person) and the app converge.
    for _ in range(200):
        rollout = sim.desired.rollout
        if rollout is not None and not rollout.progress.promote:
            progress = replace(rollout.progress, promote=True)
            sim.desired = replace(sim.desired, rollout=replace(rollout, progress=progress))
        _round_checks(sim)
        if sim.desired.rollout is None and sim.rounds[-1].plan.actions == ():
            break
    serving = sim.desired.target
    assert serving is not None
    assert sim.rounds[-1].plan.routes == routes_of(serving.number), sim.describe()
    assert {
        p.release
        for p in sim.routed
        if sim.policy is None or dict(sim.policy.shares).get(p.release)
    } == {serving.number}


_STABLE_AT_START: dict[tuple[int, int], int] = {}


def _round_checks(sim: Simulator) -> None:
    before = sim.desired
    rnd = sim.tick()
    groups = {g.role: g for g in rnd.plan.groups}
    for action in rnd.plan.actions:
        if isinstance(action, SetPeers) and action.policy is not None:
            assert sum(share for _, share in action.policy.shares) == 100
    canary = groups.get(GroupRole.CANARY)
    stable = groups.get(GroupRole.STABLE)
    if canary is not None and stable is not None and before.rollout is not None:
        # Every stable instance that was ready when the canary began stays ready and routed.
        ready_stable = sum(
            1 for i in rnd.observed.instances if i.release == stable.number and i.health.ready
        )
        at_start = _STABLE_AT_START.setdefault((id(sim), before.rollout.id), ready_stable)
        routed_stable = sum(1 for p in sim.routed if p.release == stable.number)
        assert routed_stable >= min(at_start, before.scale), sim.describe()
    for finish in sim.finished:
        if finish.state is RolloutState.FAILED and sim.desired.rollout is None:
            stable_no = sim.desired.target.number if sim.desired.target else None
            if sim.policy is not None:
                assert {n for n, share in sim.policy.shares if share} <= {stable_no}
