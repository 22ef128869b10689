"""Read views the controller hands to the API: plain frozen dataclasses, JSON-friendly."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from kiln.model import AppKey, Release, Rollout


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
