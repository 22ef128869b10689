"""FakeDriver follows the driver contract, so tests above the seam can trust it."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from kiln.drivers.base import DriverEvent
from kiln.drivers.fake import FakeDriver
from kiln.errors import Conflict, DriverUnavailable, ImageNotFound, NotFound, TemporaryFailure
from kiln.model import AppKey, InstanceSpec, InstanceStatus
from kiln.spec import HostLimits

KEY = AppKey("dev", "web")


def spec(
    driver: FakeDriver, instance_id: str = "r1-aaaaaa", *, port: int | None = 8080
) -> InstanceSpec:
    return InstanceSpec(
        id=instance_id,
        key=KEY,
        release=1,
        name=f"web-{instance_id}",
        image=driver.add_image("web:v1"),
        command=None,
        env={},
        port=port,
        labels={},
    )


async def test_started_instances_get_deterministic_addresses_and_are_listed() -> None:
    driver = FakeDriver(first_port=30000)
    first = await driver.start_instance(spec(driver, "r1-a"))
    second = await driver.start_instance(spec(driver, "r1-b"))
    assert (str(first.address), str(second.address)) == ("127.0.0.1:30000", "127.0.0.1:30001")
    assert {i.id for i in await driver.list_instances()} == {"r1-a", "r1-b"}
    assert {i.id for i in await driver.list_instances(first.key)} == {"r1-a", "r1-b"}
    assert await driver.list_instances(AppKey("dev", "other")) == []
    assert [s.id for s in driver.started] == ["r1-a", "r1-b"]


async def test_image_resolves_by_tag_digest_and_name_at_digest_only_when_added() -> None:
    driver = FakeDriver()
    digest = driver.add_image("web:v1")
    assert await driver.resolve_image("web:v1") == digest
    assert await driver.resolve_image(digest) == digest
    assert await driver.resolve_image(f"web@{digest}") == digest
    with pytest.raises(ImageNotFound):
        await driver.resolve_image("web:v2")


async def test_crash_exits_the_instance_and_pushes_a_die_event() -> None:
    driver = FakeDriver()
    events = driver.watch()
    instance = await driver.start_instance(spec(driver))
    driver.crash(instance.id, exit_code=137)
    actions = [(await anext(events)).action for _ in range(3)]
    assert actions == ["create", "start", "die"]
    crashed = driver.instance(instance.id)
    assert (crashed.status, crashed.exit_code, crashed.address) == (
        InstanceStatus.EXITED,
        137,
        None,
    )
    await events.aclose()


async def test_stop_removes_the_container_and_records_it() -> None:
    driver = FakeDriver()
    instance = await driver.start_instance(spec(driver))
    await driver.stop_instance(instance.container_id, grace=1)
    await driver.stop_instance(instance.container_id, grace=1)  # already gone is fine
    assert await driver.list_instances() == []
    assert driver.stopped == [instance.container_id]


async def test_injected_start_failure_is_raised_once() -> None:
    driver = FakeDriver()
    driver.fail_next_start(TemporaryFailure("no space left"))
    with pytest.raises(TemporaryFailure):
        await driver.start_instance(spec(driver))
    assert (await driver.start_instance(spec(driver))).running


async def test_name_held_by_a_running_instance_is_a_conflict_but_a_dead_one_is_replaced() -> None:
    driver = FakeDriver()
    first = await driver.start_instance(spec(driver))
    with pytest.raises(Conflict):
        await driver.start_instance(spec(driver))
    driver.crash(first.id)
    again = await driver.start_instance(spec(driver))
    assert [i.container_id for i in await driver.list_instances()] == [again.container_id]


async def test_exec_returns_the_configured_exit_code() -> None:
    driver = FakeDriver()
    instance = await driver.start_instance(spec(driver))
    assert await driver.exec(instance.container_id, ["true"], timeout=1) == 0
    driver.set_exec_result(instance.id, 3)
    assert await driver.exec(instance.container_id, ["check"], timeout=1) == 3
    assert driver.exec_calls[-1] == (instance.container_id, ("check",))


async def test_followed_logs_see_new_lines_until_cancelled() -> None:
    driver = FakeDriver()
    instance = await driver.start_instance(spec(driver))
    driver.add_log(instance.container_id, "booting")
    lines = driver.logs([instance.container_id], follow=True, tail=None)
    assert (await anext(lines)).text == "booting"
    driver.add_log(instance.container_id, "oops", "stderr")
    line = await asyncio.wait_for(anext(lines), 1)
    assert (line.text, line.stream) == ("oops", "stderr")
    await lines.aclose()


async def test_followed_logs_end_once_the_container_is_removed() -> None:
    # As Docker's follow stream does: a copy of a removed container's output ends.
    driver = FakeDriver()
    instance = await driver.start_instance(spec(driver))
    driver.add_log(instance.container_id, "booting")
    lines = driver.logs([instance.container_id], follow=True, tail=None)
    assert (await anext(lines)).text == "booting"
    following = asyncio.ensure_future(anext(lines))
    await driver.remove_instance(instance.container_id)
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(following, 1)


async def test_engine_going_down_ends_watches_and_fails_calls() -> None:
    driver = FakeDriver()
    events = driver.watch()
    driver.emit(DriverEvent(key=KEY, instance_id="x", container_id="c", action="start"))
    driver.go_down()
    assert [e.action async for e in events] == ["start"]
    with pytest.raises(DriverUnavailable):
        await driver.list_instances()
    driver.come_back()
    assert await driver.list_instances() == []


async def test_unknown_image_cannot_start() -> None:
    driver = FakeDriver()
    with pytest.raises(ImageNotFound):
        await driver.start_instance(replace(spec(driver), image="sha256:" + "0" * 64))


async def test_another_installations_containers_are_invisible_and_untouchable() -> None:
    driver = FakeDriver(installation_id="mine")
    events = driver.watch()
    theirs = driver.plant(spec(driver, "r1-theirs"), installation="theirs")
    mine = await driver.start_instance(spec(driver, "r1-mine"))

    assert [i.id for i in await driver.list_instances()] == [mine.id]
    assert await driver.other_installations() == {"theirs"}
    with pytest.raises(Conflict, match="another kiln installation"):
        await driver.stop_instance(theirs.container_id, grace=1)
    with pytest.raises(Conflict, match="another kiln installation"):
        await driver.remove_instance(theirs.container_id)
    with pytest.raises(NotFound):
        await anext(driver.logs([theirs.container_id], follow=False, tail=None))
    assert theirs.container_id in driver.containers
    driver.crash(theirs.id)
    first = await anext(events)
    assert first.instance_id == mine.id  # the other installation's crash sent nothing here
    await events.aclose()


async def test_legacy_containers_are_listed_marked_and_may_be_stopped() -> None:
    driver = FakeDriver(installation_id="mine")
    legacy = driver.plant(spec(driver, "r1-old"), installation=None)

    listed = await driver.list_instances(KEY)
    assert [(i.id, i.legacy) for i in listed] == [("r1-old", True)]
    assert await driver.other_installations() == set()
    await driver.stop_instance(legacy.container_id, grace=1)
    assert await driver.list_instances() == []


async def test_the_same_name_in_two_installations_is_no_conflict() -> None:
    driver = FakeDriver(installation_id="mine")
    driver.plant(spec(driver, "r1-a"), installation="theirs")
    assert (await driver.start_instance(spec(driver, "r1-a"))).running


async def test_host_limits_are_what_the_test_set() -> None:
    host = HostLimits(cpus=8, memory_bytes=2**34)
    assert await FakeDriver(host=host).host_limits() == host
