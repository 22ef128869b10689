"""SharedRead: rounds that ask at the same time share one read, and a round that asks after a
change always gets a read that started after it asked (so it sees the change)."""

from __future__ import annotations

import asyncio

import pytest

from kiln.controller.shared import KEPT_FOR, NARROW_UP_TO, InstancesRead, SharedRead, SharedReads
from kiln.drivers.fake import FakeDriver
from kiln.errors import DriverUnavailable, RouterUnavailable
from kiln.model import AppKey, Instance
from kiln.router.fake import FakeRouter
from tests.controller.world import eventually, instance_spec


class World:
    """A value that changes, and a read of it the test holds open until it lets it go."""

    def __init__(self) -> None:
        self.value = 0
        self.reads_started = 0
        self.release = asyncio.Event()
        self.started = asyncio.Event()

    async def read(self) -> int:
        self.reads_started += 1
        seen = self.value  # what the read sees is fixed when it starts
        self.started.set()
        await self.release.wait()
        return seen


async def test_callers_of_the_same_moment_share_one_read() -> None:
    world = World()
    world.release.set()
    shared = SharedRead(world.read, name="test")

    results = await asyncio.gather(*(shared.get() for _ in range(100)))

    assert results == [0] * 100
    assert world.reads_started == 1


async def test_a_caller_who_asks_after_a_change_sees_the_change() -> None:
    world = World()
    shared = SharedRead(world.read, name="test")
    early = asyncio.create_task(shared.get())
    await world.started.wait()  # a read is in flight, it saw value 0

    world.value = 1  # the change happens while that read runs
    late = asyncio.create_task(shared.get())  # a round that starts after the change
    await asyncio.sleep(0)
    world.release.set()

    assert await early == 0
    assert await late == 1  # it waited for the next read instead of joining the stale one
    assert world.reads_started == 2


async def test_callers_asking_during_one_read_share_the_next() -> None:
    world = World()
    shared = SharedRead(world.read, name="test")
    first = asyncio.create_task(shared.get())
    await world.started.wait()
    world.value = 7
    later = [asyncio.create_task(shared.get()) for _ in range(10)]
    await asyncio.sleep(0)
    world.release.set()

    assert await first == 0
    assert await asyncio.gather(*later) == [7] * 10
    assert world.reads_started == 2


async def test_a_failed_read_fails_its_callers_and_the_next_caller_reads_again() -> None:
    calls = 0

    async def flaky() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RouterUnavailable("NGINX's admin socket does not answer")
        return calls

    shared = SharedRead(flaky, name="test")
    outcomes = await asyncio.gather(shared.get(), shared.get(), return_exceptions=True)
    assert all(isinstance(o, RouterUnavailable) for o in outcomes)
    assert await shared.get() == 2


async def test_a_cancelled_caller_does_not_cancel_the_read_of_the_others() -> None:
    world = World()
    shared = SharedRead(world.read, name="test")
    leaving = asyncio.create_task(shared.get())
    staying = asyncio.create_task(shared.get())
    await world.started.wait()
    leaving.cancel()
    world.release.set()

    assert await staying == 0
    with pytest.raises(asyncio.CancelledError):
        await leaving


async def test_close_cancels_a_read_in_flight() -> None:
    world = World()
    shared = SharedRead(world.read, name="test")
    waiting = asyncio.create_task(shared.get())
    await world.started.wait()

    await shared.close()

    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_instances_come_back_by_app_and_a_new_container_is_seen_by_the_next_round() -> None:
    driver = FakeDriver()
    driver.add_image("web:v1")
    reads = SharedReads(driver, FakeRouter())
    web, api = AppKey("dev", "web"), AppKey("dev", "api")
    await driver.start_instance(instance_spec(web, "r1-a"))

    assert [i.id for i in await reads.instances_of(web)] == ["r1-a"]
    assert await reads.instances_of(api) == []

    await driver.start_instance(instance_spec(api, "r1-b"))
    assert [i.id for i in await reads.instances_of(api)] == ["r1-b"]
    assert reads.instances.reads == 3


