"""Kept engine lists (shared.py ``InstancesRead``, unit tests in test_shared_reads.py) in the
engine: kiln's own starts and stops are seen by its next round before the engine's events
arrive, a rollout's changes are inspected into the list instead of listing again, and a change
nobody told of is seen at the next resync."""

from __future__ import annotations

from pathlib import Path

from kiln.drivers.base import DriverEvent
from kiln.model import AppKey, Instance
from tests.controller.world import WEB, World, eventually, running, spec


async def test_kiln_sees_its_own_starts_and_stops_before_the_engines_events_arrive(
    world: World,
) -> None:
    """With no engine event delivered at all, rounds still see what the executor did: a
    rollout starts exactly the instances it needs, once each, and replaces every old one."""
    await world.engine.deploy(spec(instances=3), message="", who="t")
    await eventually(lambda: len(world.router.peers.get(WEB, [])) == 3)
    await eventually(lambda: world.store.active_rollout(WEB) is None)
    starts = world.driver.start_instance
    started: list[str] = []

    async def counted(*args: object, **kwargs: object) -> Instance:
        found = await starts(*args, **kwargs)  # type: ignore[arg-type]
        started.append(found.id)
        return found

    world.driver.start_instance = counted  # type: ignore[method-assign]
    silenced: list[DriverEvent] = []
    world.driver.emit = silenced.append  # type: ignore[method-assign]

    await world.engine.deploy(spec("web:v2", instances=3), message="", who="t")
    await eventually(lambda: world.store.active_rollout(WEB) is None)
    await eventually(lambda: world.routed_releases() == {2} and len(world.running()) == 3)

    assert len(started) == 3 and {i.id for i in world.running()} == set(started)
    assert silenced  # the engine had news; kiln did not need it
    assert world.engine.plane.reads.instances.kept_answers > 0


async def test_a_change_no_event_told_is_seen_at_the_next_resync(world: World) -> None:
    await world.engine.deploy(spec(instances=2), message="", who="t")
    await eventually(lambda: len(world.router.peers.get(WEB, [])) == 2)
    reads = world.engine.plane.reads.instances
    reads._clock = lambda: 0.0  # kept lists never age out: only a resync's look sees the crash
    world.driver.emit = lambda event: None  # type: ignore[method-assign]

    victim = world.running(WEB)[0]
    world.driver.crash(victim.id)

    await eventually(lambda: victim.id not in {i.id for i in world.running(WEB)})
    await eventually(lambda: len(world.running(WEB)) == 2)


async def test_a_rollouts_changes_are_inspected_into_the_kept_list(tmp_path: Path) -> None:
    """Each start, stop and engine event of the rollout costs an inspect of one container; the
    engine's list of the app (a scan of every container it runs) is read at most once, when
    the list kept from the first release has aged out. (A resync would list: none comes.)"""
    async with running(World(tmp_path, resync_seconds=60)) as world:
        await world.engine.deploy(spec(instances=3), message="", who="t")
        await eventually(lambda: len(world.router.peers.get(WEB, [])) == 3)
        await eventually(lambda: world.store.active_rollout(WEB) is None)
        lists = world.driver.list_instances
        listed: list[AppKey | None] = []

        async def counted(key: AppKey | None = None) -> list[Instance]:
            listed.append(key)
            return await lists(key)

        world.driver.list_instances = counted  # type: ignore[method-assign]
        reads = world.engine.plane.reads.instances
        patched = reads.patches

        await world.engine.deploy(spec("web:v2", instances=3), message="", who="t")
        await eventually(lambda: world.store.active_rollout(WEB) is None)
        await eventually(lambda: world.routed_releases() == {2} and len(world.running()) == 3)

        assert {i.release for i in world.running()} == {2}
        assert len(listed) <= 1 and reads.patches > patched
