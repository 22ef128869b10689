"""The async facade over a sync store: every call runs on the store's own thread.

kiln's controller and API run on one asyncio event loop; a SQLite call on it (a fsync, a
``busy_timeout`` wait behind a second kiln, a big event page) would stall every app's round
and every request. ``AsyncStore`` wraps any ``Store`` (``SqliteStore``, a test's fake) and
runs each call on one dedicated thread (a single-thread executor that owns the connection
from then on), so calls stay in the order they were made and never block the loop.

    event loop ── await store.get_app(k) ──▶ store thread ── SqliteStore.get_app(k)
                                            (one thread, calls in order)

``AsyncAccessStore`` does the same for the API's access store (tokens, audit log), on its own
thread: a token lookup never waits behind the controller's writes.

The guard: with ``guard=True`` (the test suite sets ``KILN_STORE_GUARD=1``) the first call
names the calling thread (the event loop's) as the one the sync store must never run on;
every later direct call from that thread raises ``StoreOnEventLoop``.

Releases are immutable (SQLite triggers forbid ``UPDATE``), so the facade keeps every release
it has read or written, keyed ``(app, number)``, and answers ``cached_release`` without any
I/O; ``delete_app`` drops that app's entries (numbers start again at 1 for a new app).
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import ParamSpec, Protocol, TypeVar, runtime_checkable

from kiln.errors import NotFound
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
)
from kiln.model.access import AuditEntry, NewAuditEntry, TokenRecord
from kiln.model.image import CatalogueEntry
from kiln.spec import AppSpec, Strategy
from kiln.store.access import AccessStore
from kiln.store.base import DesiredState, Store
from kiln.store.catalogue import ImageCatalogue
from kiln.store.connection import ThreadGuard

# "1": a store call on the event loop's thread raises (the test suite sets it; see the guard).
GUARD_ENV = "KILN_STORE_GUARD"

P = ParamSpec("P")
T = TypeVar("T")


def guard_from_env() -> bool:
    """Whether the loop-thread guard is on (``KILN_STORE_GUARD=1``): a test and debug switch,
    read where the facades are built."""
    return os.environ.get(GUARD_ENV) == "1"


@runtime_checkable
class _Guarded(Protocol):
    guard: ThreadGuard


class StoreThread:
    """One thread that runs every call of one store, in order."""

    def __init__(self, name: str, *, guarded: object, guard: bool) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._guarded = guarded
        self._guard = guard
        self._bound = False

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` on the store thread (for sync code that reads the store
        itself, e.g. the secret vault)."""
        if not self._bound:
            self._bind()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def _bind(self) -> None:
        self._bound = True
        if self._guard and isinstance(self._guarded, _Guarded):
            # We are on the event loop's thread: from now on the store refuses to run here.
            self._guarded.guard.forbid(threading.get_ident())

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False)


class AsyncCatalogue:
    """``ImageCatalogue`` (repository:tag → digest) on the store thread."""

    def __init__(self, catalogue: ImageCatalogue, thread: StoreThread) -> None:
        self._catalogue = catalogue
        self._thread = thread

    async def get(self, repository: str, tag: str) -> CatalogueEntry | None:
        return await self._thread.run(self._catalogue.get, repository, tag)

    async def list(self, repository: str | None = None) -> list[CatalogueEntry]:
        return await self._thread.run(self._catalogue.list, repository)

    async def record(self, entry: CatalogueEntry) -> CatalogueEntry:
        return await self._thread.run(self._catalogue.record, entry)

    async def forget(self, repository: str, digest: str) -> int:
        return await self._thread.run(self._catalogue.forget, repository, digest)