class CountingDriver(FakeDriver):
    """A fake driver that remembers which listings it was asked for (None: every app); with
    ``gate`` set, a listing waits for it once it has looked."""

    def __init__(self) -> None:
        super().__init__()
        self.listings: list[AppKey | None] = []
        self.gate: asyncio.Event | None = None
        self.inspections: list[str] = []
        self.inspect_gate: asyncio.Event | None = None

    async def list_instances(self, key: AppKey | None = None) -> list[Instance]:
        self.listings.append(key)
        found = await super().list_instances(key)
        if self.gate is not None:
            await self.gate.wait()
        return found

    async def inspect_instance(self, container_id: str) -> Instance | None:
        self.inspections.append(container_id)
        if self.inspect_gate is not None:
            await self.inspect_gate.wait()
        return await super().inspect_instance(container_id)


async def counted_reads(*keys: AppKey) -> tuple[CountingDriver, SharedReads]:
    """Shared reads over a counting driver with one instance of each app (``r1-<app>``)."""
    driver = CountingDriver()
    driver.add_image("web:v1")
    for key in keys:
        await driver.start_instance(instance_spec(key, f"r1-{key.app}"))
    return driver, SharedReads(driver, FakeRouter())


WEB_AND_API = (AppKey("dev", "web"), AppKey("dev", "api"))


async def test_a_round_woken_alone_lists_only_its_apps_containers() -> None:
    web, _api = WEB_AND_API
    driver, reads = await counted_reads(*WEB_AND_API)

    assert [i.id for i in await reads.instances_of(web)] == ["r1-web"]
    assert driver.listings == [web]  # filtered at the engine, not all three hundred


async def test_many_rounds_at_once_share_one_full_listing() -> None:
    keys = [AppKey("dev", f"app{n}") for n in range(NARROW_UP_TO + 1)]
    driver, reads = await counted_reads(*keys)

    found = await asyncio.gather(*(reads.instances_of(key) for key in keys))

    assert [[i.id for i in instances] for instances in found] == [[f"r1-{key.app}"] for key in keys]
    assert driver.listings == [None]


async def test_a_caller_of_every_app_joins_with_rounds_and_gets_the_full_listing() -> None:
    web, api = WEB_AND_API
    driver, reads = await counted_reads(*WEB_AND_API)

    of_web, everything = await asyncio.gather(reads.instances_of(web), reads.instances.get())

    assert [i.id for i in of_web] == ["r1-web"]
    assert set(everything) == {web, api}
    assert driver.listings == [None]


# --- kept lists: an app's list answers its next rounds until a change of it is told ---------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def kept_reads(*keys: AppKey) -> tuple[CountingDriver, InstancesRead, Clock]:
    """An engine list over a counting driver, its event stream open (``watching``)."""
    driver, _ = await counted_reads(*keys)
    clock = Clock()
    read = InstancesRead(driver, clock=clock)
    read.watching = True
    return driver, read, clock


def ids(instances: list[Instance]) -> list[str]:
    return sorted(i.id for i in instances)


async def test_an_apps_rounds_reuse_its_list_until_a_change_of_it_is_told() -> None:
    web, api = WEB_AND_API
    driver, read, _ = await kept_reads(web, api)
    assert ids(await read.of(web)) == ["r1-web"]
    assert ids(await read.of(api)) == ["r1-api"]

    await driver.start_instance(instance_spec(web, "r2-web"))  # its event is on its way
    assert ids(await read.of(web)) == ["r1-web"]
    assert driver.listings == [web, api] and read.kept_answers == 1

    read.changed(web)
    assert ids(await read.of(web)) == ["r1-web", "r2-web"]
    assert ids(await read.of(api)) == ["r1-api"]  # another app's change leaves it kept
    assert driver.listings == [web, api, web]


async def test_a_kept_list_ages_out_and_none_is_kept_without_the_event_stream() -> None:
    web, _ = WEB_AND_API
    driver, read, clock = await kept_reads(web)
    await read.of(web)
    clock.now += KEPT_FOR
    await read.of(web)
    assert driver.listings == [web, web]

    read.watching = False  # the stream ended: changes would go untold
    await read.of(web)
    await read.of(web)
    assert driver.listings == [web] * 4 and read.kept_answers == 0


