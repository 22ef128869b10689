"""GET /metrics as each token reads it: a token limited to environments sees only its
environments' apps, and none of the kiln-wide series; a token for every environment (a
scraper's) gets kiln's exposition unchanged."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from kiln.drivers.base import InstanceStats
from kiln.metrics import InstanceSample, KilnMetrics, Snapshot, exposition_for
from kiln.model import (
    AppKey,
    Event,
    EventKind,
    HealthStatus,
    Instance,
    InstanceStatus,
    ReleaseTraffic,
)

from .conftest import asgi_client
from .fake_service import FakeService
from .test_access import bearer, new_token

STAGING_WEB = AppKey("staging", "web")
PRODUCTION_PAY = AppKey("production", "payments")
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

Samples = set[tuple[str, frozenset[tuple[str, str]], float]]


def kiln_exposition(tmp_path: Path) -> bytes:
    """What kiln renders with one app in staging and one in production: instances, traffic,
    a restart, drift, events, API latency, NGINX reloads and the host."""
    metrics = KilnMetrics(disk_path=tmp_path)
    started = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)
    samples = [
        InstanceSample(
            instance=Instance(
                id=f"r1-{key.app}",
                key=key,
                release=1,
                container_id=f"c-{key.app}",
                status=InstanceStatus.RUNNING,
                started_at=started,
            ),
            health=HealthStatus(ready=True, checked=True),
            checks=(5, 1),
            stats=InstanceStats(cpu_seconds=2.5, memory_bytes=32 << 20),
        )
        for key in (STAGING_WEB, PRODUCTION_PAY)
    ]
    traffic = {
        key: {1: ReleaseTraffic(requests=n, errors=1, latency_buckets=((25.0, n - 1), (250.0, n)))}
        for key, n in ((STAGING_WEB, 10), (PRODUCTION_PAY, 900))
    }
    for key in (STAGING_WEB, PRODUCTION_PAY):
        metrics.on_event(
            Event(
                id=1,
                at=started,
                key=key,
                kind=EventKind.INSTANCE_EXITED,
                reason="out of memory",
                release=1,
            )
        )
    metrics.rollout_finished(strategy="canary", result="failed", seconds=30.0)
    metrics.nginx_reloads.labels("ok").inc()
    metrics.api_requests.labels("/v1/apps/{env}/{app}", "GET", "200").observe(0.01)
    return metrics.render(Snapshot(instances=samples, traffic=traffic, stats_age=1.0))


def samples_of(text: bytes) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items()), sample.value)
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }


def promtool_check(text: bytes) -> None:
    check = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text.decode(), capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.fixture
def full(service: FakeService, tmp_path: Path) -> bytes:
    service.metrics_text = kiln_exposition(tmp_path)
    return service.metrics_text


async def scrape(app: FastAPI, token: str) -> httpx.Response:
    async with asgi_client(app, bearer(token)) as scraper:
        answer = await scraper.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return answer


async def test_a_staging_token_reads_only_staging_apps_series(
    app: FastAPI, client: httpx.AsyncClient, full: bytes
) -> None:
    token = await new_token(client, "staging-team", "viewer", ["staging"])
    text = (await scrape(app, token)).content
    promtool_check(text)
    seen = samples_of(text)
    # Exactly the series of staging's apps, with their values, as kiln rendered them.
    assert seen == {s for s in samples_of(full) if ("env", "staging") in s[1]}
    names = {name for name, _, _ in seen}
    assert {
        "kiln_instance_cpu_seconds_total",
        "kiln_instance_memory_bytes",
        "kiln_instance_ready",
        "kiln_instances",
        "kiln_app_requests_total",
        "kiln_app_request_duration_seconds_bucket",
        "kiln_restarts_total",
    } <= names
    # Nothing of production: not its app's name, not its traffic.
    assert b"production" not in text and b"payments" not in text
    # Nothing kiln-wide: counts over every environment, the API, NGINX, the host.
    for kiln_wide in (
        b"kiln_events_total",
        b"kiln_rollouts_total",
        b"kiln_api_request_duration_seconds",
        b"kiln_nginx_reloads_total",
        b"kiln_host_",
        b"kiln_event_loop_lag_seconds",
    ):
        assert kiln_wide not in text


async def test_a_token_for_every_environment_reads_everything_unchanged(
    app: FastAPI, client: httpx.AsyncClient, full: bytes
) -> None:
    scraper = await new_token(client, "prometheus", "viewer")
    for token in (scraper, "test-token-for-the-api"):  # a viewer of all, the home's admin
        text = (await scrape(app, token)).content
        assert text == full
    assert b'env="production"' in full and b"kiln_host_cpus" in full


async def test_a_token_for_two_environments_reads_both_and_still_nothing_kiln_wide(
    app: FastAPI, client: httpx.AsyncClient, full: bytes
) -> None:
    token = await new_token(client, "release-team", "deployer", ["staging", "production"])
    seen = samples_of((await scrape(app, token)).content)
    assert {dict(labels)["env"] for _, labels, _ in seen} == {"staging", "production"}
    assert seen == {s for s in samples_of(full) if any(k == "env" and v for k, v in s[1])}


async def test_a_token_for_an_environment_without_apps_reads_an_empty_exposition(
    app: FastAPI, client: httpx.AsyncClient, full: bytes
) -> None:
    token = await new_token(client, "dev-team", "viewer", ["dev"])
    assert (await scrape(app, token)).content == b""


def test_narrowing_keeps_kilns_exposition_byte_for_byte_where_it_keeps_a_family(
    tmp_path: Path,
) -> None:
    full = kiln_exposition(tmp_path)
    both = exposition_for(full, frozenset({"staging", "production"}))
    # Every line of the narrowed text is a line of kiln's own (HELP, TYPE, samples alike).
    assert set(both.splitlines()) <= set(full.splitlines())
    assert exposition_for(full, frozenset()) is full
