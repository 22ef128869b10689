"""Liveness failures, scaling, stopping and orphans."""

from __future__ import annotations

from dataclasses import replace

from kiln.model import (
    AppKey,
    InstanceStatus,
    RemoveInstance,
    SetPeers,
    StartInstance,
    StopInstance,
)
from kiln.planning import DesiredApp, plan

from .builders import T0, ids, instance, make_release, observe, of_type, seconds, steady
from .simulate import Simulator


def test_instance_failing_liveness_leaves_the_router_then_is_stopped_and_replaced() -> None:
    v1 = make_release(1, instances=2, drain=2)
    sim = Simulator(steady(v1))
    first, second = sim.add_ready(v1, 2)
    sim.fail_liveness(second)

    noticed = sim.tick().plan
    sim.settle()

    (peers,) = of_type(noticed, SetPeers)
    assert [p.instance_id for p in peers.peers] == [first]
    assert second in noticed.retiring
    assert len(of_type(noticed, StartInstance)) == 1
    assert not of_type(noticed, StopInstance)
    stops = [a for r in sim.rounds for a in of_type(r.plan, StopInstance)]
    assert [(s.instance_id, s.reason) for s in stops] == [
        (second, "retired earlier, now out of the router")
    ]
    assert second not in sim.instances and len(sim.instances) == 2


def test_unhealthy_instance_out_of_the_router_is_stopped_at_once() -> None:
    v1 = make_release(1, instances=1)
    sick = instance(1, 1, live=False, in_router=False, last_error="GET /live: timeout")

    result = plan(steady(v1), observe(sick), T0)

    (stop,) = of_type(result, StopInstance)
    assert stop.reason == "failed its liveness check: GET /live: timeout"
    assert len(of_type(result, StartInstance)) == 1


def test_scale_up_starts_the_missing_instances_of_the_same_release() -> None:
    v1 = make_release(1, instances=3)
    world = observe(instance(1, 1), instance(1, 2), instance(1, 3))

    result = plan(steady(v1, scale=5), world, T0)

    starts = of_type(result, StartInstance)
    assert [s.spec.release for s in starts] == [1, 1]
    assert not result.retiring


def test_scale_down_retires_the_newest_instances_and_keeps_the_oldest() -> None:
    v1 = make_release(1, instances=3)
    world = observe(instance(1, 1), instance(1, 2), instance(1, 3))

    result = plan(steady(v1, scale=1), world, T0)

    assert result.retiring == {"r1-000002", "r1-000003"}
    (peers,) = of_type(result, SetPeers)
    assert [p.instance_id for p in peers.peers] == ["r1-000001"]
    assert not of_type(result, StopInstance)


def test_stopped_app_retires_everything_and_empties_the_router() -> None:
    v1 = make_release(1, instances=3)
    stopped = DesiredApp(key=v1.key, scale=3, stopped=True, target=v1, stable=v1, rollout=None)
    sim = Simulator(stopped)
    sim.add_ready(v1, 3)

    first = sim.tick().plan
    sim.settle()

    assert first.retiring == {"r1-old000", "r1-old001", "r1-old002"}
    assert first.peers == ()
    assert first.summary == "stopped"
    assert sim.instances == {}
    assert sim.routed == frozenset()


def test_orphan_containers_of_an_unknown_app_are_all_removed() -> None:
    key = AppKey("dev", "ghost")
    orphans = (
        instance(4, 1, key=key, in_router=False),
        instance(4, 2, key=key, ready=False, in_router=False),
        instance(4, 3, key=key, status=InstanceStatus.EXITED, exit_code=0),
    )

    now = plan(DesiredApp.absent(key), observe(*orphans), T0)
    later = plan(
        DesiredApp.absent(key),
        observe(replace(orphans[0], retiring_since=T0)),
        T0 + seconds(2),
    )

    assert ids(of_type(now, RemoveInstance)) == {"r4-000003"}
    assert ids(of_type(now, StopInstance)) == {"r4-000002"}
    assert now.retiring == {"r4-000001", "r4-000002"}
    assert not of_type(now, SetPeers)
    assert ids(of_type(later, StopInstance)) == {"r4-000001"}
