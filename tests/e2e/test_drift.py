"""Drift on the real engine: an instance edited by hand is replaced from its release (or only
reported), a container started by hand with kiln's labels is removed, a container removed by
hand is reported and replaced. Checks run every second here (settings.yaml: drift.interval)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import hello_spec
from tests.e2e.harness import KilnHarness, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def kiln(dockerd, hello_images, tmp_path_factory) -> Iterator[KilnHarness]:  # type: ignore[no-untyped-def]
    home = tmp_path_factory.mktemp("kiln-home")
    (home / "settings.yaml").write_text("drift:\n  interval: 1\n")
    harness = KilnHarness(home, dockerd.docker_host)
    try:
        harness.start()
        yield harness
    finally:
        harness.teardown()


WRITABLE = "security:\n  read_only: false\n"


def drift_events(kiln: KilnHarness, app: str, kind: str = "drift.detected") -> list[dict[str, Any]]:
    events = kiln.cli_json("events", app, "--limit", "1000")
    return [e for e in events if e["kind"] == kind]


def edit_a_file(kiln: KilnHarness, container_id: str) -> None:
    result = kiln.docker.containers.get(container_id).exec_run(
        ["/bin/busybox", "sh", "-c", "echo defaced > /www/version"]
    )
    assert result.exit_code == 0, result.output


def test_a_fresh_instance_with_a_writable_root_has_no_drift(kiln: KilnHarness) -> None:
    app = "pristine"
    assert (
        kiln.deploy(hello_spec(app, "kiln-hello:v1", instances=2, extra=WRITABLE)).returncode == 0
    )
    kiln.wait_ready(app, 2, release=1)
    report = kiln.cli_json("drift", app)
    assert report["checked"] == 2
    assert report["findings"] == []


def test_a_file_edited_in_an_instance_is_replaced_from_its_release(kiln: KilnHarness) -> None:
    app = "edited"
    assert (
        kiln.deploy(hello_spec(app, "kiln-hello:v1", instances=2, extra=WRITABLE)).returncode == 0
    )
    victim = kiln.wait_ready(app, 2, release=1)["instances"][0]

    edit_a_file(kiln, victim["container_id"])

    detected = wait_until(
        lambda: [e for e in drift_events(kiln, app) if e["instance"] == victim["id"]],
        timeout=15,
        what="a drift event for the edited instance",
    )
    assert "files changed outside the writable paths: C /www/version" in detected[0]["reason"]
    assert "replacing it" in detected[0]["reason"]

    def replaced() -> bool:
        ids = {i["id"] for i in kiln.status(app)["instances"] if i["ready"] and i["in_router"]}
        return len(ids) == 2 and victim["id"] not in ids

    wait_until(replaced, timeout=30, what="the edited instance replaced")
    wait_until(
        lambda: drift_events(kiln, app, "drift.corrected"),
        timeout=10,
        what="a drift.corrected event",
    )
    assert all(c.id != victim["container_id"] for c in kiln.containers(app))
    assert kiln.get(f"{app}.test", "/version").text.strip() == "v1"


def test_drift_report_only_reports(kiln: KilnHarness) -> None:
    app = "reported"
    spec = hello_spec(app, "kiln-hello:v1", instances=1, extra=WRITABLE + "drift: report\n")
    assert kiln.deploy(spec).returncode == 0
    victim = kiln.wait_ready(app, 1, release=1)["instances"][0]

    edit_a_file(kiln, victim["container_id"])

    detected = wait_until(
        lambda: drift_events(kiln, app), timeout=15, what="a drift event (report only)"
    )
    assert "left running (drift: report)" in detected[0]["reason"]
    report = kiln.cli_json("drift", app)
    (finding,) = report["findings"]
    assert (finding["kind"], finding["instance"], finding["action"]) == (
        "drifted",
        victim["id"],
        "report",
    )
    assert [i["id"] for i in kiln.status(app)["instances"]] == [victim["id"]]


def test_a_container_started_by_hand_with_kilns_labels_is_removed(kiln: KilnHarness) -> None:
    app = "handmade"
    assert kiln.deploy(hello_spec(app, "kiln-hello:v1", instances=1)).returncode == 0
    kiln.wait_ready(app, 1, release=1)
    labels = {
        "io.kiln.managed": "true",
        "io.kiln.installation": kiln.installation_id or "",
        "io.kiln.environment": "dev",
        "io.kiln.app": app,
    }
    impostor = kiln.docker.containers.run(
        "kiln-hello:v1",
        detach=True,
        network_mode="none",
        labels={**labels, "io.kiln.release": "1", "io.kiln.instance": "r1-bad001"},
    )
    stray = kiln.docker.containers.run(
        "kiln-hello:v1",
        detach=True,
        network_mode="none",
        labels={**labels, "io.kiln.release": "7", "io.kiln.instance": "r7-bad002"},
    )

    def reported() -> set[str]:
        return {e["instance"] for e in drift_events(kiln, app)} & {"r1-bad001", "r7-bad002"}

    wait_until(lambda: reported() == {"r1-bad001", "r7-bad002"}, timeout=15, what="both reported")
    reasons = {e["instance"]: e["reason"] for e in drift_events(kiln, app)}
    assert "no release owns it" in reasons["r7-bad002"]
    assert "was started outside kiln with the labels of release 1" in reasons["r1-bad001"]

    def gone() -> bool:
        ids = {c.id for c in kiln.containers(app)}
        return impostor.id not in ids and stray.id not in ids

    wait_until(gone, timeout=30, what="both hand-made containers removed")
    kiln.wait_ready(app, 1, release=1)


def test_a_container_removed_by_hand_is_reported_and_replaced(kiln: KilnHarness) -> None:
    app = "removed"
    assert kiln.deploy(hello_spec(app, "kiln-hello:v1", instances=2)).returncode == 0
    victim = kiln.wait_ready(app, 2, release=1)["instances"][0]

    kiln.docker.containers.get(victim["container_id"]).remove(force=True)

    detected = wait_until(
        lambda: [e for e in drift_events(kiln, app) if e["instance"] == victim["id"]],
        timeout=15,
        what="a drift event for the removed instance",
    )
    assert "is missing" in detected[0]["reason"] and "removed outside kiln" in detected[0]["reason"]

    def replaced() -> bool:
        ids = {i["id"] for i in kiln.status(app)["instances"] if i["ready"] and i["in_router"]}
        return len(ids) == 2 and victim["id"] not in ids

    wait_until(replaced, timeout=30, what="a replacement of the removed instance")
