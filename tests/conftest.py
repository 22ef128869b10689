"""Fixtures shared by every test package: one private Docker daemon and the demo images (per
session), and ``world``: the engine over fakes (tests/controller/world.py), started for a test and
closed after it (a package may define its own ``world`` instead).

A fixture that cannot start its real part FAILS the tests that need it, with the reason; nothing
is skipped silently.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import pytest

from kiln.store.aio import GUARD_ENV
from tests.controller.world import World, running
from tests.harness.dockerd import DockerdError, PrivateDockerd
from tests.harness.images import HELLO_IMAGES, build_hello_image

# Every engine and API built in the tests (and every kiln server they start, which inherits
# the environment) refuses a store call on its event loop's thread: such a call would block
# every app's round in production, here it fails the test that made it.
os.environ[GUARD_ENV] = "1"


@pytest.fixture(scope="session")
def dockerd() -> Iterator[PrivateDockerd]:
    """A private dockerd on its own bridge; ``.docker_host`` is its ``unix://`` address.
    ``KILN_TEST_RUNTIME=crun`` runs every container with that OCI runtime instead of runc
    (how kiln is checked against crun; CI runs runc, the engine's default)."""
    daemon = PrivateDockerd(default_runtime=os.environ.get("KILN_TEST_RUNTIME") or None)
    try:
        daemon.start()
    except DockerdError as exc:
        daemon.close()
        pytest.fail(f"could not start a private dockerd: {exc}", pytrace=False)
    try:
        yield daemon
    finally:
        daemon.close()


@pytest.fixture(scope="session")
def docker_client(dockerd: PrivateDockerd) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=dockerd.docker_host, version="1.41", timeout=60)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def hello_images(docker_client: docker.DockerClient) -> dict[str, str]:
    """The demo app built once per session: name → image id, each also tagged kiln-hello:<name>.

    Names: v1, v2, v3 (healthy), broken, flaky, crash (see tests/harness/images.py).
    """
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {
            image.name: pool.submit(
                build_hello_image,
                docker_client,
                version=image.version,
                variant=image.variant,
                tag=image.tag,
            )
            for image in HELLO_IMAGES
        }
        return {name: future.result() for name, future in futures.items()}


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with running(World(tmp_path)) as w:
        yield w
