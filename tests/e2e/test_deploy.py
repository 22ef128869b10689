"""A user deploys, updates, breaks and rolls back an app; kiln keeps serving throughout."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import hello_spec
from tests.e2e.harness import KilnHarness
from tests.e2e.load import LoadClient

pytestmark = pytest.mark.integration


def test_first_deploy_serves_three_ready_instances_through_nginx(kiln: KilnHarness) -> None:
    result = kiln.deploy(hello_spec("first", "kiln-hello:v1"), "--wait")
    assert result.returncode == 0, result.stdout + result.stderr

    status = kiln.wait_ready("first", 3, release=1)
    assert status["state"] == "running"
    assert {i["release"] for i in status["instances"]} == {1}
    bodies = {kiln.get("first.test").text for _ in range(12)}
    assert all("v1" in body for body in bodies)
    assert len(kiln.containers("first")) == 3

    releases = kiln.cli_json("releases", "first")
    assert [r["number"] for r in releases] == [1]
    # The release holds the manifest digest in kiln's registry, never a tag or an engine id.
    registry = (kiln.home / "registry" / "port").read_text().strip()
    assert releases[0]["digest"].startswith(f"127.0.0.1:{registry}/kiln-hello@sha256:")
    assert releases[0]["image"] == "kiln-hello:v1"


def test_same_spec_deployed_twice_makes_no_new_release(kiln: KilnHarness) -> None:
    assert kiln.deploy(hello_spec("twice", "kiln-hello:v1", instances=1), "--wait").returncode == 0
    again = kiln.deploy(hello_spec("twice", "kiln-hello:v1", instances=1), "--wait")
    assert again.returncode == 0, again.stderr
    assert len(kiln.cli_json("releases", "twice")) == 1


@pytest.mark.parametrize(
    ("keep_alive", "network"),
    [(False, "bridge"), (True, "bridge"), (True, "host")],
    ids=["new-connection-per-request", "keep-alive", "keep-alive-host-network"],
)
def test_rolling_update_under_load_fails_no_request(
    kiln: KilnHarness, keep_alive: bool, network: str
) -> None:
    app = f"roll-{'ka' if keep_alive else 'new'}-{network}"
    assert kiln.deploy(hello_spec(app, "kiln-hello:v1", network=network), "--wait").returncode == 0
    kiln.wait_ready(app, 3, release=1)

    load = LoadClient(
        port=kiln.http_port, host_header=f"{app}.test", keep_alive=keep_alive, markers=("v2", "v1")
    )
    with load:
        load.wait_for_requests(50)
        result = kiln.deploy(hello_spec(app, "kiln-hello:v2", network=network), "--wait")
        assert result.returncode == 0, result.stdout + result.stderr
        before = load.report.requests
        load.wait_for_requests(before + 50)
    report = load.report

    assert report.failures == 0, report.errors
    assert report.closed_by_server == 0
    assert report.bodies["v1"] > 0 and report.bodies["v2"] > 0
    # Once the rollout finished, every answer comes from the new release.
    assert report.last_seen["v1"] < report.last_seen["v2"]
    assert all("v2" in kiln.get(f"{app}.test").text for _ in range(10))
    kiln.wait_ready(app, 3, release=2)
    assert len(kiln.containers(app)) == 3


def test_broken_release_fails_its_deadline_and_rolls_back_on_its_own(kiln: KilnHarness) -> None:
    app = "broken"
    assert kiln.deploy(hello_spec(app, "kiln-hello:v1"), "--wait").returncode == 0
    kiln.wait_ready(app, 3, release=1)

    with LoadClient(
        port=kiln.http_port, host_header=f"{app}.test", keep_alive=True, markers=("v1",)
    ) as load:
        result = kiln.deploy(hello_spec(app, "kiln-hello:broken", deadline="4s"), "--wait")
        load.wait_for_requests(load.report.requests + 20)

    assert result.returncode == 3, result.stdout + result.stderr
    assert "release 2" in result.stdout + result.stderr
    assert load.report.failures == 0, load.report.errors  # release 1 kept serving

    status = kiln.wait_ready(app, 3, release=1)
    assert status["target_release"] == 1
    releases = {r["number"]: r for r in kiln.cli_json("releases", app)}
    assert releases[2]["result"] == "failed"
    assert "deadline" in releases[2]["result_reason"]
    events = kiln.cli_json("events", app, "--limit", "1000")
    failed = [e for e in events if e["kind"] == "rollout.failed"]
    assert failed and "rolling back to release 1" in failed[-1]["reason"]


def test_rollback_makes_a_new_release_from_an_old_one(kiln: KilnHarness) -> None:
    app = "back"
    for tag in ("kiln-hello:v1", "kiln-hello:v2", "kiln-hello:v3"):
        assert kiln.deploy(hello_spec(app, tag, instances=2), "--wait").returncode == 0
    releases = kiln.cli_json("releases", app)
    digests = {r["number"]: r["digest"] for r in releases}

    previous = kiln.cli("rollback", app, "--wait")
    assert previous.returncode == 0, previous.stdout + previous.stderr
    kiln.wait_ready(app, 2, release=4)
    assert "v2" in kiln.get(f"{app}.test").text

    to_first = kiln.cli("rollback", app, "--to", "1", "--wait")
    assert to_first.returncode == 0, to_first.stdout + to_first.stderr
    kiln.wait_ready(app, 2, release=5)
    assert "v1" in kiln.get(f"{app}.test").text

    after = {r["number"]: r for r in kiln.cli_json("releases", app)}
    assert after[4]["digest"] == digests[2] and after[4]["rollback_of"] == 2
    assert after[5]["digest"] == digests[1] and after[5]["rollback_of"] == 1
    # Releases are append-only: the old ones are exactly as they were.
    assert [after[n]["digest"] for n in (1, 2, 3)] == [digests[n] for n in (1, 2, 3)]


def test_invalid_spec_is_refused_with_every_problem_and_changes_nothing(kiln: KilnHarness) -> None:
    assert kiln.deploy(hello_spec("strict", "kiln-hello:v1", instances=1), "--wait").returncode == 0
    before = kiln.cli_json("releases", "strict")

    bad = "app: strict\nimage: kiln-hello:v2\nport: 8080\ninstances: -1\nhealth: {http: healthz}\n"
    result = kiln.deploy(bad)
    assert result.returncode == 2
    assert "instances: must be ≥ 0, got -1" in result.stderr
    assert "health.http" in result.stderr
    assert kiln.cli_json("releases", "strict") == before

    missing_image = kiln.deploy(hello_spec("strict", "kiln-hello:nope", instances=1))
    assert missing_image.returncode == 2
    assert "kiln-hello:nope" in missing_image.stderr
    assert kiln.cli_json("releases", "strict") == before


def test_unknown_app_and_bad_token_get_clear_errors(kiln: KilnHarness) -> None:
    unknown = kiln.cli("status", "nosuchapp")
    assert unknown.returncode == 4
    assert "nosuchapp" in unknown.stderr

    response = kiln.api("GET", "/v1/apps", headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401
    assert "token" in json.dumps(response.json()).lower()
    assert kiln.api("GET", "/v1/apps").status_code == 200
