"""App identity and the desired state of an app (spec and status kept apart)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, order=True)
class AppKey:
    """An app in an environment: the key of one reconcile loop (``"staging/web"``)."""

    environment: str
    app: str

    def __str__(self) -> str:
        return f"{self.environment}/{self.app}"

    @classmethod
    def parse(cls, text: str) -> AppKey:
        environment, _, app = text.partition("/")
        if not app:
            raise ValueError(f"an app key is ENV/APP, got {text!r}")
        return cls(environment, app)


@dataclass(frozen=True, kw_only=True)
class AppRecord:
    """What the store holds about an app besides its releases.

    ``target_release`` is the release kiln is converging to; ``stable_release`` is the last
    release that finished a rollout (where an automatic rollback goes). ``scale`` is the
    desired number of instances; ``stopped`` means zero instances while keeping the history.
    ``warm_release`` is the previous release kept up and routable until ``warm_until`` after a
    blue-green or canary promotion (a rollback inside that window is a router switch);
    ``held_release`` is a failed or aborted release kept for inspection until the next deploy.
    """

    key: AppKey
    scale: int
    target_release: int | None
    stable_release: int | None
    stopped: bool
    created_at: datetime
    updated_at: datetime
    warm_release: int | None = None
    warm_until: datetime | None = None
    held_release: int | None = None
