"""Legacy containers (kiln's labels, no installation id: made by a kiln from before ids) of a
destroyed app go with its other containers; those of releases this kiln never made stay."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from kiln.model import Instance
from kiln.store.sqlite import SqliteStore
from tests.controller.world import WEB, World, eventually, spec


async def deployed_with_legacy(world: World) -> tuple[Instance, Instance]:
    """web's release 1 running, plus a legacy container of release 1 and one of a release
    this kiln never made (7)."""
    await world.engine.deploy(spec(instances=1), message="", who="t")
    await eventually(lambda: len(world.running()) == 1)
    started = next(s for s in world.driver.started if s.release == 1)
    ours = world.driver.plant(
        replace(started, id="r1-web-legacy", name="web-r1-web-legacy"), installation=None
    )
    unknown = world.driver.plant(
        replace(started, id="r7-web-legacy", name="web-r7-web-legacy", release=7),
        installation=None,
    )
    return ours, unknown


def ids(world: World) -> set[str]:
    return {i.id for i in world.running()}


async def test_destroy_wait_removes_legacy_containers_of_its_releases_and_waits_for_them(
    world: World,
) -> None:
    ours, unknown = await deployed_with_legacy(world)
    await asyncio.wait_for(world.engine.destroy(WEB, who="t", wait=True), timeout=15)
    # Gone by the time --wait answers; the one of an unknown release may be another kiln's.
    assert ids(world) == {unknown.id}
    assert ours.container_id not in world.driver.containers


async def test_legacy_containers_of_a_destroyed_app_are_removed_after_a_restart(
    world: World,
) -> None:
    ours, unknown = await deployed_with_legacy(world)
    await world.engine.destroy(WEB, who="t")
    await world.engine.close()  # kiln stops at once; its loop may not have got to them

    world.store = SqliteStore(world.settings.db_path)
    world.engine = world.new_engine()
    await world.engine.start()
    await eventually(lambda: ids(world) == {unknown.id}, timeout=15)
    assert ours.container_id not in world.driver.containers
