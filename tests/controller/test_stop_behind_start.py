"""An app's stop begins once its starts under way are done (``STOP_BEHIND_START``): on one
engine a stop and a start contend, and the start is what a rollout waits on."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

from kiln.controller import executor
from kiln.model import Instance, InstanceSpec, StartInstance, StopInstance
from kiln.planning import Plan
from tests.controller.world import WEB, World, eventually, instance_spec, spec

EXTRA = "r1-extra"


def gate_extra_start(world: World) -> tuple[asyncio.Event, asyncio.Event]:
    """The start of EXTRA waits until the test opens the gate."""
    start = world.driver.start_instance
    gate, waiting = asyncio.Event(), asyncio.Event()

    async def gated(spec: InstanceSpec, *, secrets: Mapping[str, bytes] | None = None) -> Instance:
        if spec.id == EXTRA:
            waiting.set()
            await gate.wait()
        return await start(spec, secrets=secrets)

    world.driver.start_instance = gated  # type: ignore[method-assign]
    return gate, waiting


async def stop_beside_a_start(world: World) -> tuple[Instance, asyncio.Task[None]]:
    """One round of WEB that stops its instance and starts EXTRA, under way."""
    await world.engine.deploy(spec(instances=1), message="", who="t")
    await eventually(lambda: len(world.router.peers.get(WEB, [])) == 1)
    (old,) = world.running()
    extra = instance_spec(WEB, EXTRA)
    round_ = Plan(
        actions=(
            StopInstance(
                instance_id=old.id,
                container_id=old.container_id,
                release=1,
                grace=0,
                reason="replaced",
            ),
            StartInstance(spec=extra, reason="replacing it"),
        )
    )
    plane = world.engine.plane
    task = asyncio.create_task(
        world.engine.executor.execute(WEB, round_, plane.observer.memory[WEB])
    )
    return old, task


async def test_a_stop_waits_for_the_start_beside_it(world: World) -> None:
    gate, waiting = gate_extra_start(world)
    old, round_ = await stop_beside_a_start(world)
    await asyncio.wait_for(waiting.wait(), timeout=10)
    for _ in range(20):
        await asyncio.sleep(0)
    assert old.id in {i.id for i in world.running()}  # the stop waits for the start...

    gate.set()
    await round_
    await eventually(lambda: old.id not in {i.id for i in world.running()})  # ...then goes
    assert EXTRA in {i.id for i in world.running()}


async def test_a_start_that_hangs_holds_no_stop_for_long(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(executor, "STOP_BEHIND_START", 0.05)
    gate, waiting = gate_extra_start(world)
    old, round_ = await stop_beside_a_start(world)
    await asyncio.wait_for(waiting.wait(), timeout=10)

    await eventually(lambda: old.id not in {i.id for i in world.running()})  # the gate is shut
    assert not round_.done()
    gate.set()
    await round_


async def test_an_instance_kiln_is_stopping_is_not_probed_again_meanwhile(world: World) -> None:
    """A stop can wait (behind a start, or a slow SIGTERM): the app's rounds meanwhile still
    list the instance as running, and must not take it back into the health checks, where a
    ready probe would count it as serving again."""
    await world.engine.deploy(spec(instances=1), message="", who="t")
    await eventually(lambda: len(world.router.peers.get(WEB, [])) == 1)
    (sick,) = world.running()
    stop = world.driver.stop_instance
    stops_held = asyncio.Event()

    async def held(container_id: str, *, grace: float) -> None:
        await stops_held.wait()
        await stop(container_id, grace=grace)

    world.driver.stop_instance = held  # type: ignore[method-assign]
    try:
        world.health.fail_liveness(sick.id)
        await eventually(
            lambda: any(
                e.kind == "instance.stopping" and e.instance == sick.id
                for e in world.store.list_events(key=WEB)
            )
        )
        reads = world.engine.plane.reads.instances
        listed = reads.reads
        await eventually(lambda: reads.reads >= listed + 3)  # rounds at the resync meanwhile

        assert sick.id not in world.health.tracked_ids()
    finally:
        stops_held.set()
    await eventually(lambda: sick.id not in {i.id for i in world.running()})
