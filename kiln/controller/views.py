"""Read views the controller hands to the API: plain frozen dataclasses, JSON-friendly."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from kiln.model import AppKey, Release, Rollout, Snapshot, VolumeInfo


@dataclass(frozen=True, kw_only=True)
class InstanceView:
    id: str
    release: int
    container_id: str
    status: str  # created | running | exited | unknown
    ready: bool
    in_router: bool
    draining: bool
    address: str | None
    started_at: datetime | None
    exit_code: int | None
    last_error: str | None


@dataclass(frozen=True, kw_only=True)
class AppStatus:
    key: AppKey
    state: str  # running | deploying | degraded | stopped | failed | empty
    scale: int
    stopped: bool
    target_release: int | None
    stable_release: int | None
    ready: int  # ready instances of the target release
    instances: list[InstanceView] = field(default_factory=list)
    rollout: Rollout | None = None
    urls: list[str] = field(default_factory=list)
    message: str = ""  # why the app is in this state, e.g. "waiting 4s: crash loop backoff"
    quiet: bool = False  # no requests lately: its instances are checked every idle_interval


@dataclass(frozen=True, kw_only=True)
class ReleaseView:
    release: Release
    result: str  # current | succeeded | failed | superseded | in_progress | ""
    result_reason: str = ""


@dataclass(frozen=True, kw_only=True)
class DeployResult:
    release: Release
    rollout: Rollout | None
    changed: bool  # False: same digest and spec as the target release, nothing to do
    message: str = ""


@dataclass(frozen=True, kw_only=True)
class GroupView:
    """One release group as the last round planned it."""

    release: int
    role: str  # stable | next | canary | green | warm | held
    size: int | None  # instances wanted (None: kept as they are)
    share: int | None  # percent of requests (None: one pool with the other releases)
    ready: int
    preview: bool = False


@dataclass(frozen=True, kw_only=True)
class ReleaseTrafficView:
    """A release's requests in the current analysis window (or since NGINX started)."""

    release: int
    requests: int
    errors: int
    error_rate: float
    p95_ms: float | None


@dataclass(frozen=True, kw_only=True)
class RolloutView:
    """`kiln rollout status`: where the rollout is, what takes traffic, and the verdicts."""

    key: AppKey
    rollout: Rollout | None  # the active rollout, else the latest one
    active: bool
    status: str  # one line: step, weights, what it waits for
    steps: list[int] = field(default_factory=list)  # canary weights, in order
    groups: list[GroupView] = field(default_factory=list)
    traffic: list[ReleaseTrafficView] = field(default_factory=list)
    warm_release: int | None = None
    warm_until: datetime | None = None
    held_release: int | None = None


@dataclass(frozen=True, kw_only=True)
class LogRequest:
    """Which kept log lines ``Service.logs`` returns beyond instance, follow and tail."""

    release: int | None = None
    since: datetime | None = None
    grep: str | None = None
    router: bool = False  # NGINX's access lines of the app instead of its instances' output


@dataclass(frozen=True, kw_only=True)
class SecretView:
    """One secret of an app, never its value: its newest version and who set it when."""

    name: str
    version: int  # the newest
    versions: int  # how many are kept
    created_at: datetime
    created_by: str
    in_use: int | None  # the version the app's target release pins (None: not used)


@dataclass(frozen=True, kw_only=True)
class SecretSetResult:
    name: str
    version: int
    changed: bool  # False: the value equals the newest version, nothing stored
    deploy: DeployResult | None = None  # with --deploy: the release that brings it
    message: str = ""


@dataclass(frozen=True, kw_only=True)
class KeyRotation:
    key_id: str
    reencrypted: int
    retired: list[str]
    unused_env_keys: list[str]


@dataclass(frozen=True, kw_only=True)
class VolumeView:
    info: VolumeInfo
    used_by: list[int]  # releases the app may run that mount it
    snapshots: list[Snapshot] = field(default_factory=list)
