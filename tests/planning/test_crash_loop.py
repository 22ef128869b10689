"""Self-healing: a crashed instance is removed and replaced, with backoff when it keeps crashing."""

from __future__ import annotations

import itertools

import pytest

from kiln.model import (
    CrashHistory,
    FinishRollout,
    InstanceStatus,
    RemoveInstance,
    RolloutState,
    StartInstance,
)
from kiln.planning import plan

from .builders import T0, deploying, ids, instance, make_release, observe, of_type, seconds, steady
from .simulate import Behaviour, Simulator


def test_first_crash_is_removed_and_replaced_at_once() -> None:
    v1 = make_release(1, instances=2)
    dead = instance(1, 2, status=InstanceStatus.EXITED, exit_code=2, in_router=True)
    history = CrashHistory(
        consecutive=1, last_at=T0, last_reason="exited with code 2", last_release=1
    )
    world = observe(instance(1, 1), dead, crashes=history)

    result = plan(steady(v1), world, T0)

    (remove,) = of_type(result, RemoveInstance)
    assert (remove.instance_id, remove.reason) == ("r1-000002", "exited with code 2")
    assert len(of_type(result, StartInstance)) == 1
    assert [p.instance_id for p in result.peers] == ["r1-000001"]


@pytest.mark.parametrize(
    ("consecutive", "wait_seconds"),
    [(2, 1), (3, 2), (4, 4), (5, 8), (6, 16), (7, 30), (12, 30)],
)
def test_repeated_crashes_delay_the_replacement(consecutive: int, wait_seconds: float) -> None:
    v1 = make_release(1, instances=2)
    dead = instance(1, 2, status=InstanceStatus.EXITED, exit_code=1, in_router=False)
    history = CrashHistory(
        consecutive=consecutive, last_at=T0, last_reason="exited with code 1", last_release=1
    )
    world = observe(instance(1, 1), dead, crashes=history)

    waiting = plan(steady(v1), world, T0 + seconds(0.5))
    resumed = plan(steady(v1), world, T0 + seconds(wait_seconds))

    assert ids(of_type(waiting, RemoveInstance)) == {"r1-000002"}
    assert not of_type(waiting, StartInstance)
    (wait,) = waiting.waits
    assert wait.until == T0 + seconds(wait_seconds)
    assert "crash loop backoff" in wait.reason and "exited with code 1" in wait.reason
    assert "crash loop backoff" in waiting.summary
    assert len(of_type(resumed, StartInstance)) == 1


def test_release_crashing_three_times_in_a_row_fails_its_rollout_early() -> None:
    v1 = make_release(1, instances=2, deadline=600)
    v2 = make_release(2, instances=2, deadline=600)
    sim = Simulator(
        steady(v1),
        behave=lambda spec: (
            Behaviour(ready_after=None, crash_after=1)
            if spec.release == 2
            else Behaviour(ready_after=1)
        ),
    )
    sim.add_ready(v1, 2)
    sim.deploy(v2)

    outcome = sim.run_rollout()

    assert outcome.state is RolloutState.FAILED
    assert outcome.reason == (
        "release 2 crashed 3 times in a row (last: exited with code 1); rolling back to release 1"
    )
    assert sim.now < T0 + seconds(60)
    assert all(r.routed_ready == 2 for r in sim.rounds)
    # The replacements came slower and slower: 0 s, then 1 s of backoff after the second crash.
    assert any("crash loop backoff" in w.reason for r in sim.rounds for w in r.plan.waits)


def test_crashes_from_before_the_rollout_do_not_fail_it() -> None:
    v1 = make_release(1, instances=1)
    v2 = make_release(2, instances=1)
    history = CrashHistory(
        consecutive=3, last_at=T0 - seconds(1), last_reason="exited with code 1", last_release=2
    )
    world = observe(instance(1, 1), crashes=history)

    result = plan(deploying(v2, from_release=v1, started_at=T0), world, T0 + seconds(5))

    assert not of_type(result, FinishRollout)


def test_crash_loop_in_steady_state_keeps_replacing_with_growing_delays() -> None:
    v1 = make_release(1, instances=1)
    sim = Simulator(steady(v1), behave=lambda _spec: Behaviour(ready_after=None, crash_after=1))
    sim.add_ready(v1, 1)
    sim.crash("r1-old000")

    sim.run_until(lambda s: s.crash_history.consecutive >= 8, max_rounds=200)

    starts = [r.now for r in sim.rounds for _ in of_type(r.plan, StartInstance)]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
    # Each replacement lives 1 s, then waits 1, 2, 4, 8, 16 s and at most 30 s before the next.
    assert gaps == [1 + 1, 1 + 2, 1 + 4, 1 + 8, 1 + 16, 1 + 30]
