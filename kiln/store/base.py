"""The store seam: desired state (apps, releases, rollouts) and the event log.

Implementation: ``kiln.store.sqlite.SqliteStore`` (SQLite, WAL). Methods are synchronous and
short; every write is one transaction, so a crash leaves either the old or the new state.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from kiln.model import (
    AppKey,
    AppRecord,
    Approval,
    Event,
    EventKind,
    NewEvent,
    Release,
    ReleaseOrigin,
    Rollout,
    RolloutKind,
    RolloutProgress,
    RolloutState,
    SealedSecret,
    SecretVersion,
)
from kiln.spec import AppSpec, Strategy
from kiln.store.catalogue import ImageCatalogue


@dataclass(frozen=True, kw_only=True)
class DesiredState:
    """What a reconcile round reads of one app, as of one transaction: the app row, the
    releases it names (target, stable, warm, held) and its rollout in progress."""

    app: AppRecord
    target: Release | None
    stable: Release | None
    rollout: Rollout | None
    warm: Release | None
    held: Release | None


class Store(Protocol):
    images: ImageCatalogue  # repository:tag → digest, immutable tags (catalogue.py)

    # --- apps ---------------------------------------------------------------------------
    def get_app(self, key: AppKey) -> AppRecord | None: ...

    def list_apps(self) -> list[AppRecord]: ...

    def set_scale(self, key: AppKey, scale: int, *, now: datetime) -> AppRecord:
        """Raises ``NotFound`` for an unknown app."""

    def set_stopped(self, key: AppKey, stopped: bool, *, now: datetime) -> AppRecord: ...

    def delete_app(
        self, key: AppKey, *, keep_releases: Collection[int] = (), now: datetime | None = None
    ) -> None:
        """Forget the app, its releases and rollouts (events stay). ``NotFound`` if unknown.
        ``keep_releases``: releases that legacy containers run, kept aside (7 days, or until
        the app is deployed anew) for ``destroyed_releases``."""

    def destroyed_releases(self, key: AppKey) -> list[Release]:
        """The releases kept aside when ``key`` was destroyed; ``[]`` while the app exists."""

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
        base_spec: AppSpec | None = None,
        secret_versions: dict[str, int] | None = None,
    ) -> tuple[Release, Rollout]:
        """In one transaction: append release N+1, point the app's target at it, set its scale,
        un-stop it, mark an in-progress rollout SUPERSEDED, and open a rollout from the app's
        stable release to N+1 with ``deadline_at = now + deadline_seconds``. A new deploy ends
        the rollback window (no warm release) and drops the held failed release."""

    def start_rollout(
        self,
        key: AppKey,
        *,
        to_release: int,
        strategy: Strategy,
        kind: RolloutKind,
        deadline_seconds: float,
        now: datetime,
    ) -> Rollout:
        """A rollout to an existing release (no new release): ``SWITCH_BACK`` to the warm
        release inside its rollback window, or ``RETRY`` of a failed or aborted one. In one
        transaction: point the target at it, supersede the rollout in progress, open this one."""

    def get_release(self, key: AppKey, number: int) -> Release:
        """Raises ``NotFound``."""

    def list_releases(self, key: AppKey) -> list[Release]:
        """Oldest first."""

    def desired_state(self, key: AppKey) -> DesiredState | None:
        """The app row, its target / stable / warm / held releases and its active rollout,
        read in one transaction (``None`` for an unknown app). A target or stable release
        that is missing raises ``NotFound``; a warm or held one is ``None``."""

    # --- rollouts -----------------------------------------------------------------------
    def active_rollout(self, key: AppKey) -> Rollout | None: ...

    def active_rollouts(self) -> dict[AppKey, Rollout]:
        """Every app's rollout in progress, in one read (the app list shows them all)."""

    def list_rollouts(self, key: AppKey) -> list[Rollout]: ...

    def update_rollout(
        self, rollout_id: int, progress: RolloutProgress, *, now: datetime
    ) -> Rollout:
        """Persist a rollout's progress (step, pause, promote, verdicts). ``Conflict`` once the
        rollout is finished."""

    def finish_rollout(
        self,
        rollout_id: int,
        state: RolloutState,
        reason: str,
        *,
        now: datetime,
        warm_until: datetime | None = None,
        hold: bool = False,
    ) -> Rollout:
        """Close a rollout in one transaction. SUCCEEDED: the app's stable release becomes the
        rollout's ``to_release``; with ``warm_until`` the release it replaced stays warm until
        then. FAILED/ABORTED: the app's target goes back to its stable release
        (``from_release``), and with ``hold`` the failed release is held for inspection; with
        no stable release the app is stopped. Idempotent on a closed rollout (returns it
        unchanged)."""

    # --- approvals ----------------------------------------------------------------------
    def add_approval(
        self,
        key: AppKey,
        *,
        source_environment: str,
        source_release: int,
        digest: str,
        spec_hash: str,
        approved_by: str,
        note: str,
        now: datetime,
    ) -> Approval:
        """Append an approval to promote ``source_release`` of ``source_environment`` into
        ``key`` (approvals are append-only)."""

    def list_approvals(self, key: AppKey) -> list[Approval]:
        """Approvals of promotions into ``key``, oldest first; ``[]`` for an unknown app."""

    # --- secrets (sealed; see kiln.store.vault) -------------------------------------------
    def add_secret_version(
        self,
        key: AppKey,
        name: str,
        *,
        seal: Callable[[int], tuple[str, bytes, bytes]],
        created_by: str,
        now: datetime,
    ) -> SecretVersion:
        """Append version N+1 of a secret; ``seal(N+1)`` gives (key id, nonce, ciphertext)."""

    def secret_versions(self, key: AppKey, name: str | None = None) -> list[SecretVersion]: ...

    def sealed_secret(self, key: AppKey, name: str, version: int) -> SealedSecret:
        """Raises ``NotFound``."""

    def delete_secret(self, key: AppKey, name: str) -> int:
        """Every version goes. Raises ``NotFound`` when there is none."""

    def sealed_secrets_not_under(self, key_id: str, *, limit: int) -> list[SealedSecret]: ...

    def reseal_secret(
        self, old: SealedSecret, *, key_id: str, nonce: bytes, ciphertext: bytes
    ) -> bool:
        """Compare and swap one version's ciphertext; False when it changed meanwhile."""

    def secret_key_ids(self) -> set[str]: ...

    # --- events -------------------------------------------------------------------------
    def append_event(self, event: NewEvent, *, now: datetime) -> Event: ...

    def append_events(self, events: Sequence[NewEvent], *, now: datetime) -> list[Event]: ...

    def list_events(
        self,
        *,
        key: AppKey | None = None,
        after_id: int = 0,
        limit: int = 100,
        kinds: Collection[EventKind] | None = None,
    ) -> list[Event]:
        """Oldest first, ids greater than ``after_id``; the last ``limit`` when ``after_id`` is 0.
        ``kinds``: only events of these kinds (None: every kind)."""

    # --- webhook cursors ----------------------------------------------------------------
    def webhook_cursor(self, url: str) -> int | None:
        """The last event id the webhook at ``url`` took or was given up on; None: never set."""

    def set_webhook_cursor(self, url: str, event_id: int, *, now: datetime) -> None:
        """Move the cursor forward to ``event_id`` (never back: an older id changes nothing)."""

    def close(self) -> None: ...
