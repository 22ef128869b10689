"""Recreate: every old instance is stopped before the first new one starts."""

from __future__ import annotations

from kiln.model import RolloutState, StartInstance
from kiln.planning import plan
from kiln.spec import Strategy

from .builders import T0, deploying, instance, make_release, observe, of_type, steady
from .simulate import Simulator


def test_recreate_retires_every_old_instance_and_starts_nothing_yet() -> None:
    v1 = make_release(1, strategy=Strategy.RECREATE)
    v2 = make_release(2, strategy=Strategy.RECREATE)
    world = observe(instance(1, 1), instance(1, 2), instance(1, 3))

    result = plan(deploying(v2, from_release=v1), world, T0)

    assert result.retiring == {"r1-000001", "r1-000002", "r1-000003"}
    assert result.peers == ()
    assert not of_type(result, StartInstance)
    assert "waiting for 3 old instance(s) to stop" in result.summary


def test_recreate_never_runs_two_releases_side_by_side() -> None:
    v1 = make_release(1, instances=3, strategy=Strategy.RECREATE, drain=3)
    v2 = make_release(2, instances=3, strategy=Strategy.RECREATE, drain=3)
    sim = Simulator(steady(v1))
    sim.add_ready(v1, 3)
    sim.deploy(v2)

    outcome = sim.run_rollout()

    assert outcome.state is RolloutState.SUCCEEDED
    first_start = next(r.number for r in sim.rounds if of_type(r.plan, StartInstance))
    for round_ in sim.rounds:
        releases = {i.release for i in round_.observed.instances if i.instance.running}
        assert releases != {1, 2}, f"round {round_.number} runs releases 1 and 2 together"
    # Old instances were all gone before the new ones were started.
    before_start = sim.rounds[first_start - 1].observed
    assert all(i.release == 2 for i in before_start.instances)
