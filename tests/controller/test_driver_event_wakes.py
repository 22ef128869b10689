"""Which engine events wake an app's loop: each wake is a round that lists the app's
containers, so events that carry no news (a create before its start, a signal sent, the notice
that follows a stop) wake nothing, and the rechecks after a death only wake an app whose last
round still listed the container as running."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from kiln.controller.supervisors import recheck_exit
from kiln.drivers.base import DriverEvent
from kiln.model import AppKey, Instance, InstanceStatus
from tests.controller.world import WEB, World, eventually, settled, spec


@contextmanager
def recorded_wakes(world: World) -> Iterator[list[AppKey]]:
    loops = world.engine.plane.loops
    wake = loops.wake
    woken: list[AppKey] = []

    def recording(key: AppKey) -> None:
        woken.append(key)
        wake(key)

    loops.wake = recording  # type: ignore[method-assign]
    try:
        yield woken
    finally:
        loops.wake = wake  # type: ignore[method-assign]


def event(instance: Instance, action: str) -> DriverEvent:
    return DriverEvent(
        key=instance.key,
        instance_id=instance.id,
        container_id=instance.container_id,
        action=action,
    )


async def test_a_create_a_signal_or_a_stop_notice_wakes_no_round_and_a_start_does(
    world: World,
) -> None:
    await world.engine.deploy(spec(instances=1), message="", who="t")
    await settled(world, count=1)
    (instance,) = world.running(WEB)

    with recorded_wakes(world) as woken:
        for action in ("create", "kill", "stop", "start"):
            world.driver.emit(event(instance, action))
        # Events are handled in order: once the start woke the app, the others were seen.
        await eventually(lambda: woken)
        await asyncio.sleep(0.05)

    assert woken == [WEB]


async def test_a_death_is_looked_at_again_only_while_the_last_round_listed_it_running(
    tmp_path: Path,
) -> None:
    world = World(tmp_path)  # not started: nothing but the test moves the loops and lists
    plane = world.engine.plane
    woken: list[AppKey] = []
    plane.loops.wake = woken.append  # type: ignore[method-assign]
    reads = plane.reads.instances
    reads.watching = True
    instance = Instance(
        id="r1-a", key=WEB, release=1, container_id="c" * 64, status=InstanceStatus.RUNNING
    )

    # The engine announced the death before its list showed it: the round saw it running, and
    # the container is looked at again (inspected into the kept list, not listed anew).
    plane.last_instances[WEB] = [instance]
    await reads.of(WEB)
    await reads.of(WEB)
    assert (reads.reads, reads.kept_answers) == (1, 1)
    recheck_exit(plane, WEB, instance.container_id)
    assert woken == [WEB]
    await reads.of(WEB)
    assert (reads.reads, reads.patches) == (1, 1)

    # A round already listed it as exited, or no longer listed it: nothing to look at.
    plane.last_instances[WEB] = [replace(instance, status=InstanceStatus.EXITED)]
    recheck_exit(plane, WEB, instance.container_id)
    plane.last_instances[WEB] = []
    recheck_exit(plane, WEB, instance.container_id)
    assert woken == [WEB]

    # No round of the app yet: look.
    del plane.last_instances[WEB]
    recheck_exit(plane, WEB, instance.container_id)
    assert woken == [WEB, WEB]
