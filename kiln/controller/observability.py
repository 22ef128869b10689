"""Wiring of metrics to the control plane: the event listener behind the counters, the
background sampler of instance CPU and memory, and the snapshot a scrape renders.

    EventBus ─listener─▶ KilnMetrics.on_event (restarts, drift, events by kind)
                      └▶ rollout finished? ─▶ store.list_rollouts ─▶ rollouts, duration
    StatsSampler (every metrics.sample_interval s) ─▶ driver.stats(every known container)
    GET /metrics ─▶ metrics_text: last instances + health + sampler.latest + router.traffic()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from kiln.controller.runtime import ControlPlane
from kiln.errors import KilnError, NotFound
from kiln.metrics import InstanceSample, KilnMetrics, LoopLagSampler, Snapshot, StatsSampler
from kiln.model import AppKey, Event, EventKind

log = logging.getLogger("kiln.metrics")

_FINISHED = {
    EventKind.ROLLOUT_SUCCEEDED: "succeeded",
    EventKind.ROLLOUT_FAILED: "failed",
    EventKind.ROLLOUT_ABORTED: "aborted",
}


def attach_metrics(plane: ControlPlane) -> None:
    section = plane.settings.file.metrics
    if not section.enabled:
        return
    metrics = KilnMetrics(disk_path=plane.settings.home)
    plane.metrics = metrics

    def container_ids() -> list[str]:
        return [
            i.container_id
            for instances in plane.last_instances.values()
            for i in instances
            if i.running
        ]

    plane.sampler = StatsSampler(
        plane.driver,
        container_ids,
        interval=section.sample_interval,
        loop_lag=LoopLagSampler(metrics.event_loop_lag.observe),
    )

    # The rollout's strategy and duration come from the store: read off the loop, in a task
    # (a listener is called in line and must not wait).
    reading = plane.metric_reads

    def on_event(event: Event) -> None:
        metrics.on_event(event)
        result = _FINISHED.get(event.kind)
        if result is not None and event.key is not None:
            task = asyncio.get_running_loop().create_task(
                _rollout_finished(plane, metrics, event.key, event.release, result)
            )
            reading.add(task)
            task.add_done_callback(reading.discard)

    plane.events.add_listener(on_event)


async def _rollout_finished(
    plane: ControlPlane, metrics: KilnMetrics, key: AppKey, release: int | None, result: str
) -> None:
    try:
        rollouts = await plane.store.list_rollouts(key)
    except (NotFound, KilnError):
        rollouts = []
    finished = [r for r in rollouts if r.finished_at is not None and r.to_release == release]
    if not finished:
        metrics.rollout_finished(strategy="unknown", result=result, seconds=None)
        return
    rollout = max(finished, key=lambda r: r.finished_at or r.started_at)
    seconds = (
        (rollout.finished_at - rollout.started_at).total_seconds()
        if rollout.finished_at is not None
        else None
    )
    metrics.rollout_finished(strategy=rollout.strategy.value, result=result, seconds=seconds)


async def metrics_text(plane: ControlPlane) -> bytes:
    # Every event recorded before the scrape is counted: written, fanned out, and the rollout
    # it finished read back.
    with contextlib.suppress(KilnError):  # a store that cannot write: the counts as they are
        await plane.events.flush()
    if plane.metric_reads:
        await asyncio.gather(*plane.metric_reads, return_exceptions=True)
    metrics = plane.metrics
    if metrics is None:
        raise NotFound("metrics are off (settings file: metrics.enabled: false)")
    latest = plane.sampler.latest if plane.sampler is not None else {}
    samples = [
        InstanceSample(
            instance=instance,
            health=plane.health_of(instance),
            checks=plane.health.check_counts(instance.id),
            stats=latest.get(instance.container_id),
        )
        for key in sorted(plane.last_instances)
        for instance in plane.last_instances[key]
    ]
    try:
        traffic = await plane.router.traffic()
        traffic_ok = True
    except KilnError as exc:
        log.debug("router counters unavailable for a scrape: %s", exc)
        traffic, traffic_ok = {}, False
    snapshot = Snapshot(
        instances=samples,
        traffic=traffic,
        traffic_ok=traffic_ok,
        stats_age=plane.sampler.age if plane.sampler is not None else None,
    )
    return metrics.render(snapshot)
