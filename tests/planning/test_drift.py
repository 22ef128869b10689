"""Drifted instances (``drift: replace``) are replaced through the normal drain path: a
replacement starts first, the drifted one serves until it is ready, then leaves the router,
drains and stops, with what drifted as the reason."""

from __future__ import annotations

from dataclasses import replace

from kiln.model import SetPeers, StartInstance, StopInstance
from kiln.planning import plan

from .builders import T0, deploying, instance, make_release, observe, of_type, steady


def test_a_drifted_single_instance_serves_until_its_replacement_is_ready() -> None:
    v1 = make_release(1, instances=1)
    drifted = replace(instance(1, 1), drift="files changed: C /www/index.html")

    first = plan(steady(v1), observe(drifted), T0)

    assert len(of_type(first, StartInstance)) == 1
    assert not of_type(first, SetPeers) and not of_type(first, StopInstance)
    assert drifted.id not in first.retiring

    fresh = instance(1, 2)
    second = plan(steady(v1), observe(drifted, fresh), T0)

    assert drifted.id in second.retiring
    (peers,) = of_type(second, SetPeers)
    assert [p.instance_id for p in peers.peers] == [fresh.id]
    assert not of_type(second, StartInstance)

    out = replace(drifted, in_router=False, retiring_since=T0, in_flight=0)
    routed = replace(observe(out, fresh), routed=frozenset(p for p in peers.peers))
    (stop,) = of_type(plan(steady(v1), routed, T0.replace(second=5)), StopInstance)
    assert stop.instance_id == drifted.id


def test_a_drifted_instance_retires_at_once_when_the_others_suffice() -> None:
    v1 = make_release(1, instances=2)
    drifted = replace(instance(1, 1), drift="env LOG_LEVEL differs from the release")
    result = plan(steady(v1), observe(drifted, instance(1, 2), instance(1, 3)), T0)
    (peers,) = of_type(result, SetPeers)
    assert drifted.id not in {p.instance_id for p in peers.peers}
    assert drifted.id in result.retiring
    assert not of_type(result, StartInstance)  # two untouched ready instances are enough


def test_drift_waits_while_a_rollout_runs() -> None:
    v1, v2 = make_release(1, instances=2), make_release(2, instances=2)
    drifted = replace(instance(1, 1), drift="image differs")
    result = plan(deploying(v2, from_release=v1), observe(drifted, instance(1, 2)), T0)
    assert drifted.id not in result.retiring  # the rollout replaces it in its turn
