"""What the dashboard's templates get: the Service's views, gathered and put in order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kiln.api.ui.series import TrafficHistory, UsageHistory
from kiln.controller.service import Service
from kiln.controller.views import AppStatus, InstanceView
from kiln.model import AppKey, EventKind

EVENTS_SHOWN = 50
# Events that mean an instance was replaced against the plan: what "restarts" counts.
RESTART_KINDS = frozenset({EventKind.INSTANCE_EXITED, EventKind.INSTANCE_UNHEALTHY})


@dataclass(frozen=True)
class AppRow:
    status: AppStatus
    running: int
    ready: int
    rate: float | None


def overview_context(statuses: list[AppStatus], history: TrafficHistory) -> dict[str, Any]:
    environments: dict[str, list[AppRow]] = {}
    for status in sorted(statuses, key=lambda s: (s.key.environment, s.key.app)):
        running = [i for i in status.instances if i.status == "running"]
        environments.setdefault(status.key.environment, []).append(
            AppRow(
                status=status,
                running=len(running),
                ready=sum(1 for i in running if i.ready),
                rate=history.rate(status.key),
            )
        )
    return {"environments": environments}


def health_of(instance: InstanceView) -> str:
    if instance.draining:
        return "draining"
    if instance.status != "running":
        return instance.status
    if instance.ready and instance.in_router:
        return "ready"
    return "ready, not routed" if instance.ready else "starting"


def memory_text(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


async def app_page_context(service: Service, key: AppKey, usage: UsageHistory) -> dict[str, Any]:
    """Everything the app page shows; ``NotFound`` for an unknown app."""
    status = await service.status(key)
    rollout = await service.rollout_status(key)
    releases = list(reversed(await service.releases(key)))
    events = await service.events(key=key, limit=EVENTS_SHOWN)
    restarts: dict[str, int] = {}
    for event in await service.events(key=key, limit=1000, kinds=RESTART_KINDS):
        if event.instance:
            restarts[event.instance] = restarts.get(event.instance, 0) + 1
    progress = rollout.rollout.progress if rollout.rollout else None
    return {
        "key": key,
        "status": status,
        "rollout": rollout,
        "step": progress.step if progress else 0,
        "progress": progress,
        "releases": releases,
        "events": list(reversed(events)),
        "last_event_id": max((e.id for e in events), default=0),
        "restarts": restarts,
        "replaced": sum(restarts.values()),
        "health_of": health_of,
        "usage": usage.usage,
        "memory_text": memory_text,
    }
