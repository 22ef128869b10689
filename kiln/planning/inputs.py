"""The narrow, read-only view of desired state that the planner needs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from kiln.model import AppKey, Release, Rollout


@dataclass(frozen=True, kw_only=True)
class DesiredApp:
    """What the store says the app should be.

    ``target`` is the release to converge to (None: run nothing). ``rollout`` is the rollout in
    progress, if any. ``warm`` is the previous release kept up and routable until
    ``warm_until`` (the rollback window of a blue-green or canary); ``held`` a failed release
    kept for inspection. An app the store does not know (orphan containers) is
    ``DesiredApp.absent(key)``.
    """

    key: AppKey
    scale: int
    stopped: bool
    target: Release | None
    stable: Release | None
    rollout: Rollout | None
    warm: Release | None = None
    warm_until: datetime | None = None
    held: Release | None = None

    @property
    def wanted(self) -> int:
        """How many instances of ``target`` should serve."""
        if self.stopped or self.target is None:
            return 0
        return self.scale

    @classmethod
    def absent(cls, key: AppKey) -> DesiredApp:
        return cls(key=key, scale=0, stopped=True, target=None, stable=None, rollout=None)
