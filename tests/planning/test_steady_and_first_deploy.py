"""An app at rest plans nothing; a first deploy starts everything and routes what is ready."""

from __future__ import annotations

from kiln.model import FinishRollout, RolloutState, SetPeers, StartInstance
from kiln.planning import plan

from .builders import T0, deploying, instance, make_release, observe, of_type, seconds, steady
from .simulate import Behaviour, Simulator


def test_steady_state_plans_nothing() -> None:
    v1 = make_release(1, instances=3)
    world = observe(instance(1, 1), instance(1, 2), instance(1, 3))

    result = plan(steady(v1), world, T0)

    assert result.actions == ()
    assert result.waits == ()
    assert result.ready == 3
    assert result.summary == "release 1: 3/3 ready"


def test_planning_the_same_inputs_twice_gives_the_same_plan() -> None:
    v1 = make_release(1, instances=3)
    v2 = make_release(2, instances=3)
    world = observe(instance(1, 1), instance(1, 2), instance(1, 3), instance(2, 1))
    desired = deploying(v2, from_release=v1)

    assert plan(desired, world, T0 + seconds(5)) == plan(desired, world, T0 + seconds(5))


def test_app_without_a_port_never_touches_the_router() -> None:
    worker = make_release(1, instances=2, port=None)
    world = observe(instance(1, 1, in_router=False), instance(1, 2, in_router=False))

    assert plan(steady(worker), world, T0).actions == ()


def test_first_deploy_starts_every_wanted_instance_at_once() -> None:
    v1 = make_release(1, instances=3, max_surge=1)

    result = plan(deploying(v1), observe(), T0)

    starts = of_type(result, StartInstance)
    assert len(starts) == 3
    assert len({s.spec.id for s in starts}) == 3
    assert {s.spec.image for s in starts} == {v1.digest}
    assert not of_type(result, FinishRollout)


def test_first_deploy_routes_instances_as_they_become_ready_then_succeeds() -> None:
    v1 = make_release(1, instances=3)
    delays = iter([1.0, 3.0, 5.0])
    sim = Simulator(deploying(v1), behave=lambda _spec: Behaviour(ready_after=next(delays)))

    outcome = sim.run_rollout()

    assert outcome.state is RolloutState.SUCCEEDED
    assert outcome.reason == "release 1 serves all traffic: 3/3 ready"
    routed_sizes = [len(a.peers) for r in sim.rounds for a in of_type(r.plan, SetPeers)]
    assert routed_sizes == [1, 2, 3]
    last = sim.rounds[-1].plan
    # The router gets the last instance before the rollout is declared done.
    assert [type(a) for a in last.actions] == [SetPeers, FinishRollout]


def test_deploy_at_scale_zero_succeeds_at_once() -> None:
    v1 = make_release(1, instances=0)

    result = plan(deploying(v1), observe(), T0)

    (finish,) = of_type(result, FinishRollout)
    assert finish.state is RolloutState.SUCCEEDED
    assert not of_type(result, StartInstance)
