"""The store seam: desired state (apps, releases, rollouts) and the event log.

Implementation: ``kiln.store.sqlite.SqliteStore`` (SQLite, WAL). Methods are synchronous and
short; every write is one transaction, so a crash leaves either the old or the new state.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from kiln.model import (
    AppKey,
    AppRecord,
    Event,
    NewEvent,
    Release,
    ReleaseOrigin,
    Rollout,
    RolloutState,
)
from kiln.spec import AppSpec


class Store(Protocol):
    # --- apps ---------------------------------------------------------------------------
    def get_app(self, key: AppKey) -> AppRecord | None: ...

    def list_apps(self) -> list[AppRecord]: ...

    def set_scale(self, key: AppKey, scale: int, *, now: datetime) -> AppRecord:
        """Raises ``NotFound`` for an unknown app."""

    def set_stopped(self, key: AppKey, stopped: bool, *, now: datetime) -> AppRecord: ...

    def delete_app(self, key: AppKey) -> None:
        """Forget the app, its releases and rollouts (events stay). ``NotFound`` if unknown."""

    # --- releases -----------------------------------------------------------------------
    def create_release(
        self,
        key: AppKey,
        *,
        spec: AppSpec,
        image: str,
        digest: str,
        spec_hash: str,
        created_by: str,
        message: str,
        origin: ReleaseOrigin,
        rollback_of: int | None,
        scale: int,
        deadline_seconds: float,
        now: datetime,
    ) -> tuple[Release, Rollout]:
        """In one transaction: append release N+1, point the app's target at it, set its scale,
        un-stop it, mark an in-progress rollout SUPERSEDED, and open a rollout from the app's
        stable release to N+1 with ``deadline_at = now + deadline_seconds``."""

    def get_release(self, key: AppKey, number: int) -> Release:
        """Raises ``NotFound``."""

    def list_releases(self, key: AppKey) -> list[Release]:
        """Oldest first."""

    # --- rollouts -----------------------------------------------------------------------
    def active_rollout(self, key: AppKey) -> Rollout | None: ...

    def list_rollouts(self, key: AppKey) -> list[Rollout]: ...

    def finish_rollout(
        self, rollout_id: int, state: RolloutState, reason: str, *, now: datetime
    ) -> Rollout:
        """Close a rollout in one transaction. SUCCEEDED: the app's stable release becomes the
        rollout's ``to_release``. FAILED: the app's target goes back to its stable release
        (``from_release``); with no stable release the app is stopped. Idempotent on a closed
        rollout (returns it unchanged)."""

    # --- events -------------------------------------------------------------------------
    def append_event(self, event: NewEvent, *, now: datetime) -> Event: ...

    def append_events(self, events: Sequence[NewEvent], *, now: datetime) -> list[Event]: ...

    def list_events(
        self, *, key: AppKey | None = None, after_id: int = 0, limit: int = 100
    ) -> list[Event]:
        """Oldest first, ids greater than ``after_id``; the last ``limit`` when ``after_id`` is 0."""

    def close(self) -> None: ...