class AsyncStore:
    """The ``Store`` protocol, every method awaitable and run on the store thread."""

    def __init__(self, store: Store, *, guard: bool = False) -> None:
        self.sync = store  # for sync code handed to ``run`` (it then runs on the store thread)
        self._thread = StoreThread("kiln-store", guarded=store, guard=guard)
        self.images = AsyncCatalogue(store.images, self._thread)
        self._releases: dict[tuple[AppKey, int], Release] = {}
        self._destroyed: dict[tuple[AppKey, int], Release] = {}  # see cached_release
        self._closed = False

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._thread.run(fn, *args, **kwargs)

    # --- the release cache (releases never change) --------------------------------------

    def cached_release(self, key: AppKey, number: int) -> Release | None:
        """The release if this facade has seen it; no I/O (safe from sync code on the loop).
        For a destroyed app: the releases its legacy containers ran (``delete_app``'s
        ``keep_releases``), so its loop knows those containers as this kiln's and removes them."""
        return self._releases.get((key, number)) or self._destroyed.get((key, number))

    def _forget_destroyed(self, key: AppKey) -> None:
        for cached in [k for k in self._destroyed if k[0] == key]:
            del self._destroyed[cached]

    async def _load_destroyed(self, key: AppKey) -> None:
        found = await self.run(self.sync.destroyed_releases, key)
        self._forget_destroyed(key)
        for release in found:
            self._destroyed[(key, release.number)] = release

    def _remember(self, release: Release) -> Release:
        self._releases[(release.key, release.number)] = release
        return release

    # --- apps ---------------------------------------------------------------------------

    async def get_app(self, key: AppKey) -> AppRecord | None:
        return await self.run(self.sync.get_app, key)

    async def list_apps(self) -> list[AppRecord]:
        return await self.run(self.sync.list_apps)

    async def set_scale(self, key: AppKey, scale: int, *, now: datetime) -> AppRecord:
        return await self.run(self.sync.set_scale, key, scale, now=now)

    async def set_stopped(self, key: AppKey, stopped: bool, *, now: datetime) -> AppRecord:
        return await self.run(self.sync.set_stopped, key, stopped, now=now)

    async def delete_app(
        self, key: AppKey, *, keep_releases: Collection[int] = (), now: datetime | None = None
    ) -> None:
        try:
            await self.run(
                functools.partial(self.sync.delete_app, key, keep_releases=keep_releases, now=now)
            )
        finally:
            for cached in [k for k in self._releases if k[0] == key]:
                del self._releases[cached]
        if keep_releases:
            await self._load_destroyed(key)

    async def destroyed_releases(self, key: AppKey) -> list[Release]:
        return await self.run(self.sync.destroyed_releases, key)

    # --- releases -----------------------------------------------------------------------

    async def create_release(
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
        release, rollout = await self.run(
            functools.partial(
                self.sync.create_release,
                key,
                spec=spec,
                image=image,
                digest=digest,
                spec_hash=spec_hash,
                created_by=created_by,
                message=message,
                origin=origin,
                rollback_of=rollback_of,
                scale=scale,
                deadline_seconds=deadline_seconds,
                now=now,
                base_spec=base_spec,
                secret_versions=secret_versions,
            )
        )
        self._forget_destroyed(key)  # the app exists again: its namesake's are not its
        return self._remember(release), rollout

    async def start_rollout(
        self,
        key: AppKey,
        *,
        to_release: int,
        strategy: Strategy,
        kind: RolloutKind,
        deadline_seconds: float,
        now: datetime,
    ) -> Rollout:
        return await self.run(
            functools.partial(
                self.sync.start_rollout,
                key,
                to_release=to_release,
                strategy=strategy,
                kind=kind,
                deadline_seconds=deadline_seconds,
                now=now,
            )
        )

    async def get_release(self, key: AppKey, number: int) -> Release:
        cached = self._releases.get((key, number))
        if cached is not None:
            return cached
        return self._remember(await self.run(self.sync.get_release, key, number))

    async def release_or_none(self, key: AppKey, number: int) -> Release | None:
        try:
            return await self.get_release(key, number)
        except NotFound:
            return None

    async def desired_state(self, key: AppKey) -> DesiredState | None:
        """One transaction on the store thread; the releases it read join the cache."""
        state = await self.run(self.sync.desired_state, key)
        if state is None:
            # A forgotten app's round: the releases its legacy containers ran, if any were
            # kept, so that round removes them (after a restart too).
            await self._load_destroyed(key)
        else:
            for release in (state.target, state.stable, state.warm, state.held):
                if release is not None:
                    self._remember(release)
        return state

    async def list_releases(self, key: AppKey) -> list[Release]:
        releases = await self.run(self.sync.list_releases, key)
        for release in releases:
            self._remember(release)
        return releases

    # --- rollouts -----------------------------------------------------------------------

    async def active_rollout(self, key: AppKey) -> Rollout | None:
        return await self.run(self.sync.active_rollout, key)

    async def active_rollouts(self) -> dict[AppKey, Rollout]:
        return await self.run(self.sync.active_rollouts)

    async def list_rollouts(self, key: AppKey) -> list[Rollout]:
        return await self.run(self.sync.list_rollouts, key)

    async def update_rollout(
        self, rollout_id: int, progress: RolloutProgress, *, now: datetime
    ) -> Rollout:
        return await self.run(self.sync.update_rollout, rollout_id, progress, now=now)

    async def finish_rollout(
        self,
        rollout_id: int,
        state: RolloutState,
        reason: str,
        *,
        now: datetime,
        warm_until: datetime | None = None,
        hold: bool = False,
    ) -> Rollout:
        return await self.run(
            functools.partial(
                self.sync.finish_rollout,
                rollout_id,
                state,
                reason,
                now=now,
                warm_until=warm_until,
                hold=hold,
            )
        )

    # --- approvals ----------------------------------------------------------------------

    async def add_approval(
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
        return await self.run(
            functools.partial(
                self.sync.add_approval,
                key,
                source_environment=source_environment,
                source_release=source_release,
                digest=digest,
                spec_hash=spec_hash,
                approved_by=approved_by,
                note=note,
                now=now,
            )
        )

    async def list_approvals(self, key: AppKey) -> list[Approval]:
        return await self.run(self.sync.list_approvals, key)

    # --- events -------------------------------------------------------------------------

    async def append_event(self, event: NewEvent, *, now: datetime) -> Event:
        return await self.run(self.sync.append_event, event, now=now)

    async def append_events(self, events: Sequence[NewEvent], *, now: datetime) -> list[Event]:
        return await self.run(self.sync.append_events, events, now=now)

    async def list_events(
        self,
        *,
        key: AppKey | None = None,
        after_id: int = 0,
        limit: int = 100,
        kinds: Collection[EventKind] | None = None,
    ) -> list[Event]:
        return await self.run(
            functools.partial(
                self.sync.list_events, key=key, after_id=after_id, limit=limit, kinds=kinds
            )
        )

    # --- webhook cursors ----------------------------------------------------------------

    async def webhook_cursor(self, url: str) -> int | None:
        return await self.run(self.sync.webhook_cursor, url)

    async def set_webhook_cursor(self, url: str, event_id: int, *, now: datetime) -> None:
        await self.run(self.sync.set_webhook_cursor, url, event_id, now=now)

    async def close(self) -> None:
        """Close the store on its thread, then end the thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.run(self.sync.close)
        finally:
            self._thread.shutdown()


class AsyncAccessStore:
    """The ``AccessStore`` protocol (tokens, audit log), awaitable, on its own thread."""

    def __init__(self, store: AccessStore, *, guard: bool = False) -> None:
        self.sync = store
        self._thread = StoreThread("kiln-access", guarded=store, guard=guard)
        self._closed = False

    async def add_token(self, record: TokenRecord) -> TokenRecord:
        return await self._thread.run(self.sync.add_token, record)

    async def import_token(self, record: TokenRecord) -> bool:
        return await self._thread.run(self.sync.import_token, record)

    async def token_by_hash(self, token_hash: str) -> TokenRecord | None:
        return await self._thread.run(self.sync.token_by_hash, token_hash)

    async def token_by_id(self, token_id: str) -> TokenRecord | None:
        return await self._thread.run(self.sync.token_by_id, token_id)

    async def list_tokens(self, *, revoked: bool = False) -> list[TokenRecord]:
        return await self._thread.run(self.sync.list_tokens, revoked=revoked)

    async def revoke_token(self, name: str, *, by: str, now: datetime) -> TokenRecord:
        return await self._thread.run(self.sync.revoke_token, name, by=by, now=now)

    async def append_audit(self, entry: NewAuditEntry, *, now: datetime) -> AuditEntry:
        return await self._thread.run(self.sync.append_audit, entry, now=now)

    async def list_audit(
        self,
        *,
        environment: str | None = None,
        app: str | None = None,
        since: datetime | None = None,
        after_id: int = 0,
        limit: int = 100,
    ) -> list[AuditEntry]:
        return await self._thread.run(
            functools.partial(
                self.sync.list_audit,
                environment=environment,
                app=app,
                since=since,
                after_id=after_id,
                limit=limit,
            )
        )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._thread.run(self.sync.close)
        finally:
            self._thread.shutdown()
