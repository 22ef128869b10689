"""Secret delivery by the DockerDriver against a private dockerd: files on a tmpfs at
/run/secrets (0400, the instance's user), env vars when asked, nothing in ``docker inspect``,
and nothing left on the host once the instance is gone."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import docker
import pytest

from kiln.drivers.docker import DockerDriver
from kiln.model import SecretRef
from tests.drivers.test_docker_driver import App, app  # noqa: F401 - the fixture
from tests.harness.dockerd import PrivateDockerd

pytestmark = pytest.mark.integration

VALUE = b"file-secret-5d1e9a7c"
ENV_VALUE = b"env-secret-0b3f2e8d"


@pytest.fixture
async def driver(dockerd: PrivateDockerd) -> AsyncIterator[DockerDriver]:
    installation = uuid.uuid4().hex
    driver = DockerDriver(base_url=dockerd.docker_host, installation_id=installation)
    try:
        yield driver
    finally:
        await driver.close()


def run_in(client: docker.DockerClient, container_id: str, *command: str) -> str:
    result = client.containers.get(container_id).exec_run(list(command))
    assert result.exit_code == 0, result.output
    return result.output.decode()


async def test_file_secrets_are_on_a_tmpfs_owned_by_the_user_and_absent_from_inspect(
    driver: DockerDriver,
    app: App,  # noqa: F811
    docker_client: docker.DockerClient,
) -> None:
    spec = app.spec(
        user="1234:2345",
        secrets=(SecretRef("DB_PASSWORD", 1), SecretRef("API_TOKEN", 1, as_env=True)),
    )
    instance = await driver.start_instance(
        spec, secrets={"DB_PASSWORD": VALUE, "API_TOKEN": ENV_VALUE}
    )
    cid = instance.container_id
    assert (
        run_in(docker_client, cid, "/bin/busybox", "cat", "/run/secrets/DB_PASSWORD").encode()
        == VALUE
    )
    listing = run_in(
        docker_client, cid, "/bin/busybox", "stat", "-c", "%a %u %g", "/run/secrets/DB_PASSWORD"
    )
    assert listing.split() == ["400", "1234", "2345"]
    mounts = run_in(docker_client, cid, "/bin/busybox", "cat", "/proc/mounts").splitlines()
    assert ["/run/secrets", "tmpfs"] in [line.split()[1:3] for line in mounts]
    environment = run_in(docker_client, cid, "/bin/busybox", "env").splitlines()
    assert f"API_TOKEN={ENV_VALUE.decode()}" in environment
    inspected = json.dumps(docker_client.api.inspect_container(cid)).encode()
    assert VALUE not in inspected  # the file secret; the env one is there, as documented
    assert await driver.drift(cid, spec) == []  # secrets are no drift; and no value is needed
    host_dir = driver._secret_files.directory(driver.container_name(spec))
    assert host_dir.is_dir()
    await driver.stop_instance(cid, grace=1)
    assert not host_dir.exists()


async def test_a_user_name_is_looked_up_in_the_image(
    driver: DockerDriver,
    app: App,  # noqa: F811
    docker_client: docker.DockerClient,
) -> None:
    spec = app.spec(secrets=(SecretRef("S", 1),))  # the image's user (root)
    instance = await driver.start_instance(spec, secrets={"S": VALUE})
    owner = run_in(
        docker_client,
        instance.container_id,
        "/bin/busybox",
        "stat",
        "-c",
        "%u %a",
        "/run/secrets/S",
    )
    assert owner.split() == ["0", "400"]
    await driver.remove_instance(instance.container_id)
    assert not driver._secret_files.directory(driver.container_name(spec)).exists()


async def test_a_full_listing_removes_the_secrets_of_containers_gone_while_kiln_was_down(
    driver: DockerDriver,
    app: App,  # noqa: F811
    docker_client: docker.DockerClient,
) -> None:
    live_spec = app.spec(secrets=(SecretRef("S", 1),))
    gone_spec = app.spec(secrets=(SecretRef("S", 1),))
    live = await driver.start_instance(live_spec, secrets={"S": VALUE})
    gone = await driver.start_instance(gone_spec, secrets={"S": VALUE})
    live_dir = driver._secret_files.directory(driver.container_name(live_spec))
    gone_dir = driver._secret_files.directory(driver.container_name(gone_spec))
    # A kiln killed with -9 left a directory whose container no longer exists ...
    stray_dir = driver._secret_files.directory(driver.container_name(app.spec()))
    stray_dir.mkdir(mode=0o700)
    (stray_dir / "S").write_bytes(VALUE)
    stray_dir.chmod(0o500)
    # ... and a container is removed by hand while kiln is not looking.
    docker_client.api.remove_container(gone.container_id, force=True)
    assert gone_dir.is_dir()

    await driver.list_instances(app.key)  # one app's listing cannot know what is gone
    assert stray_dir.is_dir() and gone_dir.is_dir()
    await driver.list_instances()
    assert not stray_dir.exists() and not gone_dir.exists()
    assert (live_dir / "S").read_bytes() == VALUE
    assert (
        run_in(docker_client, live.container_id, "/bin/busybox", "cat", "/run/secrets/S").encode()
        == VALUE
    )
    await driver.stop_instance(live.container_id, grace=1)
    assert not live_dir.exists()
