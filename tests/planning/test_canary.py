"""Canary rollouts, round by round: exact shares with pauses, analysis on real traffic,
promotion to all traffic with the old release kept warm, and rollback on bad numbers."""

from __future__ import annotations

from dataclasses import replace

from kiln.model import FinishRollout, GroupRole, Release, RolloutState, RouteEntry
from kiln.spec import Strategy

from .builders import KEY, T0, make_release, seconds, steady
from .simulate import Behaviour, Simulator

STEPS = [{"weight": 10, "pause": "30s"}, {"weight": 50, "pause": "30s"}]
ANALYSIS = {"interval": "10s", "max_error_rate": "1%", "min_requests": 20, "failure_limit": 2}


def canary(number: int, **deploy: object) -> Release:
    return make_release(
        number,
        instances=4,
        strategy=Strategy.CANARY,
        deploy={"steps": STEPS, "rollback_window": "5m", **deploy},
    )


def scene(*, requests: int = 100, **deploy: object) -> tuple[Simulator, int]:
    v1 = make_release(1, instances=4)
    sim = Simulator(
        desired=steady(v1),
        requests_per_round=requests,
        behave=lambda spec: Behaviour(ready_after=1.0),
    )
    sim.add_ready(v1, 4)
    v2 = canary(2, **deploy)
    sim.deploy(v2)
    return sim, 2


def shares_seen(sim: Simulator) -> list[tuple[tuple[int, int], ...]]:
    seen: list[tuple[tuple[int, int], ...]] = []
    for rnd in sim.rounds:
        for action in rnd.plan.actions:
            policy = getattr(action, "policy", None)
            if policy is not None and (not seen or seen[-1] != policy.shares):
                seen.append(policy.shares)
    return seen


def test_canary_of_a_good_release_goes_through_every_step_and_is_promoted() -> None:
    sim, _ = scene(analysis=ANALYSIS)

    finish = sim.run_rollout(max_rounds=400)

    assert finish.state is RolloutState.SUCCEEDED
    assert shares_seen(sim) == [
        ((1, 100), (2, 0)),  # the canary's first instance is starting
        ((1, 90), (2, 10)),
        ((1, 50), (2, 50)),
        ((1, 0), (2, 100)),
    ]
    assert finish.warm_until == sim.now + seconds(300)
    # The old release stays warm: its instances keep running for an instant rollback.
    assert sum(1 for s in sim.instances.values() if s.release == 1 and s.running) == 4
    groups = {g.number: g.role for g in sim.rounds[-1].plan.groups}
    assert groups == {2: GroupRole.STABLE, 1: GroupRole.WARM}


def test_stable_keeps_its_full_size_during_every_canary_step() -> None:
    sim, _ = scene(analysis=ANALYSIS)
    sim.run_rollout(max_rounds=400)

    during = [r for r in sim.rounds if any(g.role is GroupRole.CANARY for g in r.plan.groups)]
    assert during
    for rnd in during:
        stable_ready = sum(1 for i in rnd.observed.instances if i.release == 1 and i.health.ready)
        assert stable_ready == 4, f"round {rnd.number}: stable had {stable_ready} ready"


def test_canary_of_a_failing_release_is_aborted_by_analysis_with_the_numbers() -> None:
    sim, new = scene(analysis=ANALYSIS)
    sim.error_rate[new] = 0.2

    finish = sim.run_rollout(max_rounds=200)

    assert finish.state is RolloutState.FAILED
    assert "error rate 20.0% > 1.0%" in finish.reason
    assert "traffic back to release 1" in finish.reason
    assert finish.hold
    # Two failing windows of 10 s each after the canary took traffic: no later than that.
    took_traffic = next(
        r.now for r in sim.rounds if r.plan.policy and dict(r.plan.policy.shares).get(new)
    )
    assert (sim.now - took_traffic).total_seconds() <= 2 * 10 + 2
    sim.tick()
    assert sim.policy is None or dict(sim.policy.shares) == {1: 100}
    # The failed release is held for inspection: still running, out of the router.
    held = [s for s in sim.instances.values() if s.release == new]
    assert held and all(s.running for s in held)
    assert all(p.release == 1 for p in sim.routed)


def test_a_canary_without_traffic_is_never_promoted_by_analysis() -> None:
    sim, _ = scene(requests=0, analysis={**ANALYSIS, "inconclusive_limit": 3})

    finish = sim.run_rollout(max_rounds=200)

    assert finish.state is RolloutState.FAILED
    assert "inconclusive 3 window(s) in a row" in finish.reason
    assert all(dict(r.plan.policy.shares).get(2, 0) <= 10 for r in sim.rounds if r.plan.policy)


def test_inconclusive_windows_can_pause_instead_of_failing() -> None:
    sim, _ = scene(
        requests=0, analysis={**ANALYSIS, "inconclusive_limit": 2, "on_inconclusive": "pause"}
    )

    sim.run_until(
        lambda s: s.desired.rollout is not None and s.desired.rollout.progress.paused,
        max_rounds=100,
    )
    for _ in range(60):
        sim.tick()

    assert sim.desired.rollout is not None
    assert sim.desired.rollout.state is RolloutState.IN_PROGRESS
    assert sim.desired.rollout.progress.step == 0


def test_a_step_without_pause_waits_for_promote() -> None:
    sim, _ = scene(steps=[{"weight": 25}])
    for _ in range(30):
        sim.tick()
    rollout = sim.desired.rollout
    assert rollout is not None and rollout.progress.step == 0
    assert "waiting for `kiln promote`" in " ".join(
        str(getattr(a, "reason", "")) for r in sim.rounds for a in r.plan.actions
    )

    sim.desired = replace(
        sim.desired, rollout=replace(rollout, progress=replace(rollout.progress, promote=True))
    )
    finish = sim.run_rollout(max_rounds=100)
    assert finish.state is RolloutState.SUCCEEDED


def test_routes_follow_the_release_that_serves() -> None:
    v1 = make_release(1, instances=2, routes=[{"host": "a.test", "path": "/"}])
    sim = Simulator(desired=steady(v1), behave=lambda spec: Behaviour(ready_after=None))
    sim.add_ready(v1, 2)
    v2 = make_release(
        2,
        instances=2,
        strategy=Strategy.CANARY,
        deadline=5,
        routes=[{"host": "b.test", "path": "/"}],
        deploy={"steps": STEPS},
    )
    sim.deploy(v2)

    finish = sim.run_rollout()
    sim.tick()

    assert isinstance(finish, FinishRollout) and finish.state is RolloutState.FAILED
    assert sim.rounds[-1].plan.routes == (
        RouteEntry(host="a.test", path="/", key=KEY),
        RouteEntry(host="web.preview.dev.localhost", path="/", key=KEY, preview=True),
    )
    assert sim.now > T0
