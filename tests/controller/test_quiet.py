"""Quiet apps over fakes: an app with routes and no requests lately gets its instances checked
every idle_interval (the monitor is told), one with requests or a rollout in progress does not,
and new instances of a quiet app start quiet."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kiln.config.file import FileSettings, HealthSettings
from kiln.model import AppKey
from tests.controller.world import WEB, World, eventually, running, spec

WORKER = AppKey("dev", "worker")


@pytest.fixture
async def quiet_world(tmp_path: Path) -> AsyncIterator[World]:
    # Quiet after 0.3 s without a request; the test looks at NGINX's counters itself (look()),
    # the background look every 5 s only repeats what the test already saw.
    async with running(
        World(tmp_path, file=FileSettings(health=HealthSettings(quiet_after=0.3)))
    ) as w:
        yield w


async def settled(world: World, key: AppKey = WEB, count: int = 3) -> None:
    await eventually(
        lambda: (
            world.store.active_rollout(key) is None
            and len([i for i in world.running(key) if world.health.status(i.id).ready]) == count
        )
    )


def quiet_flags(world: World, key: AppKey = WEB) -> set[bool]:
    return {world.health.quiet[i.id] for i in world.running(key)}


async def test_an_app_without_requests_is_quiet_and_requests_make_it_active(
    quiet_world: World,
) -> None:
    world = quiet_world
    await world.engine.deploy(spec(), message="", who="t")
    await settled(world)
    watch = world.engine.quiet_watch

    await watch.look()
    assert quiet_flags(world) == {True}
    assert (await world.engine.status(WEB)).quiet is True

    world.router.add_traffic(WEB, 1, requests=5)
    await watch.look()
    assert quiet_flags(world) == {False}
    assert (await world.engine.status(WEB)).quiet is False

    # Still requests at the next look: active.
    world.router.add_traffic(WEB, 1, requests=1)
    await watch.look()
    assert quiet_flags(world) == {False}

    # None for longer than quiet_after: quiet again, and a new instance starts quiet.
    await asyncio.sleep(0.35)
    await watch.look()
    assert quiet_flags(world) == {True}
    await world.engine.scale(WEB, 4, who="t")
    await settled(world, count=4)
    assert quiet_flags(world) == {True}


async def test_an_app_in_a_rollout_is_not_quiet(quiet_world: World) -> None:
    world = quiet_world
    world.health.healthy_releases = {1}
    await world.engine.deploy(spec(), message="", who="t")
    await settled(world)
    await world.engine.quiet_watch.look()
    assert quiet_flags(world) == {True}

    await world.engine.deploy(spec("web:v2"), message="", who="t")  # release 2 never ready
    await eventually(lambda: world.store.active_rollout(WEB) is not None)
    await world.engine.quiet_watch.look()
    assert quiet_flags(world) == {False}  # every instance, old and new
    assert (await world.engine.status(WEB)).quiet is False


async def test_an_app_without_routes_is_never_quiet(quiet_world: World) -> None:
    world = quiet_world
    await world.engine.deploy(
        "app: worker\nimage: web:v1\ninstances: 2\nstop_grace: 0s\nhealth: {command: [check]}\n",
        message="",
        who="t",
    )
    await settled(world, WORKER, count=2)
    await asyncio.sleep(0.35)
    await world.engine.quiet_watch.look()
    assert quiet_flags(world, WORKER) == {False}


async def test_quiet_after_zero_keeps_every_app_active(tmp_path: Path) -> None:
    quiet_off = World(tmp_path, file=FileSettings(health=HealthSettings(quiet_after=0)))
    async with running(quiet_off) as world:
        await world.engine.deploy(spec(), message="", who="t")
        await settled(world)
        await world.engine.quiet_watch.look()
        assert quiet_flags(world) == {False}
