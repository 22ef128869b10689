"""Blue-green rollouts: the new release comes up at full size beside the old one, reachable on
its preview only; promotion switches all traffic at once; the old release stays warm for the
rollback window, so a switch back needs no new instance."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from kiln.model import GroupRole, RolloutKind, RolloutState, RouteEntry, StartInstance
from kiln.planning.reconcile import preview_host
from kiln.spec import Strategy

from .builders import KEY, make_release, make_rollout, seconds, steady
from .simulate import Behaviour, Simulator


def bg(number: int, **deploy: object):  # type: ignore[no-untyped-def]
    return make_release(
        number,
        instances=3,
        strategy=Strategy.BLUE_GREEN,
        deploy={"rollback_window": "5m", **deploy},
    )


def scene(**deploy: object) -> Simulator:
    v1 = make_release(1, instances=3)
    sim = Simulator(desired=steady(v1), behave=lambda spec: Behaviour(ready_after=1.0))
    sim.add_ready(v1, 3)
    sim.deploy(bg(2, **deploy))
    return sim


def promote(sim: Simulator) -> None:
    rollout = sim.desired.rollout
    assert rollout is not None
    progress = replace(rollout.progress, promote=True)
    sim.desired = replace(sim.desired, rollout=replace(rollout, progress=progress))


def test_green_comes_up_at_full_size_on_preview_while_blue_takes_all_traffic() -> None:
    sim = scene()
    for _ in range(10):
        sim.tick()

    last = sim.rounds[-1].plan
    assert sim.desired.rollout is not None  # waits for `kiln promote`
    assert last.policy is not None
    assert dict(last.policy.shares) == {1: 100, 2: 0}
    assert last.policy.preview == 2
    green_peers = [p for p in sim.routed if p.release == 2]
    assert len(green_peers) == 3  # reachable through the preview, before any traffic
    assert RouteEntry(host=preview_host("web", "dev"), path="/", key=KEY, preview=True) in (
        last.routes
    )
    assert "kiln promote" in last.summary


def test_promote_switches_all_traffic_at_once_and_keeps_blue_warm() -> None:
    sim = scene()
    for _ in range(10):
        sim.tick()
    promote(sim)
    finish = sim.run_rollout()

    assert finish.state is RolloutState.SUCCEEDED
    assert sim.policy is not None and dict(sim.policy.shares) == {1: 0, 2: 100}
    sim.tick()
    assert {g.number: g.role for g in sim.rounds[-1].plan.groups} == {
        2: GroupRole.STABLE,
        1: GroupRole.WARM,
    }
    blue = [p for p in sim.routed if p.release == 1]
    assert len(blue) == 3  # still routable: a rollback is a policy switch


def test_auto_promote_after_healthy_time() -> None:
    sim = scene(auto_promote_after="5s")
    finish = sim.run_rollout()
    assert finish.state is RolloutState.SUCCEEDED
    ready_round = next(
        r
        for r in sim.rounds
        if sum(1 for i in r.observed.instances if i.release == 2 and i.health.ready) == 3
    )
    assert sim.now - ready_round.now >= seconds(5)


def test_switch_back_inside_the_window_starts_no_instance() -> None:
    sim = scene(auto_promote_after="1s")
    sim.run_rollout()
    sim.tick()
    v1, v2 = sim.desired.warm, sim.desired.target
    assert v1 is not None and v2 is not None
    rollout = replace(
        make_rollout(v1, from_release=v2, started_at=sim.now, rollout_id=9),
        kind=RolloutKind.SWITCH_BACK,
    )
    sim.desired = replace(
        sim.desired, target=v1, stable=v2, rollout=rollout, warm=None, warm_until=None
    )

    back = sim.tick()
    finish = sim.finished[-1]

    assert finish.state is RolloutState.SUCCEEDED and finish.rollout_id == 9
    assert not [a for a in back.plan.actions if isinstance(a, StartInstance)]
    assert sim.policy is not None and dict(sim.policy.shares) == {1: 100, 2: 0}


def test_the_warm_release_is_stopped_when_its_window_ends() -> None:
    sim = scene(auto_promote_after="1s", rollback_window="20s")
    sim.run_rollout()
    until = sim.desired.warm_until
    assert until is not None
    sim.run_until(lambda s: s.now > until + timedelta(seconds=40))
    assert not [s for s in sim.instances.values() if s.release == 1]
