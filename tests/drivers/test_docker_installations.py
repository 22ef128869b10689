"""Two kiln installations on one real Docker engine: each driver sees, watches, stops and removes
only its own containers; legacy ones (kiln's labels, no installation) are shown, marked."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import docker
import pytest

from kiln.drivers.base import DriverEvent
from kiln.drivers.docker import DockerDriver
from kiln.errors import Conflict, NotFound
from kiln.model import (
    LABEL_APP,
    LABEL_ENV,
    LABEL_INSTALLATION,
    LABEL_INSTANCE,
    LABEL_MANAGED,
    LABEL_RELEASE,
    InstanceStatus,
)
from tests.drivers.test_docker_driver import App, eventually, http_get, next_event
from tests.harness.dockerd import PrivateDockerd

pytestmark = pytest.mark.integration

Drivers = Callable[[str], DockerDriver]


@pytest.fixture
async def drivers(dockerd: PrivateDockerd) -> AsyncIterator[Drivers]:
    """Make drivers of any installation on the session's engine; all closed afterwards."""
    made: list[DockerDriver] = []

    def make(installation_id: str) -> DockerDriver:
        made.append(DockerDriver(base_url=dockerd.docker_host, installation_id=installation_id))
        return made[-1]

    try:
        yield make
    finally:
        for driver in made:
            await driver.close()


@pytest.fixture
def app(docker_client: docker.DockerClient, hello_images: dict[str, str]) -> Iterator[App]:
    app = App(docker_client, hello_images)
    try:
        yield app
    finally:
        app.remove_containers()


def by_hand(
    client: docker.DockerClient, app: App, instance_id: str, extra: dict[str, str], name: str = ""
) -> str:
    """A running container with kiln's labels (plus ``extra``), made without any driver."""
    labels = {
        LABEL_MANAGED: "true",
        LABEL_ENV: app.key.environment,
        LABEL_APP: app.key.app,
        LABEL_RELEASE: "1",
        LABEL_INSTANCE: instance_id,
        **extra,
    }
    created = client.api.create_container(app.images["v1"], labels=labels, name=name or None)
    client.api.start(created["Id"])
    return str(created["Id"])


async def test_two_installations_deploying_the_same_app_see_only_their_own_containers(
    drivers: Drivers, app: App, docker_client: docker.DockerClient
) -> None:
    one, two = drivers(uuid.uuid4().hex), drivers(uuid.uuid4().hex)
    spec = app.spec()

    # The same app, the same instance id, the same spec name: the names on the engine differ.
    mine = await one.start_instance(spec)
    theirs = await two.start_instance(spec)

    names = {docker_client.api.inspect_container(i.container_id)["Name"] for i in (mine, theirs)}
    assert names == {
        f"/kiln-{one.installation_id[:8]}-{spec.name}",
        f"/kiln-{two.installation_id[:8]}-{spec.name}",
    }
    for driver, own in ((one, mine), (two, theirs)):
        assert [i.container_id for i in await driver.list_instances()] == [own.container_id]
        assert [i.container_id for i in await driver.list_instances(app.key)] == [own.container_id]
        assert not own.legacy
    assert two.installation_id in await one.other_installations()
    assert one.installation_id in await two.other_installations()
    assert one.installation_id not in await one.other_installations()


async def test_another_installations_container_is_never_stopped_removed_or_shown(
    drivers: Drivers, app: App, docker_client: docker.DockerClient
) -> None:
    one, two = drivers(uuid.uuid4().hex), drivers(uuid.uuid4().hex)
    mine = await one.start_instance(app.spec())
    started_at = docker_client.api.inspect_container(mine.container_id)["State"]["StartedAt"]

    with pytest.raises(Conflict, match="another kiln installation"):
        await two.stop_instance(mine.container_id, grace=1)
    with pytest.raises(Conflict, match="another kiln installation"):
        await two.remove_instance(mine.container_id)
    with pytest.raises(NotFound, match="not an instance of this kiln installation"):
        async for _ in two.logs([mine.container_id], follow=False, tail=None):
            pass

    state = docker_client.api.inspect_container(mine.container_id)["State"]
    assert state["Running"] and state["StartedAt"] == started_at  # not even restarted
    assert (await http_get(mine, "/healthz")).status_code == 200
    # Its own installation still may.
    await one.stop_instance(mine.container_id, grace=2)
    assert await one.list_instances(app.key) == []


