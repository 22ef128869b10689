"""Rolling update, round by round: capacity never dips, instances leave the router and drain
before they are stopped."""

from __future__ import annotations

from kiln.model import RolloutState, SetPeers, StartInstance, StopInstance
from kiln.planning import plan

from .builders import (
    T0,
    deploying,
    ids,
    instance,
    make_release,
    observe,
    of_type,
    seconds,
    steady,
)
from .simulate import Behaviour, Simulator


def test_rolling_update_of_three_replaces_one_instance_at_a_time() -> None:
    v1 = make_release(1, instances=3, max_surge=1, max_unavailable=0, drain=2)
    v2 = make_release(2, instances=3, max_surge=1, max_unavailable=0, drain=2)
    sim = Simulator(steady(v1), behave=lambda _spec: Behaviour(ready_after=3))
    sim.add_ready(v1, 3)
    sim.deploy(v2)

    outcome = sim.run_rollout()
    sim.settle()

    assert outcome.state is RolloutState.SUCCEEDED
    assert all(r.routed_ready >= 3 for r in sim.rounds), "capacity fell below 3 ready"
    assert all(r.active <= 4 for r in sim.rounds), "more than 3 + max_surge instances"
    assert max(len(of_type(r.plan, StartInstance)) for r in sim.rounds) == 1
    assert {s.release for s in sim.instances.values()} == {2}
    assert len(sim.instances) == 3


def test_new_instance_is_started_while_old_ones_keep_serving() -> None:
    v1 = make_release(1, instances=3)
    v2 = make_release(2, instances=3)
    world = observe(instance(1, 1), instance(1, 2), instance(1, 3))

    result = plan(deploying(v2, from_release=v1), world, T0)

    assert len(of_type(result, StartInstance)) == 1
    assert not result.retiring
    assert not of_type(result, SetPeers)


def test_ready_new_instance_takes_the_place_of_the_oldest_old_one() -> None:
    v1 = make_release(1, instances=3)
    v2 = make_release(2, instances=3)
    world = observe(instance(1, 1), instance(1, 2), instance(1, 3), instance(2, 1, in_router=False))

    result = plan(deploying(v2, from_release=v1), world, T0)

    assert result.retiring == {"r1-000001"}
    (peers,) = of_type(result, SetPeers)
    assert {p.instance_id for p in peers.peers} == {"r1-000002", "r1-000003", "r2-000001"}
    # Still in the router when this plan was made: it is not stopped in the same round.
    assert not of_type(result, StopInstance)
    assert len(of_type(result, StartInstance)) == 1


def test_max_unavailable_lets_an_old_instance_go_before_a_new_one_is_ready() -> None:
    v1 = make_release(1, instances=3, max_surge=0, max_unavailable=1)
    v2 = make_release(2, instances=3, max_surge=0, max_unavailable=1)
    world = observe(instance(1, 1), instance(1, 2), instance(1, 3))

    result = plan(deploying(v2, from_release=v1), world, T0)

    assert result.retiring == {"r1-000001"}
    assert len(of_type(result, StartInstance)) == 1


def test_released_instance_drains_before_it_is_stopped() -> None:
    v1 = make_release(1, instances=1, drain=5)
    v2 = make_release(2, instances=1, drain=5)
    released = instance(1, 1, in_router=False, retiring_since=T0)
    world = observe(released, instance(2, 1))
    desired = deploying(v2, from_release=v1)

    draining = plan(desired, world, T0 + seconds(3))
    drained = plan(desired, world, T0 + seconds(5))

    assert not of_type(draining, StopInstance)
    assert [(w.reason, w.until) for w in draining.waits] == [
        ("draining r1-000001", T0 + seconds(5))
    ]
    (stop,) = of_type(drained, StopInstance)
    assert stop.instance_id == "r1-000001"
    assert stop.grace == v1.spec.stop_grace


def test_instance_still_in_the_router_is_never_stopped() -> None:
    v1 = make_release(1, instances=1, drain=0)
    v2 = make_release(2, instances=1, drain=0)
    # Retired long ago, but the router still lists it (the last SetPeers failed).
    stuck = instance(1, 1, in_router=True, retiring_since=T0 - seconds(600))
    world = observe(stuck, instance(2, 1, in_router=False))

    result = plan(deploying(v2, from_release=v1), world, T0)

    assert not of_type(result, StopInstance)
    (peers,) = of_type(result, SetPeers)
    assert [p.instance_id for p in peers.peers] == ["r2-000001"]


def test_not_ready_old_instance_is_stopped_without_draining() -> None:
    v1 = make_release(1, instances=2)
    v2 = make_release(2, instances=2)
    world = observe(instance(1, 1), instance(1, 2, ready=False))

    result = plan(deploying(v2, from_release=v1), world, T0)

    assert ids(of_type(result, StopInstance)) == {"r1-000002"}


def test_instances_of_a_superseded_release_go_before_the_stable_ones() -> None:
    v1 = make_release(1, instances=2)
    v3 = make_release(3, instances=2)
    # Release 2's rollout was superseded by release 3 half way through.
    world = observe(instance(1, 1), instance(2, 1), instance(3, 1, in_router=False))

    result = plan(deploying(v3, from_release=v1), world, T0)

    assert result.retiring == {"r2-000001"}
