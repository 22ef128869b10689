"""``ControlPlane``: the one object the controller's modules share.

It holds the ports (store, driver, router), the clock, and the running parts every module
reads or wakes: the health monitor, the event bus, the per-app loops, the observer's memory,
and what the last round of each app saw and planned (for the read views). It holds state,
not behaviour: the round, the supervisors, the commands and the reads are functions and
classes over it, each in its own module; ``root.py`` builds it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from kiln.config import Settings
from kiln.controller.events import EventBus
from kiln.controller.groupcommit import GroupCommit
from kiln.controller.logkeeper import LogKeeper
from kiln.controller.memory import MemoryTrimmer
from kiln.controller.observe import Observer
from kiln.controller.reconciler import AppLoops
from kiln.controller.shared import SharedReads
from kiln.controller.webhooks import Webhooks
from kiln.drivers.base import Driver
from kiln.errors import NotFound
from kiln.health.monitor import HealthMonitor
from kiln.metrics import KilnMetrics, StatsSampler
from kiln.model import AppKey, AppRecord, HealthStatus, Instance, Release, RouteEntry
from kiln.planning import Plan
from kiln.registry.base import Registry
from kiln.router.base import Router
from kiln.store.aio import AsyncStore
from kiln.store.vault import SecretVault


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(eq=False, kw_only=True)
class ControlPlane:
    settings: Settings
    store: AsyncStore  # every call runs on the store's own thread (kiln/store/aio.py)
    driver: Driver
    router: Router
    clock: Callable[[], datetime]
    health: HealthMonitor
    events: EventBus
    loops: AppLoops
    observer: Observer
    vault: SecretVault  # sealed secrets; plaintext only on the way to the driver
    # The engine list and NGINX's counters, read once for every round that wants them at once.
    reads: SharedReads
    # Which app each probed instance belongs to, so a health flip wakes the right loop.
    instance_keys: dict[str, AppKey] = field(default_factory=dict)
    # The same by app: a round finds its own app's instances without looking at every app's.
    app_instance_ids: dict[AppKey, set[str]] = field(default_factory=dict)
    # Apps NGINX counted no request for lately: their instances are checked every idle_interval
    # (quiet.py decides; track_instance starts a new instance of one quiet).
    quiet_apps: set[AppKey] = field(default_factory=set)
    # What each app's last round planned and saw: the read views report from these.
    last_plans: dict[AppKey, Plan] = field(default_factory=dict)
    last_instances: dict[AppKey, list[Instance]] = field(default_factory=dict)
    # Route table applies, one at a time and shared by every round, command, the start and the
    # router supervisor that ask at once (routes.py: the result maps refused apps to why).
    route_applies: GroupCommit[bool, dict[AppKey, str]] = field(
        default_factory=lambda: GroupCommit(name="route table")
    )
    # Legacy containers (no installation id) of unknown apps already reported, by container id.
    reported_foreign: set[str] = field(default_factory=set)
    # Other kiln installations seen on the engine (each reported once).
    other_installations: set[str] = field(default_factory=set)
    # Each app's routes as NGINX holds them (None: not known yet, the next sync applies).
    applied_routes: dict[AppKey, tuple[RouteEntry, ...]] | None = None
    # The artifact repository releases pin their images to (None: tests that run without one,
    # where releases pin the engine-local image id as kiln did before it had a registry).
    registry: Registry | None = None
    # Outgoing webhooks on chosen event kinds (settings file ``events.webhooks``).
    webhooks: Webhooks | None = None
    # Prometheus metrics and the background CPU/memory sampler (None: metrics are off).
    metrics: KilnMetrics | None = None
    sampler: StatsSampler | None = None
    # Instance output kept past the instances' life, NGINX's logs rotated.
    logs: LogKeeper | None = None
    # Instances that drifted from their release under ``drift: replace`` → what drifted. The
    # drift checker fills it; the round hands it to the planner, which replaces them.
    drifted: dict[str, str] = field(default_factory=dict)
    # Those of them being replaced → (app, release, what drifted): a ``drift.corrected`` event
    # each once it is gone (the round that sees it gone, or a check that lists no more of it).
    drift_replacing: dict[str, tuple[AppKey, int, str]] = field(default_factory=dict)
    # Instance ids each app's rounds know: adopted at its first round, or started by a plan.
    # Another one appearing was started outside kiln.
    known_instances: dict[AppKey, set[str]] = field(default_factory=dict)
    # What drift was reported for each container (an event once per difference).
    drift_reported: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Containers a plan stopped or removed (by container id): their destroy is no drift.
    removed_by_kiln: set[str] = field(default_factory=set)
    # The drift records above by app, as (instance id, container id): an app's round
    # drops those of the containers it sees gone once it decided what to report of them
    # (drift.forget_gone_drift), and forget_app the rest, so they hold only what exists.
    drift_records: dict[AppKey, set[tuple[str, str]]] = field(default_factory=dict)
    # Images being pinned to the registry (pushed, when it lacks them) by (repository, tag,
    # engine image id) → the one task doing it: deploys of one image at once share its push.
    image_pushes: dict[tuple[str, str, str], asyncio.Task[tuple[str, bool]]] = field(
        default_factory=dict
    )
    # Freed memory back to the system after apps are forgotten (None: tests without it).
    memory: MemoryTrimmer | None = None
    # Metric updates that read the store after an event (rollout durations): a scrape waits
    # for them, so it reports every event recorded before it.
    metric_reads: set[asyncio.Task[None]] = field(default_factory=set)

    def wake_app_of(self, instance_id: str) -> None:
        """A health flip of ``instance_id``: look at its app again."""
        key = self.instance_keys.get(instance_id)
        if key is not None:
            self.loops.wake(key)

    def note_instance(self, instance_id: str, key: AppKey) -> None:
        """``instance_id`` is ``key``'s (probed, or started and about to be)."""
        self.instance_keys[instance_id] = key
        self.app_instance_ids.setdefault(key, set()).add(instance_id)

    def drop_instance(self, instance_id: str) -> None:
        key = self.instance_keys.pop(instance_id, None)
        if key is None:
            return
        ids = self.app_instance_ids.get(key, set())
        ids.discard(instance_id)
        if not ids:
            self.app_instance_ids.pop(key, None)

    def instance_ids_of(self, key: AppKey) -> frozenset[str]:
        return frozenset(self.app_instance_ids.get(key, ()))

    def forget_app(self, key: AppKey) -> None:
        """Everything kept in memory for ``key``: its loop ended because the app is destroyed
        and its last instance is gone (AppLoops calls this as it forgets the loop). Its drift
        records go too: with ``known_instances`` gone, a late destroy event of one of its
        containers reports nothing, so nothing is left to tell apart."""
        self.drop_drift_records(key, self.drift_records.get(key, set()))
        self.last_plans.pop(key, None)
        self.last_instances.pop(key, None)
        self.quiet_apps.discard(key)
        self.known_instances.pop(key, None)
        self.observer.memory.pop(key, None)
        for instance_id in self.instance_ids_of(key):
            self.forget_instance(key, instance_id)
        if self.logs is not None:
            self.logs.forget_app(key)
        if self.metrics is not None:
            self.metrics.forget_app(key)
        if self.memory is not None:
            self.memory.soon()

    def forget_instance(
        self, key: AppKey, instance_id: str, container_id: str | None = None
    ) -> None:
        """The engine removed ``instance_id``'s container: no more probes, no more wakes. The
        round untracks what it no longer lists, but not an instance the executor untracked
        when it stopped it. ``container_id``: the one removed; an instance the last round saw
        in another container (a left-over one of its name removed to start it) is kept."""
        if container_id is not None and any(
            i.id == instance_id and i.container_id != container_id
            for i in self.last_instances.get(key, ())
        ):
            return
        if self.instance_keys.get(instance_id) == key:
            self.drop_instance(instance_id)
            self.health.untrack(instance_id)

    def note_drift_record(self, key: AppKey, instance_id: str, container_id: str) -> None:
        """A drift record (``drifted``, ``drift_reported``, ``removed_by_kiln``...) was made for
        ``container_id`` of ``key``'s ``instance_id``."""
        self.drift_records.setdefault(key, set()).add((instance_id, container_id))

    def drop_drift_records(
        self,
        key: AppKey,
        records: Iterable[tuple[str, str]],
        *,
        keep_instances: Collection[str] = (),
    ) -> None:
        """Forget what was recorded for drift of these gone containers of ``key``; an instance
        in ``keep_instances`` still runs in another container and keeps its ``drifted``."""
        kept = self.drift_records.get(key, set())
        for instance_id, container_id in list(records):
            self.drift_reported.pop(container_id, None)
            self.removed_by_kiln.discard(container_id)
            if instance_id not in keep_instances:
                self.drifted.pop(instance_id, None)
                self.drift_replacing.pop(instance_id, None)
            kept.discard((instance_id, container_id))
        if not kept:
            self.drift_records.pop(key, None)

    async def require_app(self, key: AppKey) -> AppRecord:
        app = await self.store.get_app(key)
        if app is None:
            raise NotFound(f"no app {key}; `kiln status` lists the apps")
        return app

    def health_of(self, instance: Instance) -> HealthStatus:
        """Probe results; "ready once running" when its release has no probe at all (a worker
        without a port or a command check: there is nothing to ask it). Sync, on the loop: it
        reads the release cache only (every round loads its instances' releases first)."""
        if instance.running:
            release = self.store.cached_release(instance.key, instance.release)
            if release is not None and release.spec.effective_health() is None:
                return HealthStatus(ready=True, checked=True, ready_since=instance.started_at)
        return self.health.status(instance.id)

    async def release_or_none(self, key: AppKey, number: int) -> Release | None:
        return await self.store.release_or_none(key, number)

    async def load_releases(self, instances: Iterable[Instance]) -> None:
        """Read the releases of ``instances`` into the cache (once each: releases never change),
        so ``health_of`` and the other sync helpers on the loop find them without I/O."""
        for key, number in {(i.key, i.release) for i in instances}:
            if self.store.cached_release(key, number) is None:
                await self.store.release_or_none(key, number)
