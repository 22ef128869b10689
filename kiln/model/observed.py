"""What the controller observed of one app, handed to the pure planner in one piece."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from kiln.model.instance import Instance
from kiln.model.routing import Peer, ReleaseTraffic, TrafficPolicy


@dataclass(frozen=True, kw_only=True)
class HealthStatus:
    """Probe results of one instance, kept by the health monitor.

    ``ready`` flips true after ``healthy_threshold`` readiness passes in a row and false after
    ``unhealthy_threshold`` failures in a row. ``live`` flips false after the liveness probe
    failed ``unhealthy_threshold`` times in a row once the grace period is over.
    """

    ready: bool = False
    live: bool = True
    checked: bool = False  # at least one readiness check finished
    last_error: str | None = None
    ready_since: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class ObservedInstance:
    instance: Instance
    health: HealthStatus
    in_router: bool  # the router's current peer list for the app holds this instance
    # When a plan first chose to retire it. A retiring instance stays retired: it leaves the
    # router, drains, and is stopped; it no longer counts as capacity.
    retiring_since: datetime | None = None
    # Requests the router is sending it right now (None: the router cannot tell). A retiring
    # instance is stopped when this reaches 0, or at the drain timeout.
    in_flight: int | None = None
    # What differs from its release (``drift: replace``): it is replaced like a rolling update
    # replaces an old instance, serving until its replacement is ready. None: as released.
    drift: str | None = None

    @property
    def id(self) -> str:
        return self.instance.id

    @property
    def release(self) -> int:
        return self.instance.release


@dataclass(frozen=True, kw_only=True)
class CrashHistory:
    """Unplanned exits of an app's instances, for crash-loop backoff."""

    consecutive: int = 0
    last_at: datetime | None = None
    last_reason: str | None = None
    last_release: int | None = None


@dataclass(frozen=True, kw_only=True)
class ObservedApp:
    instances: tuple[ObservedInstance, ...]
    routed: frozenset[Peer] = frozenset()  # the app's peer list as last pushed to the router
    policy: TrafficPolicy | None = None  # the traffic policy as last pushed to the router
    crashes: CrashHistory = CrashHistory()
    # Analysis: cumulative counters per release now, and at the start of the current window.
    traffic: dict[int, ReleaseTraffic] | None = None
    window_start: dict[int, ReleaseTraffic] | None = None
    window_started_at: datetime | None = None