async def test_a_list_read_while_a_change_came_is_not_kept() -> None:
    web, _ = WEB_AND_API
    driver, read, _ = await kept_reads(web)
    driver.gate = asyncio.Event()
    in_flight = asyncio.create_task(read.of(web))
    await eventually(lambda: driver.listings)
    read.changed(web)  # told while the engine answered: the answer may predate it
    driver.gate.set()
    await in_flight

    await read.of(web)
    assert driver.listings == [web, web]


async def test_the_stream_reopening_drops_every_kept_list() -> None:
    web, api = WEB_AND_API
    driver, read, _ = await kept_reads(web, api)
    await read.get()  # a full listing keeps every app it saw
    await read.of(api)
    read.changed(None)
    await read.of(web)
    assert driver.listings == [None, web]


async def test_an_orchestrators_lists_are_never_kept() -> None:
    web, _ = WEB_AND_API
    driver, read, _ = await kept_reads(web)
    driver.placement = "groups"
    read = InstancesRead(driver)
    read.watching = True
    await read.of(web)
    await read.of(web)
    assert driver.listings == [web, web]


# --- patches: a change of one container is inspected into the kept list ---------------------


async def test_a_change_of_a_known_container_is_inspected_into_the_kept_list() -> None:
    web, api = WEB_AND_API
    driver, read, _ = await kept_reads(web, api)
    assert ids(await read.of(web)) == ["r1-web"]
    await read.of(api)

    started = await driver.start_instance(instance_spec(web, "r2-web"))
    read.changed(web, started.container_id)
    assert ids(await read.of(web)) == ["r1-web", "r2-web"]

    (old,) = [i for i in driver.running if i.id == "r1-web"]
    await driver.stop_instance(old.container_id, grace=1)  # stopped and removed
    read.changed(web, old.container_id)
    assert ids(await read.of(web)) == ["r2-web"]

    driver.crash("r2-web")
    read.changed(web, started.container_id)
    (crashed,) = await read.of(web)
    assert not crashed.running and crashed.exit_code == 1
    assert ids(await read.of(api)) == ["r1-api"]
    # One listing per app; each change cost one inspect of its container.
    assert driver.listings == [web, api]
    assert driver.inspections == [started.container_id, old.container_id, started.container_id]
    assert read.patches == 3


async def test_a_round_waits_for_its_apps_patch_and_changes_meanwhile_are_inspected_next() -> None:
    web, _ = WEB_AND_API
    driver, read, _ = await kept_reads(web)
    await read.of(web)
    driver.inspect_gate = asyncio.Event()
    first = await driver.start_instance(instance_spec(web, "r2-a"))
    read.changed(web, first.container_id)
    await eventually(lambda: driver.inspections)

    answer = asyncio.create_task(read.of(web))
    second = await driver.start_instance(instance_spec(web, "r2-b"))
    read.changed(web, second.container_id)  # while the first inspect is under way
    await asyncio.sleep(0.01)
    assert not answer.done()  # the kept list is about to change: the round waits

    driver.inspect_gate.set()
    assert ids(await answer) == ["r1-web", "r2-a", "r2-b"]
    assert driver.listings == [web]
    assert driver.inspections == [first.container_id, second.container_id]


async def test_a_patch_that_fails_drops_the_list_and_an_unknown_container_does_too() -> None:
    web, _ = WEB_AND_API
    driver, read, _ = await kept_reads(web)
    await read.of(web)
    started = await driver.start_instance(instance_spec(web, "r2-web"))

    driver.go_down()  # the inspect fails: the kept list goes, the next round lists
    read.changed(web, started.container_id)
    with pytest.raises(DriverUnavailable):
        await read.of(web)
    driver.come_back()
    assert ids(await read.of(web)) == ["r1-web", "r2-web"]
    assert driver.listings == [web, web, web]

    read.changed(web, None)  # a change that cannot say which container: the round lists
    await read.of(web)
    assert driver.listings == [web, web, web, web] and read.patches == 0
