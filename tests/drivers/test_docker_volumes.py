"""Named volumes through the DockerDriver against a private dockerd: a read-only volume is
mounted read-only (a write inside the instance fails), and drift tells the modes apart."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import docker
import pytest

from kiln.drivers.docker import DockerDriver
from kiln.model import VolumeMount
from tests.drivers.test_docker_driver import App, app  # noqa: F401 - the fixture
from tests.harness.dockerd import PrivateDockerd

pytestmark = pytest.mark.integration


@pytest.fixture
async def driver(dockerd: PrivateDockerd) -> AsyncIterator[DockerDriver]:
    driver = DockerDriver(base_url=dockerd.docker_host, installation_id=uuid.uuid4().hex)
    try:
        yield driver
    finally:
        await driver.close()


def run_in(client: docker.DockerClient, container_id: str, command: str) -> tuple[int, str]:
    result = client.containers.get(container_id).exec_run(["/bin/sh", "-c", command])
    return result.exit_code, result.output.decode()


async def test_a_read_only_volume_refuses_writes_inside_the_instance_and_is_no_drift(
    driver: DockerDriver,
    app: App,  # noqa: F811
    docker_client: docker.DockerClient,
) -> None:
    volumes = (VolumeMount("data", "/data"), VolumeMount("assets", "/assets", read_only=True))
    spec = app.spec(volumes=volumes)
    instance = await driver.start_instance(spec)
    cid = instance.container_id
    try:
        assert run_in(docker_client, cid, "echo kept > /data/file && cat /data/file") == (
            0,
            "kept\n",
        )
        code, output = run_in(docker_client, cid, "echo lost > /assets/file")
        assert code != 0 and "Read-only file system" in output
        assert await driver.drift(cid, spec) == []

        # The same container judged against a release that says otherwise is drift, both ways.
        all_writable = app.spec(volumes=(volumes[0], VolumeMount("assets", "/assets")))
        assert "volume at /assets: mounted read-only, the release says read-write" in (
            await driver.drift(cid, all_writable)
        )
    finally:
        await driver.stop_instance(cid, grace=1)

    writable = await driver.start_instance(app.spec(volumes=(VolumeMount("assets", "/assets"),)))
    try:
        # A write into /assets works now: the volume is the same, only the mount's mode was.
        assert run_in(docker_client, writable.container_id, "echo ok > /assets/file")[0] == 0
        assert "volume at /assets: mounted read-write, the release says read-only" in (
            await driver.drift(
                writable.container_id,
                app.spec(volumes=(VolumeMount("assets", "/assets", read_only=True),)),
            )
        )
    finally:
        await driver.stop_instance(writable.container_id, grace=1)
    for name in ("data", "assets"):
        await driver.remove_volume(app.key, name)
