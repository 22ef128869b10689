"""The Docker engine restarts under kiln: kiln reconnects and brings every app back."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.conftest import hello_spec
from tests.e2e.harness import KilnHarness
from tests.harness.dockerd import PrivateDockerd
from tests.harness.images import build_hello_image

pytestmark = pytest.mark.integration


@pytest.fixture
def own_engine(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[PrivateDockerd, KilnHarness]]:
    with PrivateDockerd() as engine:
        import docker

        client = docker.DockerClient(base_url=engine.docker_host)
        build_hello_image(client, version="v1", variant="healthy", tag="kiln-hello:v1")
        client.close()
        harness = KilnHarness(tmp_path_factory.mktemp("kiln-home"), engine.docker_host)
        try:
            harness.start()
            yield engine, harness
        finally:
            harness.teardown()


def test_engine_restart_brings_every_app_back_to_full_health(
    own_engine: tuple[PrivateDockerd, KilnHarness],
) -> None:
    engine, kiln = own_engine
    assert kiln.deploy(hello_spec("survivor", "kiln-hello:v1"), "--wait").returncode == 0
    kiln.wait_ready("survivor", 3, release=1)

    engine.restart()

    kiln.docker.close()
    import docker

    kiln.docker = docker.DockerClient(base_url=engine.docker_host)
    kiln.wait_ready("survivor", 3, release=1, timeout=60)
    assert all("v1" in kiln.get("survivor.test").text for _ in range(6))
    kinds = [e["kind"] for e in kiln.cli_json("events", "--limit", "1000")]
    assert "driver.unavailable" in kinds or "instance.exited" in kinds
