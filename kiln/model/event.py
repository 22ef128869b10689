"""Events: append-only records of state changes, always with a reason a person can read.

Every event has a kind from ``EventKind``: one enum, so a consumer (``kiln events --type``, a
webhook, the dashboard, a metric) can rely on the set of kinds and nothing is emitted under a
misspelt name. A kind is dotted, ``CATEGORY.WHAT``; filters accept a whole category
(``rollout``) or one kind (``rollout.failed``).

Adding a kind: add a member in its category below (the value is what the store, the API and
webhooks carry, so never rename a landed one) and emit it with ``EventBus.record``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from kiln.model.app import AppKey


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class EventKind(StrEnum):
    # releases and deployments
    RELEASE_CREATED = "release.created"
    RELEASE_PROMOTED = "release.promoted"  # a release promoted to another environment
    RELEASE_APPROVED = "release.approved"  # approved for promotion into an environment
    # rollouts: the move from one release to another
    ROLLOUT_STARTED = "rollout.started"
    ROLLOUT_ROLLBACK = "rollout.rollback"  # a person asked to go back to an earlier release
    ROLLOUT_STEP = "rollout.step"  # a canary step or a blue-green release ready on preview
    ROLLOUT_VERDICT = "rollout.verdict"  # one analysis window judged
    ROLLOUT_PROGRESS = "rollout.progress"  # any other note on the way
    ROLLOUT_PROMOTED = "rollout.promoted"
    ROLLOUT_PAUSED = "rollout.paused"
    ROLLOUT_RESUMED = "rollout.resumed"
    ROLLOUT_ABORTED = "rollout.aborted"
    ROLLOUT_SUCCEEDED = "rollout.succeeded"
    ROLLOUT_FAILED = "rollout.failed"  # and traffic goes back to the stable release
    # apps
    APP_SCALED = "app.scaled"
    APP_STOPPED = "app.stopped"
    APP_DESTROYED = "app.destroyed"
    # instances: lifecycle, health changes, restarts and their reasons
    INSTANCE_STARTED = "instance.started"
    INSTANCE_START_FAILED = "instance.start_failed"
    INSTANCE_STOPPING = "instance.stopping"
    INSTANCE_EXITED = "instance.exited"  # crashed or OOM-killed: it is replaced
    INSTANCE_UNHEALTHY = "instance.unhealthy"  # failed liveness: it is replaced
    INSTANCE_BACKOFF = "instance.backoff"  # a crash loop: replacements wait
    INSTANCE_FOREIGN = "instance.foreign"
    GROUP_SCALE_FAILED = "group.scale_failed"
    # drift: the world differs from what kiln put there
    DRIFT_DETECTED = "drift.detected"
    DRIFT_CORRECTED = "drift.corrected"
    # the router (NGINX)
    ROUTER_PEERS = "router.peers"
    ROUTER_CONFIG_REJECTED = "router.config_rejected"
    ROUTER_DOWN = "router.down"
    ROUTER_RESTARTED = "router.restarted"
    ROUTER_RESTART_FAILED = "router.restart_failed"
    # the container engine
    DRIVER_AVAILABLE = "driver.available"
    DRIVER_UNAVAILABLE = "driver.unavailable"
    DRIVER_SHARED = "driver.shared"
    DRIVER_NETWORK = "driver.network"  # the engine's network needs fixing (said at start)
    DRIVER_HOST = "driver.host"  # the engine's host wants tuning (said at start)
    # the embedded image registry
    REGISTRY_RESTARTED = "registry.restarted"
    REGISTRY_RESTART_FAILED = "registry.restart_failed"
    # images: pushed to the registry, pulled by digest, built, pruned
    IMAGE_PUSHED = "image.pushed"
    IMAGE_PULLING = "image.pulling"
    IMAGE_PULLED = "image.pulled"
    IMAGE_PULL_FAILED = "image.pull_failed"
    IMAGE_BUILT = "image.built"
    IMAGE_PRUNED = "image.pruned"
    # secrets (names and versions, never values)
    SECRET_SET = "secret.set"
    SECRET_REMOVED = "secret.removed"
    SECRET_KEY_ROTATED = "secret.key_rotated"
    # volumes
    VOLUME_SNAPSHOT = "volume.snapshot"
    VOLUME_RESTORED = "volume.restored"
    VOLUME_REMOVED = "volume.removed"
    # access
    AUTH_FAILED = "auth.failed"
    # kiln itself
    KILN_STARTED = "kiln.started"
    KILN_STOPPED = "kiln.stopped"
    WEBHOOK_FAILED = "webhook.failed"  # a delivery gave up after its retries
    # a stored kind this version does not know (written by a newer kiln)
    UNKNOWN = "unknown"

    @property
    def category(self) -> str:
        return self.value.partition(".")[0]

    @classmethod
    def parse(cls, value: str) -> EventKind:
        """The kind named ``value``; a clear error listing the kinds when there is none."""
        try:
            return cls(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not an event kind; kinds: {', '.join(k.value for k in cls)}"
            ) from None


def event_categories() -> list[str]:
    return sorted({kind.category for kind in EventKind})


def kinds_matching(patterns: Iterable[str]) -> frozenset[EventKind]:
    """The kinds that ``patterns`` name: a category (``rollout``) is all its kinds, a dotted
    name (``rollout.failed``) one. An unknown name is a ``ValueError`` saying which exist."""
    chosen: set[EventKind] = set()
    categories = event_categories()
    for raw in patterns:
        pattern = raw.strip()
        if not pattern:
            continue
        if "." in pattern:
            chosen.add(EventKind.parse(pattern))
        elif pattern in categories:
            chosen.update(k for k in EventKind if k.category == pattern)
        else:
            raise ValueError(
                f"{pattern!r} is not an event type; use a category ({', '.join(categories)}) "
                "or a kind such as rollout.failed"
            )
    return frozenset(chosen)


@dataclass(frozen=True, kw_only=True)
class Event:
    id: int
    at: datetime
    key: AppKey | None  # None for server-wide events (router, driver)
    kind: EventKind
    reason: str
    severity: Severity = Severity.INFO
    release: int | None = None
    instance: str | None = None


@dataclass(frozen=True, kw_only=True)
class NewEvent:
    """An event before the store numbered it."""

    key: AppKey | None
    kind: EventKind
    reason: str
    severity: Severity = Severity.INFO
    release: int | None = None
    instance: str | None = None

    def __post_init__(self) -> None:
        # A plain string is accepted only when it names a kind: no free-form kinds reach the log.
        if not isinstance(self.kind, EventKind):
            object.__setattr__(self, "kind", EventKind.parse(str(self.kind)))
