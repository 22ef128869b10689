"""``FakeHealth``: a stand-in for ``HealthMonitor`` whose verdicts the test decides (a fake)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kiln.model import HealthStatus


class FakeHealth:
    """Instances of releases in ``healthy_releases`` turn ready as soon as they are tracked;
    others never do. ``fail_liveness(id)`` makes one unhealthy."""

    def __init__(self) -> None:
        self.on_change: Callable[[str], None] = lambda _id: None
        self.healthy_releases: set[int] = set()
        self.statuses: dict[str, HealthStatus] = {}
        self.release_of: dict[str, int] = {}
        self.quiet: dict[str, bool] = {}  # what track and set_quiet were told, by instance

    def bind(self, on_change: Callable[[str], None]) -> None:
        self.on_change = on_change

    def track(self, instance_id: str, **kwargs: Any) -> None:
        if instance_id in self.statuses:
            return
        release = int(instance_id.split("-")[0][1:])
        self.release_of[instance_id] = release
        self.quiet[instance_id] = kwargs.get("quiet", False)
        ready = kwargs.get("assume_ready", False) or release in self.healthy_releases
        self.statuses[instance_id] = HealthStatus(
            ready=ready,
            checked=True,
            ready_since=datetime.now(UTC) if ready else None,
            last_error=None if ready else "GET /healthz → 500",
        )
        if ready:
            self.on_change(instance_id)

    def untrack(self, instance_id: str) -> None:
        self.statuses.pop(instance_id, None)
        self.quiet.pop(instance_id, None)

    def set_quiet(self, instance_id: str, quiet: bool) -> None:
        if instance_id in self.statuses:
            self.quiet[instance_id] = quiet

    def tracked_ids(self) -> frozenset[str]:
        return frozenset(self.statuses)

    def check_counts(self, instance_id: str) -> tuple[int, int]:
        status = self.statuses.get(instance_id)
        if status is None:
            return (0, 0)
        return (1, 0) if status.ready else (0, 1)

    def status(self, instance_id: str) -> HealthStatus:
        return self.statuses.get(instance_id, HealthStatus())

    def fail_liveness(self, instance_id: str) -> None:
        self.statuses[instance_id] = HealthStatus(
            ready=False, live=False, checked=True, last_error="GET /healthz → 500"
        )
        self.on_change(instance_id)

    async def close(self) -> None:
        self.statuses.clear()
