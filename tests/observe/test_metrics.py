"""GET /metrics over the engine with fakes: valid by promtool, per-instance CPU and memory from
the sampler, per-release traffic from the router's counters (the canary analysis's source)."""

from __future__ import annotations

import shutil
import subprocess

from prometheus_client.parser import text_string_to_metric_families

from kiln.drivers.base import InstanceStats
from kiln.model import AppKey
from tests.controller.world import World, eventually, spec

WEB = AppKey("dev", "web")
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def samples(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found[sample.name, frozenset(sample.labels.items())] = sample.value
    return found


def value(found: dict, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    matches = [v for (n, ls), v in found.items() if n == name and wanted <= ls]
    assert matches, f"no {name} with {labels}"
    return sum(matches)


def promtool_check(text: bytes) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text.decode(), capture_output=True, text=True
    )


async def test_metrics_pass_promtool_and_report_instances_traffic_and_host(world: World) -> None:
    await world.engine.deploy(spec(instances=2), message="", who="t")
    await eventually(lambda: world.store.active_rollout(WEB) is None)
    busy, idle = world.running()
    world.driver.usage[busy.id] = InstanceStats(cpu_seconds=12.5, memory_bytes=64 << 20)
    world.driver.usage[idle.id] = InstanceStats(cpu_seconds=0.25, memory_bytes=8 << 20)
    world.router.add_traffic(WEB, 1, requests=40, errors=3, latency_ms=20)
    world.router.add_traffic(WEB, 1, requests=10, latency_ms=700)
    assert world.engine.plane.sampler is not None
    await eventually(lambda: world.engine.plane.last_instances.get(WEB))
    await world.engine.plane.sampler.sample()

    text = await world.engine.metrics()
    check = promtool_check(text)
    assert check.returncode == 0, check.stdout + check.stderr

    found = samples(text)
    assert value(found, "kiln_instance_cpu_seconds_total", instance=busy.id) == 12.5
    assert value(found, "kiln_instance_memory_bytes", instance=busy.id, release="1") == 64 << 20
    assert value(found, "kiln_instance_cpu_seconds_total", instance=busy.id) > value(
        found, "kiln_instance_cpu_seconds_total", instance=idle.id
    )
    assert value(found, "kiln_app_requests_total", app="web", env="dev", release="1") == 50
    assert value(found, "kiln_app_errors_total", app="web", release="1") == 3
    assert value(found, "kiln_app_request_duration_seconds_bucket", app="web", le="0.025") == 40
    assert value(found, "kiln_app_request_duration_seconds_bucket", app="web", le="+Inf") == 50
    assert value(found, "kiln_instances", app="web", state="running", readiness="ready") == 2
    assert value(found, "kiln_rollouts_total", strategy="rolling", result="succeeded") == 1
    assert value(found, "kiln_rollout_duration_seconds_count", strategy="rolling") == 1
    assert value(found, "kiln_reconcile_round_duration_seconds_count") >= 1
    assert value(found, "kiln_nginx_reloads_total", result="ok") >= 1
    assert value(found, "kiln_host_memory_total_bytes") > 0
    assert value(found, "kiln_host_cpu_seconds_total", mode="idle") > 0
    assert value(found, "kiln_events_total", kind="rollout.succeeded") == 1


async def test_replacements_are_counted_with_their_reason(world: World) -> None:
    await world.engine.deploy(spec(instances=1), message="", who="t")
    await eventually(lambda: world.store.active_rollout(WEB) is None)
    victim = world.running()[0]
    world.driver.crash(victim.id, exit_code=137, oom=True)
    await eventually(lambda: world.running() and world.running()[0].id != victim.id)
    await eventually(
        lambda: any(e.kind == "instance.exited" for e in world.store.list_events(key=WEB))
    )
    found = samples(await world.engine.metrics())
    reasons = {
        dict(labels)["reason"]
        for (name, labels), v in found.items()
        if name == "kiln_restarts_total" and v > 0
    }
    assert reasons and reasons <= {"oom", "crashed"}


async def test_refused_calls_make_one_rate_limited_auth_failed_event(world: World) -> None:
    for _ in range(5):
        world.engine.observe_api_request("/v1/apps", "GET", 401, 0.001)
    world.engine.observe_api_request("/v1/apps", "GET", 200, 0.001)
    await world.engine.plane.events.flush()  # events are written by the bus's writer task
    failed = [e for e in world.store.list_events() if e.kind == "auth.failed"]
    assert len(failed) == 1
    assert "refused GET /v1/apps (401" in failed[0].reason
    found = samples(await world.engine.metrics())
    assert value(found, "kiln_api_request_duration_seconds_count", status="401") == 5
    assert value(found, "kiln_events_total", kind="auth.failed") == 1
