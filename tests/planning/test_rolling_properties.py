"""Properties of rolling updates over random sizes, surge/unavailable budgets, readiness delays
and crashes, played out round by round in the simulator (which itself checks, every round, that
no action targets a missing instance, nothing routed is stopped, released instances drain, and
every start uses the target's digest)."""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kiln.model import InstanceSpec, Release, RolloutState

from .builders import deploying, make_release, steady
from .simulate import Behaviour, Simulator

_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def budgets(draw: st.DrawFn) -> tuple[int, int]:
    max_surge = draw(st.integers(0, 3))
    max_unavailable = draw(st.integers(0 if max_surge else 1, 3))
    return max_surge, max_unavailable


@dataclass(frozen=True)
class Case:
    n: int
    max_surge: int
    max_unavailable: int
    delays: list[float]  # readiness delays of the instances started, in order
    crashes: list[tuple[int, int]]  # (round, which running instance) crashes then
    broken: bool  # the new release never passes readiness


@st.composite
def rollouts(draw: st.DrawFn) -> Case:
    max_surge, max_unavailable = draw(budgets())
    return Case(
        n=draw(st.integers(0, 6)),
        max_surge=max_surge,
        max_unavailable=max_unavailable,
        delays=draw(st.lists(st.floats(0, 8, allow_nan=False), min_size=1, max_size=12)),
        crashes=draw(st.lists(st.tuples(st.integers(1, 40), st.integers(0, 20)), max_size=3)),
        broken=draw(st.booleans()),
    )


def _simulate(case: Case) -> Simulator:
    v1, v2 = (
        make_release(
            number,
            instances=case.n,
            max_surge=case.max_surge,
            max_unavailable=case.max_unavailable,
            deadline=60,
        )
        for number in (1, 2)
    )
    delays = list(case.delays)

    def behave(spec: InstanceSpec) -> Behaviour:
        if spec.release == 2 and case.broken:
            return Behaviour(ready_after=None)
        delay = delays.pop(0) if len(delays) > 1 else delays[0]
        return Behaviour(ready_after=delay)

    sim = Simulator(steady(v1), behave=behave)
    sim.add_ready(v1, case.n)
    sim.deploy(v2)
    return sim


def _run_with_crashes(sim: Simulator, crashes: list[tuple[int, int]]) -> None:
    pending = sorted(crashes)
    for round_number in range(1, 400):
        while pending and pending[0][0] == round_number:
            _, victim = pending.pop(0)
            running = sorted(i for i, s in sim.instances.items() if s.running)
            if running:
                sim.crash(running[victim % len(running)])
        sim.tick()
        if sim.desired.rollout is None and not pending:
            return
    raise AssertionError(f"rollout never finished: {sim.describe()}")


@_SETTINGS
@given(rollouts())
def test_rolling_update_keeps_the_ready_floor_and_the_surge_ceiling(case: Case) -> None:
    sim = _simulate(case)
    _run_with_crashes(sim, case.crashes)
    n, surge = case.n, case.max_surge
    floor = max(n - case.max_unavailable, 0)
    for round_ in sim.rounds:
        # Each crash may take one ready instance away until its replacement is ready.
        assert round_.routed_ready >= floor - round_.crashes_so_far, (round_, sim.describe())
        assert round_.active <= n + surge, (round_.number, round_.active, sim.describe())


@_SETTINGS
@given(rollouts())
def test_rolling_update_finishes_and_converges(case: Case) -> None:
    sim = _simulate(case)
    _run_with_crashes(sim, case.crashes)
    outcome = sim.finished[-1]
    n = case.n
    if case.broken and n > 0:
        assert outcome.state is RolloutState.FAILED
    elif not case.crashes:
        assert outcome.state is RolloutState.SUCCEEDED
    sim.settle()
    # Converged: the surviving release serves with all its instances ready and routed.
    release = sim.desired.target
    assert release is not None
    survivors = list(sim.instances.values())
    assert all(s.release == release.number and s.ready for s in survivors), sim.describe()
    assert len(survivors) == n
    assert {p.instance_id for p in sim.routed} == {s.id for s in survivors}


@_SETTINGS
@given(rollouts())
def test_old_release_stays_routed_while_the_new_one_is_unproven(case: Case) -> None:
    """Invariant 4, for budgets that leave at least one instance standing (unavailable < n)."""
    sim = _simulate(case)
    _run_with_crashes(sim, [])
    if case.max_unavailable >= case.n:
        return
    for round_ in sim.rounds:
        assert round_.routed_releases, f"round {round_.number}: nothing routed; {sim.describe()}"


@_SETTINGS
@given(rollouts())
def test_planning_never_modifies_a_release(case: Case) -> None:
    sim = _simulate(case)
    target = sim.desired.target
    stable = sim.desired.stable
    assert target is not None and stable is not None
    before = (copy.deepcopy(target), copy.deepcopy(stable))
    _run_with_crashes(sim, case.crashes)
    assert (target, stable) == before
    assert target.spec.model_dump() == before[0].spec.model_dump()


def test_first_deploy_scenario_also_runs_through_the_simulator() -> None:
    v1 = make_release(1, instances=3)
    sim = Simulator(deploying(v1))
    outcome = sim.run_rollout()
    assert outcome.state is RolloutState.SUCCEEDED


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[int, str, int]]:
    """Operations at rounds: deploy a new release, scale to n, crash the i-th instance."""
    ops = st.tuples(
        st.integers(1, 30), st.sampled_from(["deploy", "scale", "crash"]), st.integers(0, 5)
    )
    return sorted(draw(st.lists(ops, max_size=6)))


@_SETTINGS
@given(budgets(), st.integers(0, 4), histories(), st.floats(0, 6))
def test_any_history_of_deploys_scales_and_crashes_converges(
    budget: tuple[int, int], n: int, history: list[tuple[int, str, int]], delay: float
) -> None:
    max_surge, max_unavailable = budget

    def release(number: int, instances: int) -> Release:
        return make_release(
            number,
            instances=instances,
            max_surge=max_surge,
            max_unavailable=max_unavailable,
            deadline=60,
        )

    sim = Simulator(steady(release(1, n)), behave=lambda _spec: Behaviour(ready_after=delay))
    sim.add_ready(release(1, n), n)
    numbers = itertools.count(2)
    pending = list(history)
    for round_number in range(1, 40):
        while pending and pending[0][0] == round_number:
            _, op, arg = pending.pop(0)
            if op == "deploy":
                sim.deploy(release(next(numbers), sim.desired.scale))
            elif op == "scale":
                sim.scale(arg)
            else:
                running = sorted(i for i, s in sim.instances.items() if s.running)
                if running:
                    sim.crash(running[arg % len(running)])
        sim.tick()

    sim.run_until(lambda s: s.desired.rollout is None, max_rounds=200)
    sim.settle()
    target = sim.desired.target
    assert target is not None
    assert sorted(s.release for s in sim.instances.values()) == [target.number] * sim.desired.scale
    assert {p.instance_id for p in sim.routed} == set(sim.instances)
