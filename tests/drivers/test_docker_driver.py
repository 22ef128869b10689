"""DockerDriver against a real, private dockerd: containers start hardened, serve the demo app,
and every lifecycle change is seen through list_instances() and watch()."""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
import socket
import subprocess
import threading
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import docker
import httpx
import psutil
import pytest

from kiln.drivers import docker as docker_driver
from kiln.drivers.base import DriverEvent
from kiln.drivers.docker import DockerDriver, _Bridge
from kiln.errors import Conflict, DriverUnavailable, ImageNotFound
from kiln.model import (
    LABEL_APP,
    LABEL_INSTALLATION,
    LABEL_MANAGED,
    AppKey,
    Instance,
    InstanceSpec,
    InstanceStatus,
)
from tests.harness.dockerd import PrivateDockerd
from tests.harness.images import build_hello_image

pytestmark = pytest.mark.integration

T = TypeVar("T")
_apps = itertools.count(1)
INSTALLATION = uuid.uuid4().hex  # this module's kiln installation


async def eventually(check: Callable[[], Awaitable[T | None]], *, timeout: float = 15) -> T:
    """Poll ``check`` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)


async def http_get(instance: Instance, path: str = "/") -> httpx.Response:
    assert instance.address is not None
    url = f"http://{instance.address}{path}"

    async def answer() -> httpx.Response | None:
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                return await client.get(url)
        except httpx.TransportError:
            return None  # the app is still starting

    return await eventually(answer)


async def next_event(
    events: AsyncIterator[DriverEvent], match: Callable[[DriverEvent], bool]
) -> DriverEvent:
    async def scan() -> DriverEvent:
        async for event in events:
            if match(event):
                return event
        raise AssertionError("the event stream ended")

    return await asyncio.wait_for(scan(), 15)


class App:
    """One test's own app: unique names, and its containers removed afterwards."""

    def __init__(self, client: docker.DockerClient, images: dict[str, str]) -> None:
        self.key = AppKey("test", f"drv{next(_apps)}")
        self.client = client
        self.images = images
        self._ids = itertools.count(1)

    def spec(self, image: str = "v1", **changes: Any) -> InstanceSpec:
        instance_id = f"r1-{self.key.app}-{next(self._ids)}"
        fields: dict[str, Any] = {
            "id": instance_id,
            "key": self.key,
            "release": 1,
            "name": f"{self.key.app}-{instance_id}",
            "image": self.images[image],
            "command": None,
            "env": {},
            "port": 8080,
            "labels": {},
            "stop_grace": 5.0,
        }
        fields.update(changes)
        return InstanceSpec(**fields)

    def remove_containers(self) -> None:
        filters = {"label": [f"{LABEL_APP}={self.key.app}"]}
        for container in self.client.api.containers(all=True, filters=filters):
            self.client.api.remove_container(container["Id"], force=True)


@pytest.fixture
def app(docker_client: docker.DockerClient, hello_images: dict[str, str]) -> Iterator[App]:
    app = App(docker_client, hello_images)
    try:
        yield app
    finally:
        app.remove_containers()


@pytest.fixture
async def driver(dockerd: PrivateDockerd) -> AsyncIterator[DockerDriver]:
    driver = DockerDriver(base_url=dockerd.docker_host, installation_id=INSTALLATION)
    try:
        yield driver
    finally:
        await driver.close()


