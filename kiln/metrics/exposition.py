"""``KilnMetrics``: kiln's Prometheus metrics in one private registry (no globals), rendered in
the text format for ``GET /metrics``.

    events ──on_event──▶ counters (restarts by reason, drift, events by kind)
    controller ──▶ rollout_finished, reconcile_round, nginx_reload, api_request
    scrape ──▶ Snapshot (instances + health + the sampler's last stats + router traffic)
           ──▶ collectors ──▶ text

Three sources, three costs: counters and histograms are updated where things happen; per
instance CPU and memory come from the background ``StatsSampler`` (never one engine call per
instance per scrape); per release requests, 5xx and latency come from the router's counters —
the numbers the canary analysis judges, so a dashboard and a verdict never disagree.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from kiln.drivers.base import InstanceStats
from kiln.model import AppKey, Event, EventKind, HealthStatus, Instance, ReleaseTraffic

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_ROUND_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_ROLLOUT_BUCKETS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
# Event-loop lag: fine at the low end (a healthy loop wakes within a millisecond or two).
_LAG_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
_API_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


@dataclass(frozen=True, kw_only=True)
class InstanceSample:
    instance: Instance
    health: HealthStatus
    checks: tuple[int, int]  # probes passed, failed
    stats: InstanceStats | None  # None: no sample yet (or not running)


@dataclass(kw_only=True)
class Snapshot:
    """What a scrape reports beyond the counters; the controller fills it right before."""

    instances: Sequence[InstanceSample] = ()
    traffic: Mapping[AppKey, Mapping[int, ReleaseTraffic]] = field(default_factory=dict)
    traffic_ok: bool = True
    stats_age: float | None = None  # seconds since the sampler's last round


RESTART_REASONS = ("oom", "crashed", "liveness")  # every value restart_reason gives


def restart_reason(event: Event) -> str | None:
    """Why an instance was replaced, as a label: ``oom``, ``crashed``, ``liveness``."""
    if event.kind is EventKind.INSTANCE_UNHEALTHY:
        return "liveness"
    if event.kind is EventKind.INSTANCE_EXITED:
        text = event.reason.lower()
        return "oom" if "oom" in text or "out of memory" in text else "crashed"
    return None


class KilnMetrics:
    def __init__(self, *, disk_path: Path | None = None, host: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.rollouts = Counter(
            "kiln_rollouts",
            "Rollouts that finished, by strategy and result (succeeded, failed, aborted).",
            ["strategy", "result"],
            registry=r,
        )
        self.rollout_duration = Histogram(
            "kiln_rollout_duration_seconds",
            "From a rollout's start to its end, by strategy.",
            ["strategy"],
            buckets=_ROLLOUT_BUCKETS,
            registry=r,
        )
        self.reconcile_round = Histogram(
            "kiln_reconcile_round_duration_seconds",
            "One observe, plan, act round of one app.",
            buckets=_ROUND_BUCKETS,
            registry=r,
        )
        self.restarts = Counter(
            "kiln_restarts",
            "Instances replaced because they crashed, ran out of memory or failed liveness.",
            ["env", "app", "reason"],
            registry=r,
        )
        self.drift = Counter(
            "kiln_drift_events",
            "Drift found (and corrected) between what kiln put in the world and what runs.",
            ["env", "app", "kind"],
            registry=r,
        )
        self.events = Counter("kiln_events", "Events recorded, by kind.", ["kind"], registry=r)
        self.nginx_reloads = Counter(
            "kiln_nginx_reloads",
            "NGINX configuration reloads, by result (ok, rejected).",
            ["result"],
            registry=r,
        )
        self.api_requests = Histogram(
            "kiln_api_request_duration_seconds",
            "API requests by route template, method and status.",
            ["route", "method", "status"],
            buckets=_API_BUCKETS,
            registry=r,
        )
        self.scrape = Histogram(
            "kiln_metrics_scrape_duration_seconds",
            "Time to build one /metrics answer.",
            buckets=_ROUND_BUCKETS,
            registry=r,
        )
        self.event_loop_lag = Histogram(
            "kiln_event_loop_lag_seconds",
            "How late the server's event loop woke a task from a short sleep (LoopLagSampler):"
            " the time anything ready to run waited for the loop.",
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.snapshot = Snapshot()
        r.register(_InstanceCollector(self))
        r.register(_TrafficCollector(self))
        if host:
            r.register(_HostCollector(disk_path or Path("/")))

    # --- updates -----------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        self.events.labels(event.kind.value).inc()
        env, app = (event.key.environment, event.key.app) if event.key else ("", "")
        reason = restart_reason(event)
        if reason is not None:
            self.restarts.labels(env, app, reason).inc()
        if event.kind.category == "drift":
            self.drift.labels(env, app, event.kind.value).inc()

    def forget_app(self, key: AppKey) -> None:
        """A destroyed app: its labelled series end (its instances' series end with the next
        scrape's snapshot), so label sets do not pile up with every app ever deployed."""
        env, app = key.environment, key.app
        for reason in RESTART_REASONS:
            self.restarts.remove(env, app, reason)
        for kind in EventKind:
            if kind.category == "drift":
                self.drift.remove(env, app, kind.value)

    def rollout_finished(self, *, strategy: str, result: str, seconds: float | None) -> None:
        self.rollouts.labels(strategy, result).inc()
        if seconds is not None and seconds >= 0:
            self.rollout_duration.labels(strategy).observe(seconds)

    def render(self, snapshot: Snapshot) -> bytes:
        started = time.perf_counter()
        self.snapshot = snapshot
        text = generate_latest(self.registry)
        self.scrape.observe(time.perf_counter() - started)
        return text


class _InstanceCollector(Collector):
    def __init__(self, metrics: KilnMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        samples = self._metrics.snapshot.instances
        labels = ["env", "app", "release", "instance"]
        cpu = CounterMetricFamily(
            "kiln_instance_cpu_seconds",
            "CPU time used by the instance (its cgroup).",
            labels=labels,
        )
        memory = GaugeMetricFamily(
            "kiln_instance_memory_bytes",
            "Memory in use by the instance, droppable page cache excluded.",
            labels=labels,
        )
        ready = GaugeMetricFamily(
            "kiln_instance_ready", "1 when the instance passes readiness.", labels=labels
        )
        live = GaugeMetricFamily(
            "kiln_instance_live", "0 once the instance failed liveness.", labels=labels
        )
        up_since = GaugeMetricFamily(
            "kiln_instance_start_time_seconds",
            "When the instance started (Unix time).",
            labels=labels,
        )
        checks = CounterMetricFamily(
            "kiln_instance_health_checks",
            "Health probes run on the instance, by result.",
            labels=[*labels, "result"],
        )
        states: dict[tuple[str, str, str, str], int] = {}
        for sample in samples:
            inst = sample.instance
            values = [inst.key.environment, inst.key.app, str(inst.release), inst.id]
            state = inst.status.value
            ready_label = "ready" if sample.health.ready and inst.running else "not_ready"
            group = (inst.key.environment, inst.key.app, state, ready_label)
            states[group] = states.get(group, 0) + 1
            if not inst.running:
                continue
            ready.add_metric(values, 1.0 if sample.health.ready else 0.0)
            live.add_metric(values, 1.0 if sample.health.live else 0.0)
            passed, failed = sample.checks
            checks.add_metric([*values, "pass"], passed)
            checks.add_metric([*values, "fail"], failed)
            if inst.started_at is not None:
                up_since.add_metric(values, inst.started_at.timestamp())
            if sample.stats is not None:
                cpu.add_metric(values, sample.stats.cpu_seconds)
                memory.add_metric(values, sample.stats.memory_bytes)
        by_state = GaugeMetricFamily(
            "kiln_instances",
            "Instances by app, container state and readiness.",
            labels=["env", "app", "state", "readiness"],
        )
        for group, count in sorted(states.items()):
            by_state.add_metric(list(group), count)
        yield from (cpu, memory, ready, live, up_since, checks, by_state)
        age = self._metrics.snapshot.stats_age
        if age is not None:
            yield GaugeMetricFamily(
                "kiln_instance_stats_age_seconds",
                "Seconds since the CPU and memory sample was taken.",
                value=age,
            )


class _TrafficCollector(Collector):
    def __init__(self, metrics: KilnMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        snapshot = self._metrics.snapshot
        labels = ["env", "app", "release"]
        requests = CounterMetricFamily(
            "kiln_app_requests",
            "Requests (tries) NGINX sent to the release; what the canary analysis judges.",
            labels=labels,
        )
        errors = CounterMetricFamily(
            "kiln_app_errors",
            "Requests of the release answered with a 5xx or failed.",
            labels=labels,
        )
        latency = HistogramMetricFamily(
            "kiln_app_request_duration_seconds",
            "Request time through NGINX to the release (upstream response time).",
            labels=labels,
        )
        for key, releases in sorted(snapshot.traffic.items(), key=lambda kv: str(kv[0])):
            for release, traffic in sorted(releases.items()):
                values = [key.environment, key.app, str(release)]
                requests.add_metric(values, traffic.requests)
                errors.add_metric(values, traffic.errors)
                if traffic.latency_buckets:
                    buckets = _buckets(traffic)
                    latency.add_metric(values, buckets, sum_value=None)
                    # The router counts requests per bucket, not their total time: a _count
                    # without a _sum (rates and quantiles work; averages do not).
                    latency.samples.append(
                        Sample(
                            "kiln_app_request_duration_seconds_count",
                            dict(zip(labels, values, strict=True)),
                            buckets[-1][1],
                        )
                    )
        yield from (requests, errors, latency)
        yield GaugeMetricFamily(
            "kiln_router_up",
            "1 when the router's counters could be read for this scrape.",
            value=1.0 if snapshot.traffic_ok else 0.0,
        )


def _buckets(traffic: ReleaseTraffic) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for bound_ms, count in traffic.latency_buckets:
        le = "+Inf" if math.isinf(bound_ms) else repr(bound_ms / 1000.0)
        out.append((le, float(count)))
    if not out or out[-1][0] != "+Inf":
        out.append(("+Inf", float(traffic.requests)))
    return out


class _HostCollector(Collector):
    """The machine kiln runs on: cheap reads of /proc at scrape time."""

    def __init__(self, disk_path: Path) -> None:
        self._disk_path = disk_path

    def collect(self) -> Iterator[Metric]:
        cpu = CounterMetricFamily(
            "kiln_host_cpu_seconds", "CPU time of the host by mode, all CPUs.", labels=["mode"]
        )
        times = psutil.cpu_times()
        for mode in ("user", "system", "idle", "iowait", "nice", "irq", "softirq", "steal"):
            value = getattr(times, mode, None)
            if value is not None:
                cpu.add_metric([mode], value)
        yield cpu
        yield GaugeMetricFamily(
            "kiln_host_cpus", "CPUs of the host.", value=psutil.cpu_count() or 0
        )
        load1, load5, load15 = psutil.getloadavg()
        load = GaugeMetricFamily("kiln_host_load", "Load average.", labels=["window"])
        for window, value in (("1m", load1), ("5m", load5), ("15m", load15)):
            load.add_metric([window], value)
        yield load
        memory = psutil.virtual_memory()
        yield GaugeMetricFamily(
            "kiln_host_memory_total_bytes", "Memory of the host.", value=memory.total
        )
        yield GaugeMetricFamily(
            "kiln_host_memory_available_bytes",
            "Memory available to new work without swapping.",
            value=memory.available,
        )
        try:
            disk = psutil.disk_usage(str(self._disk_path))
        except OSError:
            return
        labels = ["path"]
        for name, help_text, value in (
            ("kiln_host_disk_total_bytes", "Size of the disk holding KILN_HOME.", disk.total),
            ("kiln_host_disk_used_bytes", "Used space on the disk holding KILN_HOME.", disk.used),
            ("kiln_host_disk_free_bytes", "Free space on the disk holding KILN_HOME.", disk.free),
        ):
            family = GaugeMetricFamily(name, help_text, labels=labels)
            family.add_metric([str(self._disk_path)], value)
            yield family
