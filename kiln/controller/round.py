"""The reconcile round of one app: ``observe → plan → act``.

    desired   store: app record, target / stable release, active rollout
    observe   the engine's list + NGINX's counters, read once for every round that asks at
              the same time (shared.py), + health statuses + the observer's memory
    plan      kiln.planning.plan (pure)
    act       Executor (router first, then driver, then store)

Idempotent: a failed action is planned again by the next round. The round also keeps the
health monitor probing exactly the running instances of the app.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from kiln.controller.drift import (
    drift_records_of,
    forget_gone_drift,
    remember_started,
    report_removed,
    report_strangers,
)
from kiln.controller.executor import Executor
from kiln.controller.routes import sync_routes
from kiln.controller.runtime import ControlPlane
from kiln.errors import KilnError
from kiln.model import (
    AppKey,
    EventKind,
    HealthStatus,
    Instance,
    ReleaseTraffic,
    RemoveInstance,
    Severity,
    StartInstance,
    StopInstance,
)
from kiln.planning import DesiredApp, Plan, plan

log = logging.getLogger("kiln.engine")


class ReconcileRound:
    def __init__(self, plane: ControlPlane, executor: Executor) -> None:
        self._plane = plane
        self._executor = executor

    async def sync(self, key: AppKey) -> datetime | None:
        """One round for ``key``; returns when the plan wants to look again (``None``: at
        the next wake or resync)."""
        plane = self._plane
        now = plane.clock()
        log.debug("reconcile %s", key)
        desired = await desired_app(plane, key)
        drift_records = drift_records_of(plane, key)  # before the listing: see forget_gone_drift
        listed = await plane.reads.instances_of(key)
        # adoptable, health_of and track_instance read releases from the cache, on the loop.
        await plane.load_releases(listed)
        instances = adoptable(plane, key, listed)
        report_missing(plane, key, plane.last_instances.get(key), instances)
        await report_strangers(plane, key, instances)
        forget_gone_drift(plane, key, drift_records, listed)
        plane.last_instances[key] = instances
        if plane.logs is not None:
            for instance in instances:
                plane.logs.collect(instance)
        running = {i.id for i in instances if i.running}
        tracked = plane.health.tracked_ids()
        stopping = plane.observer.memory[key].stopping
        for instance in instances:
            # An instance kiln is stopping has left the health checks for good. It is listed as
            # running until its container stops (a stop behind a start, a slow SIGTERM); checked
            # again, a passing check would count it as ready once more.
            if instance.running and instance.id not in tracked and instance.id not in stopping:
                track_instance(plane, instance)
        # Only this app's: at 100 apps, looking through every probed instance (and comparing
        # its app) was most of an idle round's own time.
        for instance_id in plane.instance_ids_of(key) - running:
            plane.health.untrack(instance_id)
            plane.drop_instance(instance_id)
        memory = plane.observer.memory[key]
        analysing = plane.last_plans.get(key) is not None and plane.last_plans[key].analysing
        observed, crashed = plane.observer.observe(
            key,
            instances,
            _health_of(plane, instances),
            now=now,
            in_flight=await _in_flight(plane, key),
            traffic=await _traffic(plane, key) if analysing or desired.rollout else None,
            drifted=plane.drifted,
        )
        for instance in crashed:
            if instance.running:  # liveness failure: the plan retires and replaces it
                plane.events.record(
                    key,
                    EventKind.INSTANCE_UNHEALTHY,
                    f"{instance.id} of release {instance.release} failed its liveness check "
                    f"({plane.health.status(instance.id).last_error or 'unhealthy'}); "
                    "replacing it",
                    severity=Severity.WARNING,
                    release=instance.release,
                    instance=instance.id,
                )
        result = plan(desired, observed, now)
        if result.actions:
            log.debug("plan %s: %s", key, ", ".join(type(a).__name__ for a in result.actions))
        plane.last_plans[key] = result
        announce_backoff(plane, key, result, observed.crashes.consecutive)
        remember_started(
            plane,
            key,
            {a.spec.id for a in result.actions if isinstance(a, StartInstance)},
            {
                (a.instance_id, a.container_id)
                for a in result.actions
                if isinstance(a, StopInstance | RemoveInstance)
            },
        )
        await self._executor.execute(key, result, memory)
        if result.window_closed:
            memory.window_start, memory.window_started_at = observed.traffic, now
        elif not result.analysing:
            memory.window_start, memory.window_started_at = None, None
        memory.routes = result.routes
        applied = plane.applied_routes
        if applied is None or applied.get(key, ()) != result.routes:
            # Only a change of this app's routes: the table of every app is the resync's and
            # each app's own round's business (so an idle round reads no other app).
            await sync_routes(plane)
        if (
            desired.target is None
            and desired.stopped
            and not instances
            and await plane.store.get_app(key) is None
        ):
            # A destroyed app whose last instance is gone: its peer list goes too.
            await plane.router.forget_peers(key)
            plane.observer.memory.pop(key, None)
            await plane.loops.forget(key)
            return None
        waits = [w.until for w in result.waits if w.until is not None]
        return min(waits) if waits else None


def report_missing(
    plane: ControlPlane, key: AppKey, before: Sequence[Instance] | None, now: Sequence[Instance]
) -> None:
    """A running instance whose container vanished without kiln stopping it was removed by
    hand: drift, reported as such (the plan then starts its replacement)."""
    if before is None:
        return
    memory = plane.observer.memory[key]
    present = {i.id for i in now}
    for gone in before:
        if (
            gone.running
            and gone.id not in present
            and gone.id not in memory.stopping
            and gone.id not in memory.retiring_since
        ):
            report_removed(plane, key, gone.id, gone.container_id)
    known = plane.known_instances.get(key)
    if known is not None:
        # Known while listed: one seen gone goes, and so does one whose start failed (never
        # listed), a round after its start so a late destroy event can still report it.
        last = plane.last_plans.get(key)
        started = {a.spec.id for a in last.actions if isinstance(a, StartInstance)} if last else ()
        known &= present.union(started)


def adoptable(plane: ControlPlane, key: AppKey, instances: Sequence[Instance]) -> list[Instance]:
    """This installation's instances, and legacy ones (made by a kiln from before installation
    ids) only when the store knows their app and release: a legacy container of an unknown app
    or release may belong to another kiln on this engine, so it is reported once and left
    alone, never stopped or removed (invariant 9)."""
    kept: list[Instance] = []
    for instance in instances:
        if not instance.legacy or plane.store.cached_release(key, instance.release) is not None:
            kept.append(instance)
        elif instance.container_id not in plane.reported_foreign:
            plane.reported_foreign.add(instance.container_id)
            plane.events.record(
                key,
                EventKind.INSTANCE_FOREIGN,
                f"legacy container {instance.container_id[:12]} ({instance.id}) has kiln's labels "
                f"for release {instance.release} of {key} but no installation id, and this kiln "
                "knows no such release: it may belong to another kiln on this engine, so it is "
                "left alone (remove it with `docker rm -f` if it is nobody's)",
                severity=Severity.WARNING,
                release=instance.release,
                instance=instance.id,
            )
    return kept


async def desired_app(plane: ControlPlane, key: AppKey) -> DesiredApp:
    """What the store wants of ``key``, read in one transaction (one store-thread call)."""
    state = await plane.store.desired_state(key)
    if state is None:
        return DesiredApp.absent(key)
    app = state.app
    return DesiredApp(
        key=key,
        scale=app.scale,
        stopped=app.stopped,
        target=state.target,
        stable=state.stable,
        rollout=state.rollout,
        warm=state.warm,
        warm_until=app.warm_until,
        held=state.held,
    )


def _health_of(plane: ControlPlane, instances: Sequence[Instance]) -> Callable[[str], HealthStatus]:
    by_id = {i.id: i for i in instances}

    def status(instance_id: str) -> HealthStatus:
        instance = by_id.get(instance_id)
        return plane.health.status(instance_id) if instance is None else plane.health_of(instance)

    return status


async def _in_flight(plane: ControlPlane, key: AppKey) -> dict[str, int] | None:
    """Requests in flight per instance of ``key``; None when the router cannot say (a
    retiring instance then drains for the whole drain time)."""
    try:
        return (await plane.reads.in_flight.get()).get(key, {})
    except KilnError as exc:
        log.debug("in-flight counts of %s unavailable: %s", key, exc.message)
        return None


async def _traffic(plane: ControlPlane, key: AppKey) -> dict[int, ReleaseTraffic] | None:
    try:
        return (await plane.reads.traffic.get()).get(key, {})
    except KilnError as exc:
        log.debug("traffic counters of %s unavailable: %s", key, exc.message)
        return None


def announce_backoff(plane: ControlPlane, key: AppKey, result: Plan, crashes: int) -> None:
    """A crash-loop wait is an event once per crash, so `kiln events` says why nothing starts."""
    memory = plane.observer.memory[key]
    if crashes < memory.backoff_reported:
        memory.backoff_reported = 0
    for wait in result.waits:
        if wait.kind == "backoff" and crashes > memory.backoff_reported:
            memory.backoff_reported = crashes
            plane.events.record(
                key, EventKind.INSTANCE_BACKOFF, wait.reason, severity=Severity.WARNING
            )


def track_instance(plane: ControlPlane, instance: Instance) -> None:
    """Probe ``instance`` with its release's health checks; one the router already holds
    counts as ready until a probe says otherwise (adoption after a restart). Its output is
    kept from its first line. Sync: its release comes from the cache (the round loaded the
    releases of what it listed; a started instance is of a release the round read)."""
    plane.note_instance(instance.id, instance.key)
    if plane.logs is not None:
        plane.logs.collect(instance)
    release = plane.store.cached_release(instance.key, instance.release)
    if release is None:
        return  # an orphan: no probes, it is never ready and will be removed
    health = release.spec.effective_health()
    if health is None:
        return
    address = instance.address
    routed = {p.instance_id for p in plane.observer.memory[instance.key].routed}
    plane.health.track(
        instance.id,
        readiness=health.readiness_probe(),
        liveness=health.liveness_probe(),
        host=address.host if address else None,
        port=address.port if address else None,
        started_at=instance.started_at or plane.clock(),
        exec_fn=_exec_in(plane, instance.container_id),
        assume_ready=instance.id in routed,
        quiet=instance.key in plane.quiet_apps,
    )


def _exec_in(
    plane: ControlPlane, container_id: str
) -> Callable[[Sequence[str], float], Awaitable[int]]:
    driver = plane.driver

    async def run(command: Sequence[str], timeout: float) -> int:
        return await driver.exec(container_id, command, timeout=timeout)

    return run
