"""What kiln keeps to report drift once (``drifted``, ``drift_replacing``, ``drift_reported``,
``removed_by_kiln``) holds only containers that exist, with checks on demand only
(``drift.interval: 0``): a server that replaces instances all day, or destroys apps, does not
grow. What it reports stays the same: each finding once, none for containers kiln removed
itself, and a replaced instance's ``drift.corrected`` once it is gone."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from pathlib import Path

import pytest

from kiln.config.file import DriftSettings, FileSettings
from kiln.controller.drift import report_removed
from kiln.controller.runtime import ControlPlane
from kiln.drivers.base import DriverEvent
from kiln.errors import TemporaryFailure
from kiln.model import AppKey, Instance, InstanceSpec
from tests.controller.world import WEB, World, eventually, running, settled, spec

API = AppKey("dev", "api")


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    # Checks only on demand: nothing but the rounds (and forgetting an app) prunes.
    w = World(tmp_path, file=FileSettings(drift=DriftSettings(interval=0)))
    w.health.healthy_releases = set(range(1, 50))
    async with running(w):
        yield w


def api_spec(extra: str = "") -> str:
    return spec("api:v1", extra=extra).replace("app: web", "app: api")


async def replaced(world: World, instance_id: str) -> None:
    await eventually(lambda: instance_id not in {i.id for i in world.running()})
    await settled(world)


async def running_release(world: World, number: int) -> None:
    await eventually(lambda: {i.release for i in world.running()} == {number})
    await settled(world)


def kept_for_gone(world: World) -> dict[str, set[object]]:
    """The drift records of containers (or instances) the engine no longer has."""
    plane = world.engine.plane
    containers = set(world.driver.containers)
    instances = {c.instance.id for c in world.driver.containers.values()}
    gone: dict[str, set[object]] = {
        "drifted": set(plane.drifted) - instances,
        "drift_replacing": set(plane.drift_replacing) - instances,
        "drift_reported": set(plane.drift_reported) - containers,
        "removed_by_kiln": set(plane.removed_by_kiln) - containers,
        "drift_records": {
            record
            for records in plane.drift_records.values()
            for record in records
            if record[1] not in containers
        },
    }
    return {what: ids for what, ids in gone.items() if ids}


def kept_for_app(plane: ControlPlane, key: AppKey) -> dict[str, object]:
    containers = {c for instance_id, c in plane.drift_records.get(key, ())}
    kept: dict[str, object] = {
        "drift_records": key in plane.drift_records,
        "drift_reported": containers & set(plane.drift_reported),
        "removed_by_kiln": containers & plane.removed_by_kiln,
    }
    return {what: value for what, value in kept.items() if value}


async def drift_events(
    world: World, key: AppKey = WEB, kind: str = "drift.detected"
) -> list[tuple[str | None, str]]:
    await world.engine.plane.events.flush()  # the bus writes events in the background
    return [
        (e.instance, e.reason)
        for e in world.store.list_events(key=key, limit=10_000)
        if e.kind == kind
    ]


async def test_replaced_stopped_and_hand_removed_containers_leave_no_drift_records(
    world: World,
) -> None:
    plane = world.engine.plane
    await world.engine.deploy(spec(), message="", who="t")
    await settled(world)
    tampered, by_hand = [], []
    cycles = 6
    for n in range(cycles):
        # An on-demand check finds a tampered instance: recorded while it exists, replaced.
        victim = world.running()[0]
        world.driver.tamper(victim.container_id, f"env LOG_LEVEL differs from the release ({n})")
        (finding,) = (await world.engine.drift(WEB)).findings
        assert (finding.instance, finding.action) == (victim.id, "replace")
        assert plane.drifted[victim.id] and victim.container_id in plane.drift_reported
        tampered.append(victim.id)
        await replaced(world, victim.id)
        # Someone removes a container by hand: reported, replaced.
        gone = world.running()[0]
        assert await world.driver.remove_instance(gone.container_id)
        by_hand.append(gone.id)
        await replaced(world, gone.id)
        # A new release replaces (stops) every instance.
        await world.engine.deploy(spec("web:v2" if n % 2 == 0 else "web:v1"), message="", who="t")
        await running_release(world, n + 2)

    assert len(world.driver.stopped) + len(world.driver.removed) >= cycles * 5
    await eventually(lambda: not kept_for_gone(world))
    assert kept_for_gone(world) == {}
    assert len(plane.drift_reported) + len(plane.removed_by_kiln) + len(plane.drifted) <= 3
    # Reported as before: each tampered and each hand-removed instance once, nothing else
    # (kiln's own stops and removals are no drift).
    events = await drift_events(world)
    assert sorted(i or "" for i, _ in events) == sorted(tampered + by_hand)
    assert all("removed outside kiln" in r for i, r in events if i in by_hand)
    # Each replaced one is corrected once it is gone, with no scheduled check to notice.
    corrected = await drift_events(world, kind="drift.corrected")
    assert sorted(i or "" for i, _ in corrected) == sorted(tampered)
    assert (await world.engine.drift(WEB)).findings == ()


async def test_a_late_destroy_event_of_a_pruned_container_reports_nothing(
    world: World,
) -> None:
    plane = world.engine.plane
    await world.engine.deploy(spec(), message="", who="t")
    await settled(world)
    first = world.running()
    gone = first[0]
    assert await world.driver.remove_instance(gone.container_id)  # by hand: reported once
    await replaced(world, gone.id)
    await world.engine.deploy(spec("web:v2"), message="", who="t")  # kiln stops the rest
    await running_release(world, 2)
    await eventually(lambda: not kept_for_gone(world))

    # The engine's destroy events of those containers come after a round saw them gone and
    # dropped their records (Docker's event stream can lag its container list).
    for instance in first:
        report_removed(plane, WEB, instance.id, instance.container_id)
        plane.forget_instance(WEB, instance.id, instance.container_id)

    assert [i for i, _ in await drift_events(world)] == [gone.id]
    assert kept_for_gone(world) == {}


async def test_a_destroyed_apps_drift_records_go_with_it(world: World) -> None:
    plane = world.engine.plane
    await world.engine.deploy(api_spec("drift: report\n"), message="", who="t")
    await world.engine.deploy(spec(extra="drift: report\n"), message="", who="t")
    await settled(world, API)
    await settled(world)
    left = {key: world.running(key)[0] for key in (WEB, API)}
    for key, instance in left.items():
        world.driver.tamper(instance.container_id, "image: runs sha256:abc, the release has def")
        (finding,) = (await world.engine.drift(key)).findings
        assert finding.action == "report"
    removed = world.running()[1]
    assert await world.driver.remove_instance(removed.container_id)
    await replaced(world, removed.id)
    await eventually(lambda: not kept_for_gone(world))
    # The records of containers that run stay: a second check reports nothing again.
    assert {left[WEB].container_id, left[API].container_id} <= set(plane.drift_reported)
    assert [f.action for f in (await world.engine.drift(WEB)).findings] == ["report"]
    assert len(await drift_events(world)) == 2  # the tampered one and the removed one

    await world.engine.destroy(WEB, who="t", wait=True)
    await eventually(lambda: not world.running() and WEB not in set(plane.loops.keys()))

    assert kept_for_app(plane, WEB) == {}
    assert kept_for_gone(world) == {}
    # The other app keeps its own: its drift is still reported once.
    assert set(plane.drift_reported) == {left[API].container_id}
    assert [f.action for f in (await world.engine.drift(API)).findings] == ["report"]
    assert len(await drift_events(world, API)) == 1


async def test_a_container_started_by_hand_is_replaced_once_and_leaves_no_records(
    world: World,
) -> None:
    plane = world.engine.plane
    await world.engine.deploy(spec(), message="", who="t")
    await settled(world)
    template = world.driver.containers[world.running()[0].container_id]
    stranger = world.driver.plant(
        replace(template.spec, id="r1-bad001", name=f"{template.spec.name}-bad001"),
        installation=world.driver.installation_id,
    )

    await eventually(lambda: stranger.container_id not in world.driver.containers)
    await settled(world)
    await eventually(lambda: not kept_for_gone(world))

    ((instance, reason),) = await drift_events(world)
    assert instance == "r1-bad001" and "was started outside kiln" in reason
    assert kept_for_gone(world) == {}
    assert plane.known_instances[WEB] == {i.id for i in world.running()}


async def test_instances_whose_start_failed_are_not_kept_as_known(world: World) -> None:
    plane = world.engine.plane
    await world.engine.deploy(spec(), message="", who="t")
    await settled(world)
    for _ in range(5):
        world.driver.fail_next_start(TemporaryFailure("the engine said no"))

    world.driver.crash(world.running()[0].id)  # its replacement fails to start 5 times

    await eventually(lambda: len(world.running()) == 3 and len(world.driver.started) == 4)
    await settled(world)
    await eventually(lambda: plane.known_instances[WEB] == {i.id for i in world.running()})
    assert await drift_events(world) == []


async def test_a_container_the_driver_removes_when_its_start_fails_is_no_drift(
    world: World,
) -> None:
    # Docker creates a container, then starts it; when the start fails the driver removes
    # it: the engine announces a destroy of a container kiln never saw run.
    start = world.driver.start_instance
    refused: list[str] = []

    async def refusing_twice(
        spec: InstanceSpec, *, secrets: Mapping[str, bytes] | None = None
    ) -> Instance:
        if len(refused) == 2:
            return await start(spec, secrets=secrets)
        refused.append(spec.id)
        container_id = f"{len(refused):0>64}"
        for action in ("create", "destroy"):
            world.driver.emit(
                DriverEvent(key=WEB, instance_id=spec.id, container_id=container_id, action=action)
            )
        raise TemporaryFailure("the container exited at once")

    world.driver.start_instance = refusing_twice  # type: ignore[method-assign]
    await world.engine.deploy(spec(instances=1), message="", who="t")

    await settled(world, count=1)
    assert len(refused) == 2
    assert await drift_events(world) == []
    await eventually(lambda: not kept_for_gone(world))
