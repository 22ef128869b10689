"""Two kilns (two KILN_HOMEs) on ONE Docker engine, each serving the same app through its own
NGINX: neither fails the other's requests, stops, restarts or removes the other's containers,
and a container left by a kiln from before installation ids is left alone (ARCHITECTURE.md,
invariant 9)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from kiln.model import LABEL_APP, LABEL_ENV, LABEL_INSTANCE, LABEL_MANAGED, LABEL_RELEASE
from tests.e2e.conftest import hello_spec
from tests.e2e.harness import KilnHarness, wait_until
from tests.e2e.load import LoadClient
from tests.harness.dockerd import PrivateDockerd

pytestmark = pytest.mark.integration

APP = "twin"  # both kilns deploy an app of this name, in the same environment
RELIC = "relic"  # the legacy container's app: no kiln's store knows it
RELIC_INSTANCE = "r1-relic0"


@dataclass
class Pair:
    one: KilnHarness
    two: KilnHarness
    relic: str  # container id of the legacy container
    relic_started: str  # when its process started (a restart would change it)


@pytest.fixture(scope="module")
def pair(
    dockerd: PrivateDockerd,
    docker_client: docker.DockerClient,
    hello_images: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pair]:
    # Made by "an older kiln" before either server starts: kiln's labels, no installation label.
    relic = docker_client.api.create_container(
        hello_images["v1"],
        name="kiln-dev-relic-r1-relic0",  # how kiln named containers before installation ids
        labels={
            LABEL_MANAGED: "true",
            LABEL_ENV: "dev",
            LABEL_APP: RELIC,
            LABEL_RELEASE: "1",
            LABEL_INSTANCE: RELIC_INSTANCE,
        },
    )["Id"]
    docker_client.api.start(relic)
    relic_started = docker_client.api.inspect_container(relic)["State"]["StartedAt"]
    one = KilnHarness(tmp_path_factory.mktemp("kiln-home-one"), dockerd.docker_host)
    two = KilnHarness(tmp_path_factory.mktemp("kiln-home-two"), dockerd.docker_host)
    try:
        one.start()
        two.start()
        yield Pair(one, two, relic, relic_started)
    finally:
        for harness in (one, two):
            harness.teardown()
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.api.remove_container(relic, force=True)


def started_at(client: docker.DockerClient, container_ids: set[str]) -> dict[str, str]:
    """When each container's process started: a restart in place would change it."""
    return {cid: client.api.inspect_container(cid)["State"]["StartedAt"] for cid in container_ids}


def running(kiln: KilnHarness, app: str) -> set[str]:
    return {c.id for c in kiln.containers(app) if c.status == "running"}


def all_events(kiln: KilnHarness) -> list[dict[str, Any]]:
    return list(kiln.cli_json("events", "--limit", "1000"))