async def test_started_instance_is_hardened_and_serves_its_version(
    driver: DockerDriver, app: App, docker_client: docker.DockerClient
) -> None:
    spec = app.spec(
        "v2",
        cpus=0.5,
        memory_bytes=64 * 1024 * 1024,
        cap_add=("NET_BIND_SERVICE",),
        env={"GREETING": "hi"},
        labels={"io.kiln.spec-hash": "abc"},
    )
    instance = await driver.start_instance(spec)

    assert instance.running and instance.id == spec.id and instance.release == 1
    info = docker_client.api.inspect_container(instance.container_id)
    # Reached at its address on the bridge (this host holds the gateway), no port published.
    assert instance.address is not None and instance.address.port == 8080
    assert instance.address.host == info["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
    host = info["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and host["CapAdd"] == ["NET_BIND_SERVICE"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Init"] is True
    assert host["Memory"] == host["MemorySwap"] == 64 * 1024 * 1024
    assert host["NanoCpus"] == 500_000_000
    assert host["RestartPolicy"]["Name"] == "no"
    assert host["LogConfig"]["Type"] == "json-file" and host["LogConfig"]["Config"]["max-size"]
    assert host["Tmpfs"] == {"/tmp": "rw,nosuid,nodev,size=64m"}
    assert not host["PortBindings"]
    config = info["Config"]
    assert config["Labels"][LABEL_MANAGED] == "true"
    assert config["Labels"][LABEL_INSTALLATION] == INSTALLATION
    assert config["Labels"]["io.kiln.instance"] == spec.id
    assert config["Labels"]["io.kiln.spec-hash"] == "abc"
    assert {"PORT=8080", "GREETING=hi"} <= set(config["Env"])
    assert config["StopSignal"] == "SIGTERM" and config["StopTimeout"] == 5
    assert config["Hostname"] == spec.id
    assert info["Name"] == f"/kiln-{INSTALLATION[:8]}-{spec.name}"
    assert config["User"] == ""  # no user in the spec: the image's default

    response = await http_get(instance)
    assert response.status_code == 200
    assert response.text.strip() == f"hello from kiln demo v2 (instance {spec.id})"
    assert (await http_get(instance, "/healthz")).status_code == 200


async def test_published_path_serves_on_a_loopback_port_and_both_kinds_are_listed(
    dockerd: PrivateDockerd, driver: DockerDriver, app: App, docker_client: docker.DockerClient
) -> None:
    published = DockerDriver(
        base_url=dockerd.docker_host, installation_id=INSTALLATION, bridge_path="published"
    )
    try:
        behind_proxy = await published.start_instance(app.spec("v1"))
        direct = await driver.start_instance(app.spec("v2"))
        info = docker_client.api.inspect_container(behind_proxy.container_id)
        assert info["HostConfig"]["PortBindings"] == {
            "8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]
        }
        assert behind_proxy.address is not None and behind_proxy.address.host == "127.0.0.1"
        assert direct.address is not None and direct.address.host != "127.0.0.1"
        # Either driver lists both where they really are (a switch keeps old instances reachable).
        listed = {i.id: i.address for i in await published.list_instances(app.key)}
        assert listed == {behind_proxy.id: behind_proxy.address, direct.id: direct.address}
        for instance, version in ((behind_proxy, "v1"), (direct, "v2")):
            assert f"kiln demo {version}" in (await http_get(instance)).text
    finally:
        await published.close()


async def test_a_bridge_with_its_own_mac_needs_no_note(driver: DockerDriver) -> None:
    # The harness gives its bridge a MAC address, as dockerd does for its own bridges.
    assert await driver.network_notes() == []


async def test_a_low_inotify_limit_on_the_engines_host_is_named_with_the_fix(
    driver: DockerDriver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = tmp_path / "max_user_instances"
    monkeypatch.setattr(docker_driver, "INOTIFY_INSTANCES", limit)
    limit.write_text("128\n")  # Debian's default
    (note,) = await driver.host_notes()
    assert "fs.inotify.max_user_instances is 128" in note
    assert "sysctl -w fs.inotify.max_user_instances=8192" in note
    limit.write_text("8192\n")
    assert await driver.host_notes() == []
    limit.unlink()  # not Linux, or no procfs: nothing to say
    assert await driver.host_notes() == []


def test_a_bridge_without_its_own_mac_is_named_with_the_fix() -> None:
    # 10.213.255.0/24 is outside the harness's pool of bridge subnets (tests/harness/dockerd.py).
    name, gateway = f"kbnomac{os.getpid() % 100000}", "10.213.255.77"
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", f"{gateway}/32", "dev", name], check=True)
        bridge = _Bridge.seen_from_here(gateway)
        assert (bridge.interface, bridge.fixed_mac) == (name, False)
        subprocess.run(["ip", "link", "set", name, "address", bridge.suggested_mac], check=True)
        assert _Bridge.seen_from_here(gateway).fixed_mac
    finally:
        subprocess.run(["ip", "link", "del", name], check=False)
    assert _Bridge.seen_from_here("192.0.2.200").interface is None  # not this host's: published


async def test_memory_pids_limit_and_user_are_what_the_instance_really_gets(
    driver: DockerDriver, app: App, docker_client: docker.DockerClient
) -> None:
    spec = app.spec(memory_bytes=64 * 1024 * 1024, pids_limit=20, user="1000:1000")
    instance = await driver.start_instance(spec)
    cid = instance.container_id

    info = docker_client.api.inspect_container(cid)
    assert info["HostConfig"]["Memory"] == 64 * 1024 * 1024
    assert info["HostConfig"]["PidsLimit"] == 20
    assert info["Config"]["User"] == "1000:1000"

    async def holds(shell: str) -> bool:
        return await driver.exec(cid, ["/bin/sh", "-c", shell], timeout=10) == 0

    # What the kernel enforces inside the container (cgroup v1 on this engine).
    assert await holds('test "$(id -u):$(id -g)" = 1000:1000')
    assert await holds('test "$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)" = 67108864')
    assert await holds('test "$(cat /sys/fs/cgroup/pids/pids.max)" = 20')
    # 40 background processes do not fit under a limit of 20: the shell cannot fork them all.
    assert not await holds("for i in $(seq 40); do sleep 5 & done; wait")
    # ... and the app still serves, as user 1000.
    assert (await http_get(instance, "/healthz")).status_code == 200


async def test_host_limits_are_the_engine_hosts_cpus_and_memory(driver: DockerDriver) -> None:
    host = await driver.host_limits()
    # The private engine runs on this machine: its host is this host.
    assert host.cpus == os.cpu_count()
    assert host.memory_bytes == os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


async def test_list_instances_finds_a_running_instance_with_its_fields(
    driver: DockerDriver, app: App, docker_client: docker.DockerClient
) -> None:
    started = await driver.start_instance(app.spec())
    foreign = docker_client.containers.run(app.images["v1"], detach=True)
    try:
        listed = {i.id: i for i in await driver.list_instances()}
    finally:
        foreign.remove(force=True)

    instance = listed[started.id]
    assert instance.key == app.key and instance.release == 1
    assert instance.status is InstanceStatus.RUNNING
    assert instance.container_id == started.container_id
    assert instance.address == started.address
    assert instance.started_at == started.started_at and instance.started_at is not None
    assert instance.started_at.tzinfo is not None
    assert (instance.exit_code, instance.finished_at, instance.oom_killed) == (None, None, False)
    assert foreign.id not in {i.container_id for i in listed.values()}
    # Asking for one app lists that app's instances only.
    assert [i.id for i in await driver.list_instances(app.key)] == [started.id]
    assert await driver.list_instances(AppKey(app.key.environment, "someone-else")) == []


async def test_inspect_instance_answers_as_a_listing_does_and_a_death_at_once(
    driver: DockerDriver, app: App, docker_client: docker.DockerClient
) -> None:
    """An inspect of one container stands in for a listing of its app (shared.py patches kept
    lists with it): same fields, None for what is gone or another's, and a death seen as soon
    as its event came (a listing may still say running then)."""
    events = driver.watch()
    started = await driver.start_instance(app.spec())
    foreign = docker_client.containers.run(app.images["v1"], detach=True)
    try:
        (listed,) = await driver.list_instances(app.key)
        assert await driver.inspect_instance(started.container_id) == listed == started
        assert await driver.inspect_instance(foreign.id) is None  # not kiln's
    finally:
        foreign.remove(force=True)

    docker_client.api.kill(started.container_id, signal="SIGKILL")
    await next_event(events, lambda e: e.action == "die" and e.instance_id == started.id)
    dead = await driver.inspect_instance(started.container_id)
    assert dead is not None and dead.status is InstanceStatus.EXITED
    assert (dead.exit_code, dead.address) == (137, None) and dead.finished_at is not None
    assert [i for i in await driver.list_instances(app.key) if not i.running] == [dead]

    await driver.remove_instance(started.container_id)
    assert await driver.inspect_instance(started.container_id) is None
    await events.aclose()


async def test_stop_instance_uses_sigterm_then_removes_the_container(
    driver: DockerDriver, app: App, docker_client: docker.DockerClient
) -> None:
    events = driver.watch()
    instance = await driver.start_instance(app.spec())
    await http_get(instance)

    await driver.stop_instance(instance.container_id, grace=5)

    die = await next_event(events, lambda e: e.action == "die" and e.instance_id == instance.id)
    assert die.exit_code == 143  # 128 + SIGTERM: it was not killed after the grace period
    with pytest.raises(docker.errors.NotFound):
        docker_client.api.inspect_container(instance.container_id)
    assert instance.id not in {i.id for i in await driver.list_instances()}
    await driver.stop_instance(instance.container_id, grace=5)  # already gone is fine
    await driver.remove_instance(instance.container_id)
    await events.aclose()


async def test_sigkill_yields_a_die_event_and_the_instance_is_listed_exited_137(
    driver: DockerDriver, app: App, docker_client: docker.DockerClient
) -> None:
    events = driver.watch()
    instance = await driver.start_instance(app.spec())

    docker_client.api.kill(instance.container_id, signal="SIGKILL")

    die = await next_event(events, lambda e: e.action == "die" and e.instance_id == instance.id)
    assert (die.key, die.container_id, die.exit_code) == (app.key, instance.container_id, 137)
    listed = {i.id: i for i in await driver.list_instances()}[instance.id]
    assert listed.status is InstanceStatus.EXITED and listed.exit_code == 137
    assert listed.finished_at is not None and listed.started_at is not None
    assert listed.finished_at >= listed.started_at
    assert listed.address is None and not listed.oom_killed
    await events.aclose()


async def test_an_instance_that_exits_at_once_is_listed_with_its_exit_code(
    driver: DockerDriver, app: App
) -> None:
    instance = await driver.start_instance(app.spec("crash"))

    async def exited() -> Instance | None:
        listed = {i.id: i for i in await driver.list_instances()}[instance.id]
        return listed if listed.status is InstanceStatus.EXITED else None

    assert (await eventually(exited)).exit_code == 3


async def test_resolve_image_by_tag_id_and_digest_reference(
    driver: DockerDriver, hello_images: dict[str, str]
) -> None:
    image_id = hello_images["v1"]
    assert image_id.startswith("sha256:")
    assert await driver.resolve_image("kiln-hello:v1") == image_id
    assert await driver.resolve_image(image_id) == image_id
    assert await driver.resolve_image(f"kiln-hello@{image_id}") == image_id
    with pytest.raises(ImageNotFound, match="kiln-hello:nope"):
        await driver.resolve_image("kiln-hello:nope")
    with pytest.raises(ImageNotFound):
        await driver.resolve_image("kiln-hello@sha256:" + "0" * 64)
    with pytest.raises(ImageNotFound):
        await driver.resolve_image("Not A Reference")


async def test_starting_an_unknown_image_is_image_not_found(driver: DockerDriver, app: App) -> None:
    with pytest.raises(ImageNotFound):
        await driver.start_instance(replace(app.spec(), image="sha256:" + "1" * 64))


async def test_logs_return_stdout_and_stderr_lines_with_timestamps(
    driver: DockerDriver, app: App
) -> None:
    instance = await driver.start_instance(app.spec("broken"))
    await http_get(instance)

    async def both_streams() -> list[Any] | None:
        lines = [
            line async for line in driver.logs([instance.container_id], follow=False, tail=None)
        ]
        return lines if {line.stream for line in lines} == {"stdout", "stderr"} else None

    lines = await eventually(both_streams)
    by_stream = {line.stream: line for line in lines}
    assert "listening on *:8080" in by_stream["stdout"].text
    assert "database unreachable" in by_stream["stderr"].text
    assert all(line.instance_id == instance.id and line.at is not None for line in lines)


async def test_followed_logs_of_several_instances_stop_cleanly_when_the_reader_leaves(
    driver: DockerDriver, app: App
) -> None:
    first = await driver.start_instance(app.spec())
    second = await driver.start_instance(app.spec())
    await http_get(first)
    await http_get(second)
    threads = threading.active_count()
    seen: set[str] = set()
    reading = 0
    lines = driver.logs([first.container_id, second.container_id], follow=True, tail=10)
    async for line in lines:
        seen.add(line.instance_id)
        if seen == {first.id, second.id}:
            reading = _unix_connections()
            break
    assert threading.active_count() <= threads  # streams are read by the event loop
    await lines.aclose()

    async def streams_closed() -> bool:  # one connection per container, closed
        return _unix_connections() == reading - 2

    await eventually(streams_closed)


def _unix_connections() -> int:
    """This process's unix sockets (the engine's API is one)."""
    return len(psutil.Process().net_connections(kind="unix"))


async def test_exec_returns_the_command_exit_code_and_times_out(
    driver: DockerDriver, app: App
) -> None:
    instance = await driver.start_instance(app.spec())
    cid = instance.container_id
    assert await driver.exec(cid, ["/bin/busybox", "true"], timeout=5) == 0
    assert (
        await driver.exec(cid, ["/bin/sh", "-c", "echo out; echo err >&2; exit 7"], timeout=5) == 7
    )
    assert (
        await driver.exec(
            cid, ["/bin/busybox", "wget", "-q", "-O-", "http://127.0.0.1:8080/healthz"], timeout=5
        )
        == 0
    )
    with pytest.raises(TimeoutError):
        await driver.exec(cid, ["/bin/busybox", "sleep", "30"], timeout=0.5)


async def test_a_stale_kiln_container_holding_the_name_is_replaced_but_a_running_one_conflicts(
    driver: DockerDriver, app: App, docker_client: docker.DockerClient
) -> None:
    spec = app.spec()
    old = await driver.start_instance(spec)
    with pytest.raises(Conflict, match="running instance of this kiln installation"):
        await driver.start_instance(spec)
    docker_client.api.kill(old.container_id)

    new = await driver.start_instance(spec)

    assert new.container_id != old.container_id and new.running
    with pytest.raises(docker.errors.NotFound):
        docker_client.api.inspect_container(old.container_id)


async def test_a_published_port_another_process_holds_is_skipped(
    driver: DockerDriver, app: App
) -> None:
    first = await driver.start_instance(app.spec())
    assert first.address is not None
    # The engine hands out ephemeral ports in order, from its own records, and tries 10 of them
    # per start: hold the next 12, as the containers of another engine on this host could.
    taken = range(first.address.port + 1, first.address.port + 13)
    held: list[socket.socket] = []
    for port in taken:
        holder = socket.socket()
        # Listening, as a server would: the engine's proxy (SO_REUSEADDR) would share a port
        # that is merely bound or in TIME_WAIT.
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            holder.bind(("127.0.0.1", port))
            holder.listen()
        except OSError:
            holder.close()  # someone listens there already: just as good
            continue
        held.append(holder)
    try:
        second = await driver.start_instance(app.spec())
    finally:
        for holder in held:
            holder.close()

    assert second.running and second.address is not None
    assert second.address.port not in taken
    assert (await http_get(second, "/healthz")).status_code == 200


async def test_broken_variant_never_answers_healthz_200(driver: DockerDriver, app: App) -> None:
    instance = await driver.start_instance(app.spec("broken"))
    assert (await http_get(instance, "/")).status_code == 500
    assert (await http_get(instance, "/healthz")).status_code == 404


async def test_flaky_variant_answers_some_500s(driver: DockerDriver, app: App) -> None:
    instance = await driver.start_instance(app.spec("flaky"))
    assert (await http_get(instance, "/healthz")).status_code == 200
    codes = []
    async with httpx.AsyncClient(timeout=5) as client:
        for _ in range(200):
            codes.append((await client.get(f"http://{instance.address}/")).status_code)
    assert set(codes) == {200, 500}
    assert 0 < codes.count(500) < 60  # about 10%; a wide band, it is random


async def test_unreachable_engine_is_driver_unavailable_with_a_clear_message(
    tmp_path: Path,
) -> None:
    driver = DockerDriver(
        base_url=f"unix://{tmp_path}/docker.sock", installation_id=INSTALLATION, timeout=2
    )
    # docker-py 7 does not close its socket when the connect fails; it is closed when collected,
    # with a ResourceWarning that would fail whichever test happens to be running then.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            with pytest.raises(DriverUnavailable) as failure:
                await driver.ping()
            message = failure.value.message
            with pytest.raises(DriverUnavailable):
                await driver.list_instances()
            with pytest.raises(DriverUnavailable):
                await anext(driver.watch())
        finally:
            await driver.close()
            del failure

            async def pump_threads_done() -> bool:
                return not [t for t in threading.enumerate() if t.name.startswith("kiln-docker")]

            await eventually(pump_threads_done)
            gc.collect()
    assert f"unix://{tmp_path}/docker.sock" in message and "does not answer" in message
    assert "No such file or directory" in message and "DOCKER_HOST" in message


async def test_after_an_engine_restart_watch_has_ended_and_the_instance_is_listed_exited() -> None:
    with PrivateDockerd() as engine:
        client = docker.DockerClient(base_url=engine.docker_host, version="1.41")
        image = build_hello_image(client, version="v1", tag="kiln-hello:v1")
        client.close()
        driver = DockerDriver(base_url=engine.docker_host, installation_id=INSTALLATION)
        try:
            events = driver.watch()
            app = App(client, {"v1": image})
            instance = await driver.start_instance(app.spec(stop_grace=1.0))
            await next_event(events, lambda e: e.action == "start")  # the stream is open

            await asyncio.to_thread(engine.restart)

            async def drain() -> list[DriverEvent]:
                return [event async for event in events]

            await asyncio.wait_for(drain(), 20)  # ended, rather than hanging on a dead socket
            listed = {i.id: i for i in await driver.list_instances()}[instance.id]
            assert listed.status is InstanceStatus.EXITED  # restart policy "no": kiln replaces it
        finally:
            await driver.close()
