"""The artifact repository end to end: a real docker-registry run by kiln, real private
dockerds. A release holds the registry digest; an engine that never saw the image pulls it by
that digest and serves; a tag means one digest forever; the registry is restarted when killed."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import docker
import httpx
import pytest

from kiln.registry.embedded import EmbeddedRegistry
from tests.e2e.conftest import hello_spec
from tests.e2e.harness import KilnHarness, wait_until
from tests.harness.dockerd import PrivateDockerd

pytestmark = pytest.mark.integration


def registry_of(kiln: KilnHarness) -> EmbeddedRegistry:
    return EmbeddedRegistry(kiln.home / "registry")


def test_a_release_pins_the_registry_digest_and_a_fresh_engine_pulls_it_and_serves(
    kiln: KilnHarness, tmp_path_factory: pytest.TempPathFactory
) -> None:
    assert kiln.deploy(hello_spec("pinned", "kiln-hello:v1", instances=2), "--wait").returncode == 0
    kiln.wait_ready("pinned", 2, release=1)
    release = kiln.cli_json("releases", "pinned")[0]
    host = registry_of(kiln).host
    assert release["image"] == "kiln-hello:v1"
    assert release["digest"].startswith(f"{host}/kiln-hello@sha256:")
    kinds = [e["kind"] for e in kiln.cli_json("events", "pinned", "--limit", "1000")]
    assert "image.pushed" in kinds

    # A second machine: its own engine, which has never seen the image, and its own kiln
    # pointed at the first kiln's registry. It deploys the exact digest.
    with PrivateDockerd() as fresh:
        client = docker.DockerClient(base_url=fresh.docker_host, version="1.41")
        assert client.api.images(all=True) == []
        home = tmp_path_factory.mktemp("kiln-home-second")
        (home / "settings.yaml").write_text(f"registry:\n  url: http://{host}\n")
        second = KilnHarness(home, fresh.docker_host)
        try:
            second.start()
            spec = hello_spec("pinned", release["digest"], instances=2)
            result = second.deploy(spec, "--wait")
            assert result.returncode == 0, result.stdout + result.stderr
            second.wait_ready("pinned", 2, release=1)
            assert all("v1" in second.get("pinned.test").text for _ in range(4))
            assert second.cli_json("releases", "pinned")[0]["digest"] == release["digest"]
            events = second.cli_json("events", "pinned", "--limit", "1000")
            pulled = [e["reason"] for e in events if e["kind"] == "image.pulled"]
            assert pulled and release["digest"] in pulled[0]
            kinds = [e["kind"] for e in events]
            assert kinds.index("image.pulling") < kinds.index("image.pulled")
            # Exactly what the first engine runs: the same image id.
            ids = {c.image.id for c in client.containers.list()}
            first_ids = {
                kiln.docker.containers.get(c.id).image.id for c in kiln.containers("pinned")
            }
            assert ids == first_ids
        finally:
            second.teardown()
            client.close()


def test_a_digest_the_registry_does_not_hold_is_refused_and_nothing_changes(
    kiln: KilnHarness,
) -> None:
    missing = f"{registry_of(kiln).host}/kiln-hello@sha256:{'0' * 64}"
    result = kiln.deploy(hello_spec("ghost", missing))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "has no" in result.stderr and missing in result.stderr
    assert kiln.cli("releases", "ghost").returncode == 4


def test_a_tag_means_one_digest_forever(
    kiln: KilnHarness, docker_client: docker.DockerClient, hello_images: dict[str, str]
) -> None:
    docker_client.api.tag(hello_images["v1"], "immutable", tag="1.0")
    first = kiln.deploy(hello_spec("fixed", "immutable:1.0", instances=1), "--wait")
    assert first.returncode == 0, first.stdout + first.stderr
    pinned = kiln.cli_json("releases", "fixed")[0]["digest"]
    # Someone rebuilds immutable:1.0 with other contents and deploys it again.
    docker_client.api.tag(hello_images["v2"], "immutable", tag="1.0")
    again = kiln.deploy(hello_spec("fixed", "immutable:1.0", instances=1))
    assert again.returncode == 7, again.stdout + again.stderr
    message = " ".join(again.stderr.split())
    assert pinned.split("@")[1] in message and hello_images["v2"] in message
    assert "immutable" in message
    assert len(kiln.cli_json("releases", "fixed")) == 1
    assert all("v1" in kiln.get("fixed.test").text for _ in range(3))


def test_apps_deployed_at_once_from_one_new_image_all_deploy_on_one_push(
    kiln: KilnHarness,
) -> None:
    # A tag the registry has never seen, so the first deploy pushes it.
    kiln.docker.images.get("kiln-hello:v1").tag("kiln-hello", "together")
    apps = [f"together{n}" for n in range(8)]

    def deploy(app: str) -> httpx.Response:
        spec = hello_spec(app, "kiln-hello:together", instances=1)
        return kiln.api("POST", "/v1/deploy", json={"spec": spec})

    with ThreadPoolExecutor(len(apps)) as pool:
        answers = list(pool.map(deploy, apps))
    try:
        assert [a.status_code for a in answers] == [201] * len(apps), [a.text for a in answers]
        assert len({a.json()["release"]["digest"] for a in answers}) == 1
        pushed = [
            e
            for e in kiln.cli_json("events", "--limit", "1000")
            if e["kind"] == "image.pushed" and "kiln-hello:together" in e["reason"]
        ]
        assert len(pushed) == 1
    finally:
        for app in apps:
            kiln.api("DELETE", f"/v1/apps/dev/{app}")


def test_the_registry_is_restarted_when_killed(kiln: KilnHarness) -> None:
    registry = registry_of(kiln)
    pid = registry.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: registry.pid() not in (None, pid), timeout=10, what="the registry to be restarted"
    )
    wait_until(
        lambda: (
            "registry.restarted" in [e["kind"] for e in kiln.cli_json("events", "--limit", "1000")]
        ),
        timeout=10,
        what="the registry.restarted event",
    )
    # And it serves what it held: a new app of an image pushed earlier deploys by tag.
    assert kiln.deploy(hello_spec("after", "kiln-hello:v1", instances=1), "--wait").returncode == 0


@pytest.fixture(autouse=True)
def _no_leftover_registry(kiln: KilnHarness) -> Iterator[None]:
    yield
    assert registry_of(kiln).pid() is not None  # kiln keeps it running between tests
