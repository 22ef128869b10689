"""Drift over fakes: the checker finds a tampered instance, the planner replaces it without
dropping capacity (drift: replace) or leaves it (drift: report); each finding is one event."""

from __future__ import annotations

import asyncio

from tests.controller.world import WEB, World, settled, spec


def drift_events(world: World) -> list[str]:
    return [e.reason for e in world.store.list_events(key=WEB) if e.kind == "drift.detected"]


async def test_a_tampered_instance_is_replaced_while_capacity_holds(world: World) -> None:
    await world.engine.deploy(spec(), message="", who="t")
    await settled(world)
    victim = world.running()[0]
    world.driver.tamper(victim.container_id, "env LOG_LEVEL differs from the release")

    report = await world.engine.drift(WEB)

    (finding,) = report.findings
    assert (finding.kind, finding.instance, finding.action) == ("drifted", victim.id, "replace")
    lowest = 3
    for _ in range(2000):
        lowest = min(lowest, len(world.router.peers.get(WEB, [])))
        if victim.id not in {i.id for i in world.running()} and len(world.running()) == 3:
            break
        await asyncio.sleep(0.005)
    await settled(world)
    assert victim.id not in {i.id for i in world.running()}
    assert lowest >= 3  # the drifted one served until its replacement was ready
    await world.engine.plane.events.flush()  # the bus writes events in the background
    (reason,) = drift_events(world)
    assert "env LOG_LEVEL differs from the release; replacing it (drift: replace)" in reason
    assert (await world.engine.drift(WEB)).findings == ()


async def test_drift_report_leaves_the_instance_and_says_so_once(world: World) -> None:
    await world.engine.deploy(spec(extra="drift: report\n"), message="", who="t")
    await settled(world)
    victim = world.running()[0]
    world.driver.tamper(victim.container_id, "image: runs sha256:abc, the release has sha256:def")

    first = await world.engine.drift(WEB)
    second = await world.engine.drift(WEB)

    assert [f.action for f in first.findings] == ["report"] == [f.action for f in second.findings]
    assert victim.id in {i.id for i in world.running()}
    await world.engine.plane.events.flush()  # the bus writes events in the background
    (reason,) = drift_events(world)
    assert "left running (drift: report)" in reason