def test_two_kilns_on_one_engine_serve_the_same_app_without_touching_each_other(
    pair: Pair, docker_client: docker.DockerClient
) -> None:
    one, two = pair.one, pair.two
    assert one.installation_id and two.installation_id
    assert one.installation_id != two.installation_id
    for kiln in (one, two):
        result = kiln.deploy(hello_spec(APP, "kiln-hello:v1", instances=2), "--wait")
        assert result.returncode == 0, result.stdout + result.stderr + kiln.server_log()
    one.wait_ready(APP, 2, release=1)
    two.wait_ready(APP, 2, release=1)
    ones = running(one, APP)
    ones_started = started_at(docker_client, ones)
    assert len(ones) == 2 and len(running(two, APP)) == 2
    # The spec's defaults reach the engine: 0.5 CPU, 128Mi (no swap), 256 pids, the image's user.
    host = docker_client.api.inspect_container(next(iter(ones)))["HostConfig"]
    assert (host["NanoCpus"], host["Memory"], host["MemorySwap"], host["PidsLimit"]) == (
        500_000_000,
        128 * 1024**2,
        128 * 1024**2,
        256,
    )
    for kiln in (one, two):
        assert kiln.installation_id is not None
        prefix = f"kiln-{kiln.installation_id[:8]}-dev-{APP}-r1-"
        assert all(c.name.startswith(prefix) for c in kiln.containers(APP))

    load_one = LoadClient(
        port=one.http_port, host_header=f"{APP}.test", keep_alive=True, max_seconds=90
    )
    load_two = LoadClient(
        port=two.http_port,
        host_header=f"{APP}.test",
        keep_alive=True,
        max_seconds=90,
        markers=("v2", "v1"),
    )
    with load_one, load_two:
        load_one.wait_for_requests(100)
        load_two.wait_for_requests(100)

        # Two rolls its app to v2: it starts and stops its own containers only.
        result = two.deploy(hello_spec(APP, "kiln-hello:v2", instances=2), "--wait")
        assert result.returncode == 0, result.stdout + result.stderr + two.server_log()
        two.wait_ready(APP, 2, release=2)
        twos = running(two, APP)
        twos_started = started_at(docker_client, twos)
        for load in (load_one, load_two):
            load.wait_for_requests(load.report.requests + 100)
        report_one = load_one.stop()

        # One's containers are the very same ones, never restarted; one never served v2.
        assert running(one, APP) == ones
        assert started_at(docker_client, ones) == ones_started
        assert report_one.failures == 0, report_one.errors
        assert all("v1" in one.get(f"{APP}.test").text for _ in range(5))

        # One destroys its app: its containers go, two's stay and keep serving.
        destroyed = one.cli("destroy", APP, "--yes")
        assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
        wait_until(lambda: not one.containers(APP), timeout=30, what="one's containers removed")
        load_two.wait_for_requests(load_two.report.requests + 100)
        report_two = load_two.stop()

    assert report_two.failures == 0, report_two.errors
    assert report_two.bodies["v1"] > 0 and report_two.bodies["v2"] > 0
    assert running(two, APP) == twos
    assert started_at(docker_client, twos) == twos_started
    two.wait_ready(APP, 2, release=2)
    assert not ones & {c.id for c in two.containers(APP)}


def test_a_legacy_container_is_neither_removed_nor_adopted_and_is_reported(
    pair: Pair, docker_client: docker.DockerClient
) -> None:
    one, two = pair.one, pair.two
    # Neither kiln knows the app, so neither may call it or its instance its own.
    for kiln in (one, two):
        assert RELIC not in {a["app"] for a in kiln.cli_json("status")["apps"]}
        assert RELIC_INSTANCE not in {i["id"] for i in kiln.cli_json("ps")}

    def reported(kiln: KilnHarness) -> list[dict[str, Any]]:
        """Events that say the container is a legacy one (not ones about stopping it)."""
        return [
            e
            for e in all_events(kiln)
            if "legacy" in e["reason"]
            and (RELIC_INSTANCE in e["reason"] or pair.relic[:12] in e["reason"])
        ]

    wait_until(
        lambda: reported(one) and reported(two),
        timeout=10,
        interval=0.5,
        what="both kilns to report the legacy container",
    )
    state = docker_client.api.inspect_container(pair.relic)["State"]
    assert state["Running"] and state["StartedAt"] == pair.relic_started


def test_each_kiln_says_once_that_it_shares_the_engine_with_the_other(pair: Pair) -> None:
    one, two = pair.one, pair.two
    for kiln in (one, two):  # each has containers on the engine now
        result = kiln.deploy(hello_spec("nod", "kiln-hello:v1", instances=1), "--wait")
        assert result.returncode == 0, result.stdout + result.stderr

    def mentions(kiln: KilnHarness, other: KilnHarness) -> list[dict[str, Any]]:
        assert other.installation_id is not None
        return [e for e in all_events(kiln) if other.installation_id[:8] in e["reason"]]

    wait_until(
        lambda: mentions(one, two) and mentions(two, one),
        timeout=10,
        interval=0.5,
        what="each kiln to name the other installation",
    )
    assert len(mentions(one, two)) == 1 and len(mentions(two, one)) == 1


def test_installation_ids_live_in_each_home(pair: Pair) -> None:
    for kiln in (pair.one, pair.two):
        path = Path(kiln.settings.installation_id_path)
        assert path.stat().st_mode & 0o777 == 0o600
        assert path.read_text().strip() == kiln.installation_id
