"""Helpers for the store tests: a fixed clock and a one-line deploy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kiln.model import AppKey, Release, ReleaseOrigin, Rollout
from kiln.spec import AppSpec
from kiln.store import SqliteStore

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def at(seconds: float) -> datetime:
    """A moment ``seconds`` after T0: tests pass the clock, they never read it."""
    return T0 + timedelta(seconds=seconds)


def digest(n: int) -> str:
    return "sha256:" + f"{n:x}".rjust(64, "0")


def deploy(
    store: SqliteStore,
    key: AppKey,
    *,
    version: int = 1,
    scale: int = 2,
    now: datetime = T0,
    origin: ReleaseOrigin = ReleaseOrigin.DEPLOY,
    rollback_of: int | None = None,
    deadline_seconds: float = 120.0,
) -> tuple[Release, Rollout]:
    spec = AppSpec(
        app=key.app,
        environment=key.environment,
        image=f"demo:{version}",
        port=8080,
        instances=scale,
    )
    return store.create_release(
        key,
        spec=spec,
        image=f"demo:{version}",
        digest=digest(version),
        spec_hash=f"hash-{version}",
        created_by="alice",
        message=f"version {version}",
        origin=origin,
        rollback_of=rollback_of,
        scale=scale,
        deadline_seconds=deadline_seconds,
        now=now,
    )


WEB = AppKey("dev", "web")
API = AppKey("dev", "api")
PROD_WEB = AppKey("production", "web")
