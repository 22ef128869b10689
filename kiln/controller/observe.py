"""Observation: turn what the driver, the health monitor and the router report into one
``ObservedApp`` for the planner, and keep the little memory the planner needs between rounds
(which instances are retiring and since when, crash history, what the router holds)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from kiln.model import (
    AppKey,
    CrashHistory,
    HealthStatus,
    Instance,
    InstanceStatus,
    ObservedApp,
    ObservedInstance,
    Peer,
    ReleaseTraffic,
    RouteEntry,
    TrafficPolicy,
)
from kiln.planning import describe_exit, forgive, record_crash

# Exits this close together are one incident (the engine restarted, the host ran out of
# memory), not a crash loop: they count once for backoff.
_SAME_INCIDENT = timedelta(seconds=1)


@dataclass
class AppMemory:
    """What the controller remembers about one app between reconciles (in memory only).

    Losing it (a kiln restart) is safe: the router's peer list is read back from NGINX, and
    retiring instances are simply re-planned.
    """

    routed: frozenset[Peer] = frozenset()
    policy: TrafficPolicy | None = None  # the traffic policy as last pushed to the router
    routes: tuple[RouteEntry, ...] | None = None  # the app's routes as the last round planned
    # Analysis: the router's counters at the start of the current window.
    window_start: dict[int, ReleaseTraffic] | None = None
    window_started_at: datetime | None = None
    traffic: dict[int, ReleaseTraffic] | None = None  # the counters the last round read
    retiring_since: dict[str, datetime] = field(default_factory=dict)
    crashes: CrashHistory = field(default_factory=CrashHistory)
    counted_exits: set[str] = field(default_factory=set)  # instance ids already counted
    stopping: set[str] = field(default_factory=set)  # kiln asked these to stop: not a crash
    backoff_reported: int = 0  # the crash count whose backoff was last announced as an event


class Observer:
    def __init__(self) -> None:
        self.memory: defaultdict[AppKey, AppMemory] = defaultdict(AppMemory)

    def observe(
        self,
        key: AppKey,
        instances: Iterable[Instance],
        health: Callable[[str], HealthStatus],
        *,
        now: datetime,
        in_flight: dict[str, int] | None = None,
        traffic: dict[int, ReleaseTraffic] | None = None,
        drifted: Mapping[str, str] | None = None,
    ) -> tuple[ObservedApp, list[Instance]]:
        """``in_flight``: requests per instance as the router counts them (None: unknown);
        ``traffic``: the router's cumulative counters per release (None: unknown)."""
        """The planner's view of ``key``, and the instances that crashed since last time."""
        memory = self.memory[key]
        crashed: list[Instance] = []
        observed: list[ObservedInstance] = []
        routed_ids = {p.instance_id for p in memory.routed}
        present = set()
        for instance in instances:
            present.add(instance.id)
            status = health(instance.id)
            unplanned_exit = (
                instance.status is InstanceStatus.EXITED
                and instance.id not in memory.stopping
                and instance.id not in memory.retiring_since
            )
            failed_liveness = instance.running and not status.live
            if (unplanned_exit or failed_liveness) and instance.id not in memory.counted_exits:
                memory.counted_exits.add(instance.id)
                crashed.append(instance)
                at = instance.finished_at or now
                last = memory.crashes.last_at
                if last is None or abs(at - last) > _SAME_INCIDENT:
                    memory.crashes = record_crash(
                        memory.crashes,
                        at=at,
                        reason=(
                            f"failed its liveness check ({status.last_error or 'unhealthy'})"
                            if instance.running
                            else describe_exit(instance)
                        ),
                        release=instance.release,
                        started_at=instance.started_at,
                    )
            if status.ready and instance.running:
                memory.crashes = forgive(memory.crashes, ready_since=status.ready_since, now=now)
            observed.append(
                ObservedInstance(
                    instance=instance,
                    health=status,
                    in_router=instance.id in routed_ids,
                    retiring_since=memory.retiring_since.get(instance.id),
                    in_flight=None if in_flight is None else in_flight.get(instance.id, 0),
                    drift=(drifted or {}).get(instance.id),
                )
            )
        # Forget instances that are gone for good.
        for gone in set(memory.retiring_since) - present:
            del memory.retiring_since[gone]
        memory.counted_exits &= present
        memory.stopping &= present
        memory.traffic = traffic
        if traffic is not None and memory.window_started_at is None:
            memory.window_start, memory.window_started_at = dict(traffic), now
        return (
            ObservedApp(
                instances=tuple(sorted(observed, key=lambda o: o.id)),
                routed=memory.routed,
                policy=memory.policy,
                crashes=memory.crashes,
                traffic=traffic,
                window_start=memory.window_start,
                window_started_at=memory.window_started_at,
            ),
            crashed,
        )
