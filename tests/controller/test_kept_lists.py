"""Kept engine lists (shared.py ``InstancesRead``): while the engine's event stream is open, an
app's rounds reuse its last list until a change of its containers is told (an engine event,
or a start, stop or removal by kiln itself), and never for longer than ``KEPT_FOR``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kiln.controller.shared import KEPT_FOR, InstancesRead
from kiln.drivers.base import DriverEvent
from kiln.model import AppKey, Instance, InstanceStatus
from tests.controller.world import WEB, World, eventually, running, spec

API = AppKey("dev", "api")


class CountingListerFake:
    """Just enough of a driver for ``InstancesRead``: answers lists from ``containers`` and
    counts them; with ``gate`` set, a list waits for it."""

    def __init__(self, placement: str = "instances") -> None:
        self.placement = placement
        self.containers: dict[AppKey, list[Instance]] = {}
        self.lists = 0
        self.gate: asyncio.Event | None = None

    async def list_instances(self, key: AppKey | None = None) -> list[Instance]:
        self.lists += 1
        if self.gate is not None:
            await self.gate.wait()
        if key is None:
            return [i for found in self.containers.values() for i in found]
        return list(self.containers.get(key, ()))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def instance(key: AppKey, n: int) -> Instance:
    return Instance(
        id=f"r1-{n:06x}",
        key=key,
        release=1,
        container_id=f"{n:064x}",
        status=InstanceStatus.RUNNING,
    )


def read_over(lister: CountingListerFake, clock: Clock, *, watching: bool = True) -> InstancesRead:
    read = InstancesRead(lister, clock=clock)  # type: ignore[arg-type]
    read.watching = watching
    return read


async def test_an_apps_rounds_reuse_its_list_until_a_change_of_it_is_told() -> None:
    lister, clock = CountingListerFake(), Clock()
    lister.containers = {WEB: [instance(WEB, 1)], API: [instance(API, 2)]}
    read = read_over(lister, clock)

    assert await read.of(WEB) == [instance(WEB, 1)]
    assert await read.of(API) == [instance(API, 2)]
    assert lister.lists == 2

    lister.containers[WEB].append(instance(WEB, 3))  # e.g. a start whose event is on its way
    assert await read.of(WEB) == [instance(WEB, 1)]
    assert lister.lists == 2 and read.kept_answers == 1

    read.changed(WEB)
    assert await read.of(WEB) == [instance(WEB, 1), instance(WEB, 3)]
    assert await read.of(API) == [instance(API, 2)]  # another app's change leaves it kept
    assert lister.lists == 3


async def test_a_kept_list_ages_out_and_nothing_is_kept_without_the_event_stream() -> None:
    lister, clock = CountingListerFake(), Clock()
    read = read_over(lister, clock)
    await read.of(WEB)
    clock.now += KEPT_FOR
    await read.of(WEB)
    assert lister.lists == 2

    read.watching = False  # the stream ended: changes would go untold
    await read.of(WEB)
    await read.of(WEB)
    assert lister.lists == 4 and read.kept_answers == 0


async def test_a_list_read_while_a_change_came_is_not_kept() -> None:
    lister, clock = CountingListerFake(), Clock()
    read = read_over(lister, clock)
    lister.gate = asyncio.Event()
    in_flight = asyncio.create_task(read.of(WEB))
    await eventually(lambda: lister.lists == 1)
    read.changed(WEB)  # told while the engine was answering: the answer may predate it
    lister.gate.set()
    await in_flight

    await read.of(WEB)
    assert lister.lists == 2


async def test_the_stream_reopening_drops_every_kept_list() -> None:
    lister, clock = CountingListerFake(), Clock()
    read = read_over(lister, clock)
    await read.get()  # a full list keeps every app it saw...
    lister.containers = {WEB: [instance(WEB, 1)]}
    read.changed(None)
    assert await read.of(WEB) == [instance(WEB, 1)]
    assert lister.lists == 2


async def test_an_orchestrators_lists_are_never_kept() -> None:
    lister, clock = CountingListerFake(placement="groups"), Clock()
    read = read_over(lister, clock)
    await read.of(WEB)
    await read.of(WEB)
    assert lister.lists == 2


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = World(tmp_path)
    async with running(w):
        yield w


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
