"""What a user sees of a running app on the real engine and NGINX: /metrics (valid for
promtool, request counts equal to what a client sent), the logs of an instance that was killed
and replaced, the app's access lines, and typed events."""

from __future__ import annotations

import json
import shutil
import subprocess

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import hello_spec
from tests.e2e.harness import KilnHarness, wait_until

pytestmark = pytest.mark.integration

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def scrape(kiln: KilnHarness) -> str:
    response = kiln.api("GET", "/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def total(text: str, name: str, **labels: str) -> float:
    found = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                found += sample.value
    return found


def test_request_counters_equal_what_a_client_sent_and_promtool_accepts_the_scrape(
    kiln: KilnHarness,
) -> None:
    app = "metered"
    assert kiln.deploy(hello_spec(app, "kiln-hello:v1", instances=2), "--wait").returncode == 0
    kiln.wait_ready(app, 2, release=1)
    before = total(scrape(kiln), "kiln_app_requests_total", app=app)
    sent = 150
    with httpx.Client(base_url=f"http://127.0.0.1:{kiln.http_port}", timeout=5) as client:
        for _ in range(sent):  # one after another: none in flight when we read the counters
            assert client.get("/", headers={"Host": f"{app}.test"}).status_code == 200

    text = scrape(kiln)
    counted = total(text, "kiln_app_requests_total", app=app, env="dev", release="1") - before
    assert counted == sent
    assert total(text, "kiln_app_errors_total", app=app) == 0
    assert total(text, "kiln_app_request_duration_seconds_count", app=app) - before == sent

    check = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr

    # CPU and memory of each instance come from the background sampler (every 5 s).
    def sampled() -> str | None:
        text = scrape(kiln)
        memory = [
            s
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == "kiln_instance_memory_bytes" and s.labels.get("app") == app
        ]
        return text if len(memory) == 2 and all(s.value > 0 for s in memory) else None

    text = wait_until(sampled, timeout=20, what="CPU and memory samples of both instances")
    assert total(text, "kiln_instance_cpu_seconds_total", app=app) > 0
    assert total(text, "kiln_instances", app=app, state="running", readiness="ready") == 2
    assert total(text, "kiln_host_memory_total_bytes") > 0


def test_a_killed_instance_logs_stay_readable_after_its_replacement(kiln: KilnHarness) -> None:
    app = "chronicle"
    assert kiln.deploy(hello_spec(app, "kiln-hello:v1", instances=1), "--wait").returncode == 0
    kiln.wait_ready(app, 1, release=1)
    victim = kiln.status(app)["instances"][0]["id"]

    def logged(instance: str) -> str | None:
        out = kiln.cli("logs", app, "--instance", instance).stdout
        return out if "listening on" in out else None

    wait_until(lambda: logged(victim), timeout=20, what="the instance's start line kept")
    (container,) = [c for c in kiln.containers(app) if c.labels["io.kiln.instance"] == victim]
    kiln.docker.api.kill(container.id)

    def replaced() -> bool:
        ids = {i["id"] for i in kiln.status(app)["instances"] if i["ready"]}
        return bool(ids) and victim not in ids

    wait_until(replaced, timeout=30, what="a replacement")
    wait_until(lambda: not any(c.id == container.id for c in kiln.containers(app)), timeout=30)
    out = logged(victim)
    assert out is not None and f"{victim} | hello v1 (healthy) listening on" in out
    # Merged: the whole app's logs hold the victim's line and its replacement's.
    result = kiln.cli("logs", app, "--json")
    everything = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert {line["instance"] for line in everything} >= {victim}
    assert len({line["instance"] for line in everything}) >= 2

    kiln.get(f"{app}.test")

    def access() -> str | None:
        out = kiln.cli("logs", app, "--router").stdout
        return out if f"{app}.test/" in out else None

    wait_until(access, timeout=15, what="the access line (NGINX flushes every second)")
    events = kiln.cli_json("events", app, "--type", "instance.exited")
    assert events and all(e["kind"] == "instance.exited" for e in events)
