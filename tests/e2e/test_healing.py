"""kiln heals what breaks: instances, itself, NGINX and the Docker engine."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.e2e.conftest import hello_spec
from tests.e2e.harness import KilnHarness, wait_until
from tests.e2e.load import LoadClient

pytestmark = pytest.mark.integration


def _running_ids(kiln: KilnHarness, app: str) -> set[str]:
    return {c.id for c in kiln.containers(app) if c.status == "running"}


def test_killed_instance_is_replaced(kiln: KilnHarness) -> None:
    app = "heal"
    assert kiln.deploy(hello_spec(app, "kiln-hello:v1"), "--wait").returncode == 0
    status = kiln.wait_ready(app, 3, release=1)
    victim = status["instances"][0]

    kiln.docker.containers.get(victim["container_id"]).kill(signal="SIGKILL")

    def replaced() -> bool:
        now = kiln.status(app)
        ids = {i["id"] for i in now["instances"] if i["ready"] and i["in_router"]}
        return len(ids) == 3 and victim["id"] not in ids

    wait_until(replaced, timeout=15, what="a replacement of the killed instance")
    events = kiln.cli_json("events", app, "--limit", "1000")
    exited = [e for e in events if e["kind"] == "instance.exited" and e["instance"] == victim["id"]]
    assert exited and "137" in exited[-1]["reason"]
    assert len(_running_ids(kiln, app)) == 3


def test_crash_looping_release_backs_off_and_fails_its_rollout(kiln: KilnHarness) -> None:
    app = "crashy"
    assert kiln.deploy(hello_spec(app, "kiln-hello:v1", instances=1), "--wait").returncode == 0
    crashing = hello_spec(
        app, "kiln-hello:v2", instances=1, extra='command: ["/bin/busybox", "sh", "-c", "exit 3"]\n'
    )
    result = kiln.deploy(crashing, "--wait")
    assert result.returncode == 3, result.stdout + result.stderr
    events = kiln.cli_json("events", app, "--limit", "1000")
    failed = [e for e in events if e["kind"] == "rollout.failed"][-1]
    assert "crashed" in failed["reason"] and "exited with code 3" in failed["reason"]
    backoffs = [e for e in events if e["kind"] == "instance.backoff"]
    assert backoffs and "crash loop backoff: next start in" in backoffs[0]["reason"]
    kiln.wait_ready(app, 1, release=1)


def test_instance_failing_liveness_is_replaced(kiln: KilnHarness) -> None:
    app = "liveness"
    spec = hello_spec(
        app,
        "kiln-hello:v1",
        instances=2,
        extra=(
            "health:\n  http: /healthz\n  interval: 1s\n  timeout: 500ms\n"
            "  liveness:\n    command: [/bin/busybox, test, '!', -e, /tmp/sick]\n"
            "    interval: 300ms\n    timeout: 300ms\n    unhealthy_threshold: 2\n"
        ),
    ).replace("health:\n  http: /healthz\n  interval: 1s\n  timeout: 500ms\nroutes", "routes", 1)
    assert kiln.deploy(spec, "--wait").returncode == 0, spec
    status = kiln.wait_ready(app, 2, release=1)
    sick = status["instances"][0]
    kiln.docker.containers.get(sick["container_id"]).exec_run(
        ["/bin/busybox", "touch", "/tmp/sick"]
    )

    def replaced() -> bool:
        now = kiln.status(app)
        ids = {i["id"] for i in now["instances"] if i["ready"] and i["in_router"]}
        return len(ids) == 2 and sick["id"] not in ids

    try:
        wait_until(replaced, timeout=20, what="the unhealthy instance to be replaced")
    except AssertionError:
        # What kiln saw, for whoever reads the failure (pytest shows what a failed test printed).
        print(json.dumps(kiln.status(app), indent=1, default=str))
        for event in kiln.cli_json("events", app, "--limit", "1000"):
            print(event.get("at"), event.get("kind"), event.get("instance"), event.get("reason"))
        print(kiln.server_log())
        raise
    kinds = [
        e["kind"]
        for e in kiln.cli_json("events", app, "--limit", "1000")
        if e.get("instance") == sick["id"]
    ]
    assert "instance.unhealthy" in kinds


def test_server_killed_mid_rollout_finishes_it_after_restart(kiln: KilnHarness) -> None:
    app = "phoenix"
    assert kiln.deploy(hello_spec(app, "kiln-hello:v1"), "--wait").returncode == 0
    kiln.wait_ready(app, 3, release=1)

    with LoadClient(
        port=kiln.http_port, host_header=f"{app}.test", keep_alive=True, markers=("v2", "v1")
    ) as load:
        started = kiln.deploy(hello_spec(app, "kiln-hello:v2"), "--no-wait")
        assert started.returncode == 0, started.stderr
        wait_until(
            lambda: any(c.labels.get("io.kiln.release") == "2" for c in kiln.containers(app)),
            timeout=10,
            interval=0.01,
            what="a release-2 container",
        )
        kiln.kill9()
        load.wait_for_requests(load.report.requests + 30)  # NGINX serves while kiln is down
        kiln.start()
        kiln.wait_ready(app, 3, release=2, timeout=30)
        load.wait_for_requests(load.report.requests + 30)

    assert load.report.failures == 0, load.report.errors
    releases = kiln.cli_json("releases", app)
    assert [r["number"] for r in releases] == [1, 2]
    assert releases[1]["result"] in ("current", "succeeded")
    containers = kiln.containers(app)
    assert len(containers) == 3, [c.name for c in containers]  # no orphans
    assert {c.labels["io.kiln.release"] for c in containers} == {"2"}


def test_killed_nginx_is_restarted_with_its_routes_and_peers(kiln: KilnHarness) -> None:
    app = "phoenix-nginx"
    assert kiln.deploy(hello_spec(app, "kiln-hello:v1", instances=2), "--wait").returncode == 0
    kiln.wait_ready(app, 2, release=1)
    pid_file = next(kiln.settings.nginx_dir.rglob("nginx.pid"))
    master = int(pid_file.read_text().strip())
    os.killpg(os.getpgid(master), signal.SIGKILL)

    def serves() -> bool:
        try:
            return "v1" in kiln.get(f"{app}.test").text
        except Exception:
            return False

    wait_until(serves, timeout=15, what="NGINX to serve again")
    kinds = [e["kind"] for e in kiln.cli_json("events", "--limit", "1000")]
    assert "router.restarted" in kinds


def test_down_leaves_apps_serving_and_up_adopts_them(kiln: KilnHarness) -> None:
    app = "adopt"
    assert kiln.deploy(hello_spec(app, "kiln-hello:v1", instances=2), "--wait").returncode == 0
    kiln.wait_ready(app, 2, release=1)
    before = _running_ids(kiln, app)

    down = kiln.cli("down")
    assert down.returncode == 0, down.stderr
    if kiln.process is not None:
        kiln.process.wait(timeout=30)
        kiln.process = None
    assert all("v1" in kiln.get(f"{app}.test").text for _ in range(10))

    kiln.start()
    kiln.wait_ready(app, 2, release=1)
    assert _running_ids(kiln, app) == before  # adopted, not replaced


def test_scale_stop_logs_and_destroy(kiln: KilnHarness) -> None:
    app = "ops"
    assert kiln.deploy(hello_spec(app, "kiln-hello:v1", instances=1), "--wait").returncode == 0
    assert kiln.cli("scale", app, "3").returncode == 0
    kiln.wait_ready(app, 3, release=1)

    kiln.get(f"{app}.test")
    logs = kiln.cli("logs", app, "--tail", "50")
    assert logs.returncode == 0

    assert kiln.cli("stop", app).returncode == 0
    wait_until(lambda: not _running_ids(kiln, app), timeout=15, what="all instances stopped")
    assert kiln.get(f"{app}.test").status_code == 503

    refused = kiln.cli("destroy", app)
    assert refused.returncode == 2
    assert kiln.cli("status", app).returncode == 0

    assert kiln.cli("destroy", app, "--yes", "--wait").returncode == 0
    assert kiln.cli("status", app).returncode == 4
    assert not kiln.containers(app)
    assert kiln.get(f"{app}.test").status_code == 404


def _checks_of(kiln: KilnHarness, app: str) -> float:
    """Health checks kiln ran on ``app``'s instances so far, from ``/metrics``."""
    text = kiln.api("GET", "/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("kiln_instance_health_checks_total{") and f'app="{app}"' in line
    )


def test_quiet_app_is_checked_seldom_and_at_once_when_requests_come(kiln: KilnHarness) -> None:
    app = "quiet"
    assert kiln.deploy(hello_spec(app, "kiln-hello:v1", instances=2), "--wait").returncode == 0
    kiln.wait_ready(app, 2, release=1)
    # No request yet, no rollout: quiet at kiln's next look at NGINX's counters.
    wait_until(lambda: kiln.status(app)["quiet"], timeout=15, what="the app to be quiet")
    assert "health checks every idle_interval" in kiln.cli("status", app).stdout

    before = _checks_of(kiln, app)
    time.sleep(2.5)  # at the spec's 1 s interval, ~5 checks of 2 instances; quiet: 30 s apart
    assert _checks_of(kiln, app) - before <= 2  # at most one already due for each

    for _ in range(3):
        assert kiln.get(f"{app}.test").status_code == 200
    wait_until(lambda: not kiln.status(app)["quiet"], timeout=15, what="the app to be active")
    active = _checks_of(kiln, app)
    wait_until(
        lambda: _checks_of(kiln, app) >= active + 4, timeout=15, what="checks every interval again"
    )