async def test_watch_hears_only_its_own_installations_containers(
    drivers: Drivers, app: App, docker_client: docker.DockerClient
) -> None:
    one, two = drivers(uuid.uuid4().hex), drivers(uuid.uuid4().hex)
    events = two.watch()
    await anext_started(two, app, events)  # the stream is open

    mine = await one.start_instance(app.spec())
    docker_client.api.kill(mine.container_id)
    theirs = await two.start_instance(app.spec())

    seen: list[DriverEvent] = []

    def record(event: DriverEvent) -> bool:
        seen.append(event)
        return event.action == "start" and event.container_id == theirs.container_id

    await next_event(events, record)  # two's start comes after everything one did
    assert mine.container_id not in {e.container_id for e in seen}
    await events.aclose()


async def anext_started(driver: DockerDriver, app: App, events: AsyncIterator[DriverEvent]) -> None:
    probe = await driver.start_instance(app.spec())
    await next_event(events, lambda e: e.container_id == probe.container_id)


async def test_a_legacy_container_is_listed_marked_legacy_by_every_installation(
    drivers: Drivers, app: App, docker_client: docker.DockerClient
) -> None:
    one, two = drivers(uuid.uuid4().hex), drivers(uuid.uuid4().hex)
    legacy_id = by_hand(docker_client, app, "r1-legacy0", {})

    for driver in (one, two):
        listed = await driver.list_instances(app.key)
        assert [(i.container_id, i.id, i.legacy) for i in listed] == [
            (legacy_id, "r1-legacy0", True)
        ]
        assert listed[0].status is InstanceStatus.RUNNING and listed[0].release == 1
        assert legacy_id in {i.container_id for i in await driver.list_instances() if i.legacy}
    assert "" not in await one.other_installations()

    async def logged() -> list[str] | None:
        lines = [line.instance_id async for line in one.logs([legacy_id], follow=False, tail=None)]
        return lines or None

    assert set(await eventually(logged)) == {"r1-legacy0"}
    # A legacy container may be adopted, so the driver does stop it when asked (the controller
    # decides whether to: only when its store knows the app and the release).
    await one.stop_instance(legacy_id, grace=2)
    assert await two.list_instances(app.key) == []


async def test_a_name_held_by_another_installation_is_a_conflict_and_that_container_stays(
    drivers: Drivers, app: App, docker_client: docker.DockerClient
) -> None:
    # Two ids that start alike (or a copied KILN_HOME) would give the same container names.
    one = drivers("cafe0000" + uuid.uuid4().hex[8:])
    two = drivers("cafe0000" + uuid.uuid4().hex[8:])
    spec = app.spec()
    mine = await one.start_instance(spec)

    with pytest.raises(Conflict, match="another kiln installation") as conflict:
        await two.start_instance(spec)
    assert "new KILN_HOME" in conflict.value.message
    # Not even a dead container of another installation is removed to free the name.
    docker_client.api.kill(mine.container_id)
    with pytest.raises(Conflict, match="another kiln installation"):
        await two.start_instance(spec)
    docker_client.api.inspect_container(mine.container_id)  # still there

    # A container kiln did not make holding the name is a conflict too.
    three = drivers(uuid.uuid4().hex)
    other = app.spec()
    plain = docker_client.api.create_container(
        app.images["v1"], name=three.container_name(other), labels={LABEL_APP: app.key.app}
    )
    with pytest.raises(Conflict, match="did not make; remove or rename that container"):
        await three.start_instance(other)
    docker_client.api.inspect_container(plain["Id"])


async def test_a_container_labelled_with_an_empty_installation_is_not_legacy_and_is_left_alone(
    drivers: Drivers, app: App
) -> None:
    one = drivers(uuid.uuid4().hex)
    odd = by_hand(app.client, app, "r1-odd000", {LABEL_INSTALLATION: ""})

    assert await one.list_instances(app.key) == []
    with pytest.raises(Conflict, match="no kiln installation"):
        await one.remove_instance(odd)
