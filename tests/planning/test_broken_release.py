"""A release that never passes readiness fails at its deadline; the old one never stops serving."""

from __future__ import annotations

from kiln.model import FinishRollout, RolloutState
from kiln.planning import plan

from .builders import T0, deploying, instance, make_release, observe, of_type, seconds, steady
from .simulate import Behaviour, Simulator


def test_release_that_never_gets_ready_fails_at_its_deadline_and_rolls_back() -> None:
    v1 = make_release(1, instances=3, deadline=30)
    v2 = make_release(2, instances=3, deadline=30)
    sim = Simulator(
        steady(v1),
        behave=lambda spec: Behaviour(
            ready_after=None if spec.release == 2 else 1,
            probe_error="GET /healthz: 503 Service Unavailable",
        ),
    )
    sim.add_ready(v1, 3)
    sim.deploy(v2)

    outcome = sim.run_rollout()

    assert outcome.state is RolloutState.FAILED
    assert sim.now == T0 + seconds(30)
    assert outcome.reason == (
        "release 2 was not ready within its 30s deadline (0/3 instances ready; "
        "last error: GET /healthz: 503 Service Unavailable); rolling back to release 1"
    )
    sim.settle()
    assert {s.release for s in sim.instances.values()} == {1}
    assert len(sim.instances) == 3
    # Invariant 4: the old release kept all its capacity in the router the whole time.
    assert all(r.routed_ready == 3 and r.routed_releases == {1} for r in sim.rounds)


def test_deadline_reason_quotes_the_newest_instance_error() -> None:
    v1 = make_release(1, instances=1, deadline=30)
    v2 = make_release(2, instances=1, deadline=30)
    older = instance(2, 1, ready=False, last_error="timeout", started_at=T0)
    newer = instance(2, 2, ready=False, last_error="connection refused", started_at=T0 + seconds(9))
    world = observe(instance(1, 1), older, newer)

    result = plan(deploying(v2, from_release=v1), world, T0 + seconds(30))

    (finish,) = of_type(result, FinishRollout)
    assert "last error: connection refused" in finish.reason


def test_rollout_in_time_is_not_failed_one_second_before_its_deadline() -> None:
    v1 = make_release(1, instances=1, deadline=30)
    v2 = make_release(2, instances=1, deadline=30)
    world = observe(instance(1, 1), instance(2, 1, ready=False))

    assert not of_type(plan(deploying(v2, from_release=v1), world, T0 + seconds(29)), FinishRollout)


def test_broken_first_deploy_fails_and_leaves_nothing_running() -> None:
    v1 = make_release(1, instances=2, deadline=10)
    sim = Simulator(deploying(v1), behave=lambda _spec: Behaviour(ready_after=None))

    outcome = sim.run_rollout()
    sim.settle()

    assert outcome.state is RolloutState.FAILED
    assert outcome.reason.endswith("no earlier release: app stopped")
    assert sim.instances == {}
    assert sim.desired.target is None
