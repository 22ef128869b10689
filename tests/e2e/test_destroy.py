"""Destroying apps on a real engine: the answer comes once their routes are gone, the instances
go in the background, and the same name can be deployed again right away."""

from __future__ import annotations

import contextlib

import docker
import pytest

from kiln.model import LABEL_APP, LABEL_ENV, LABEL_INSTANCE, LABEL_MANAGED, LABEL_RELEASE
from tests.e2e.conftest import hello_spec
from tests.e2e.harness import KilnHarness, wait_until

pytestmark = pytest.mark.integration


def test_destroy_of_several_apps_then_a_redeploy_of_one_name(kiln: KilnHarness) -> None:
    apps = ["gone-a", "gone-b"]
    for app in apps:
        assert kiln.deploy(hello_spec(app, "kiln-hello:v1", instances=2), "--wait").returncode == 0
        kiln.wait_ready(app, 2, release=1)
    old = {c.id for c in kiln.containers("gone-a")}

    # One of the three is unknown: it is named, the other two are still destroyed.
    result = kiln.cli("destroy", "gone-a", "ghost", "gone-b", "--yes")
    assert result.returncode == 4, result.stdout + result.stderr
    assert "dev/ghost" in result.stderr
    assert "dev/gone-a: destroyed" in result.stdout and "dev/gone-b: destroyed" in result.stdout
    for app in apps:  # their traffic stopped before the command returned
        assert kiln.get(f"{app}.test").status_code == 404
    assert not {a["app"] for a in kiln.cli_json("status")["apps"]} & set(apps)

    # The same name again at once, a new version: the old release 1's containers (still
    # draining) must not pass for the new release 1's.
    again = kiln.deploy(hello_spec("gone-a", "kiln-hello:v2", instances=2), "--wait")
    assert again.returncode == 0, again.stdout + again.stderr
    status = kiln.wait_ready("gone-a", 2, release=1)
    assert not old & {i["container_id"] for i in status["instances"]}
    assert all("v2" in kiln.get("gone-a.test").text for _ in range(4))
    wait_until(lambda: not kiln.containers("gone-b"), timeout=30, what="gone-b's containers gone")
    assert not old & {c.id for c in kiln.containers("gone-a")}


def test_destroy_with_wait_returns_once_the_containers_are_gone(kiln: KilnHarness) -> None:
    app = "gone-wait"
    assert kiln.deploy(hello_spec(app, "kiln-hello:v1", instances=2), "--wait").returncode == 0
    result = kiln.cli("destroy", app, "--yes", "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every instance stopped and removed" in result.stdout
    assert kiln.containers(app) == []
    assert kiln.get(f"{app}.test").status_code == 404


def test_destroy_with_wait_also_removes_legacy_containers_of_its_releases(
    kiln: KilnHarness, docker_client: docker.DockerClient, hello_images: dict[str, str]
) -> None:
    app = "gone-legacy"
    assert kiln.deploy(hello_spec(app, "kiln-hello:v1", instances=1), "--wait").returncode == 0

    def legacy(release: int) -> str:
        """A container "a kiln from before installation ids" made: kiln's labels, no
        installation label."""
        made = docker_client.api.create_container(
            hello_images["v1"],
            name=f"kiln-dev-{app}-r{release}-old",
            labels={
                LABEL_MANAGED: "true",
                LABEL_ENV: "dev",
                LABEL_APP: app,
                LABEL_RELEASE: str(release),
                LABEL_INSTANCE: f"r{release}-{app}-old",
            },
        )["Id"]
        docker_client.api.start(made)
        return str(made)

    ours, unknown = legacy(1), legacy(9)  # release 9: this kiln never made it
    try:
        result = kiln.cli("destroy", app, "--yes", "--wait")
        assert result.returncode == 0, result.stdout + result.stderr
        with pytest.raises(docker.errors.NotFound):
            docker_client.api.inspect_container(ours)
        assert docker_client.api.inspect_container(unknown)["State"]["Running"]  # left alone
    finally:
        for made in (ours, unknown):
            with contextlib.suppress(docker.errors.NotFound):
                docker_client.api.remove_container(made, force=True)
