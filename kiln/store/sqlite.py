"""``SqliteStore``: the embedded store, one SQLite file in WAL mode.

Durability: ``journal_mode=WAL`` with ``synchronous=NORMAL``. A commit is written to the WAL
before ``commit()`` returns, so a crash or SIGKILL of the kiln process loses nothing that was
acknowledged (the bytes are in the operating system's page cache); only an OS crash or power
loss can drop the last few commits, and even then the file stays consistent. ``FULL`` would
add an fsync to every event for that rarer case; a one-machine tool can afford neither the
latency on its event log nor the pretence that a laptop's disk cache is a power-safe device.

Threads: one connection guarded by one lock. The controller calls the store from the event
loop thread and from worker threads; every call is a short transaction, so serialising them
is simpler than a connection per thread and cannot deadlock on SQLite's own locks.

Errors: ``sqlite3`` errors never leave this module; they are mapped at the boundary
(``_mapped``): a busy/locked/IO problem → ``TemporaryFailure``, a constraint or trigger
violation → ``Conflict``, anything else → ``PermanentFailure``.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
from collections.abc import Collection, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kiln.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PermanentFailure,
)
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
    Severity,
)
from kiln.spec import AppSpec, Strategy
from kiln.store.base import DesiredState
from kiln.store.catalogue import ImageCatalogue
from kiln.store.connection import (
    BUSY_TIMEOUT_MS,
    ThreadGuard,
    mapped_errors,
    open_connection,
)
from kiln.store.secret_rows import SecretRows

"""How long a write waits for another process (a second kiln, a CLI reading) to release the file."""

_APP_COLUMNS = (
    "environment, app, scale, target_release, stable_release, stopped, created_at, updated_at, "
    "warm_release, warm_until, held_release"
)
DESTROYED_KEPT = timedelta(days=7)
"""How long a destroyed app's releases that legacy containers ran are kept aside."""
_RELEASE_COLUMNS = (
    "environment, app, number, image, digest, spec, spec_hash, created_at, created_by, message, "
    "origin, rollback_of, base_spec, secrets"
)
_APPROVAL_COLUMNS = (
    "id, environment, app, source_environment, source_release, digest, spec_hash, approved_by, "
    "approved_at, note"
)
_ROLLOUT_COLUMNS = (
    "id, environment, app, from_release, to_release, strategy, state, started_at, deadline_at, "
    "finished_at, reason, kind, progress"
)
_EVENT_COLUMNS = "id, at, environment, app, kind, reason, severity, release, instance"


class SqliteStore(SecretRows):
    """The ``Store`` protocol on one SQLite file. See the module docstring for the guarantees."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._closed = False
        # Off until the async facade names the event loop's thread (see connection.py).
        self.guard = ThreadGuard()
        # Releases never change, so each is parsed (JSON + spec validation) once; the
        # controller reads the target and stable release of every app every round.
        self._releases: dict[tuple[AppKey, int], Release] = {}
        self.images = ImageCatalogue(self)
        self._conn = open_connection(self.path)

    # --- plumbing ---------------------------------------------------------------------------

    def _mapped(self, doing: str) -> AbstractContextManager[None]:
        self.guard.check(self.path, doing)
        return mapped_errors(self.path, doing)

    @contextmanager
    def _write(self, doing: str) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it commits, or none of it."""
        with self._lock, self._mapped(doing):
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @contextmanager
    def _read(self, doing: str) -> Iterator[sqlite3.Connection]:
        # A read of several statements sees one snapshot thanks to the explicit transaction.
        with self._lock, self._mapped(doing):
            conn = self._connection()
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise PermanentFailure(f"the kiln store {self.path} is closed")
        return self._conn

    def close(self) -> None:
        self.guard.check(self.path, "close")
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._conn.close()
            except sqlite3.Error as exc:
                raise PermanentFailure(
                    f"could not close the kiln store {self.path}: {exc}"
                ) from exc

    # --- apps -------------------------------------------------------------------------------

    def get_app(self, key: AppKey) -> AppRecord | None:
        with self._read(f"read app {key}") as conn:
            return _app_or_none(conn, key)

    def list_apps(self) -> list[AppRecord]:
        with self._read("list apps") as conn:
            rows = conn.execute(
                f"SELECT {_APP_COLUMNS} FROM apps ORDER BY environment, app"
            ).fetchall()
        return [_app(row) for row in rows]

    def set_scale(self, key: AppKey, scale: int, *, now: datetime) -> AppRecord:
        if scale < 0:
            raise InvalidInput(f"scale must be 0 or more, got {scale}")
        at = _to_db(now)
        with self._write(f"scale app {key}") as conn:
            _require_app(conn, key)
            conn.execute(
                "UPDATE apps SET scale = ?, updated_at = ? WHERE environment = ? AND app = ?",
                (scale, at, key.environment, key.app),
            )
            return _require_app(conn, key)

    def set_stopped(self, key: AppKey, stopped: bool, *, now: datetime) -> AppRecord:
        at = _to_db(now)
        with self._write(f"stop app {key}" if stopped else f"start app {key}") as conn:
            _require_app(conn, key)
            conn.execute(
                "UPDATE apps SET stopped = ?, updated_at = ? WHERE environment = ? AND app = ?",
                (int(stopped), at, key.environment, key.app),
            )
            return _require_app(conn, key)

    def delete_app(
        self, key: AppKey, *, keep_releases: Collection[int] = (), now: datetime | None = None
    ) -> None:
        at = _to_db(now if now is not None else datetime.now(UTC))
        expired = _to_db((now if now is not None else datetime.now(UTC)) - DESTROYED_KEPT)
        with self._write(f"delete app {key}") as conn:
            _require_app(conn, key)
            conn.execute("DELETE FROM destroyed_releases WHERE destroyed_at < ?", (expired,))
            kept = sorted(set(keep_releases))
            if kept:
                conn.execute(
                    f"INSERT OR REPLACE INTO destroyed_releases ({_RELEASE_COLUMNS}, destroyed_at)"
                    f" SELECT {_RELEASE_COLUMNS}, ? FROM releases WHERE environment = ? AND app = ?"
                    f" AND number IN ({', '.join('?' for _ in kept)})",
                    (at, key.environment, key.app, *kept),
                )
            # The app row goes first: the triggers let releases and rollouts go only after it,
            # and the foreign keys cascade to them.
            conn.execute(
                "DELETE FROM apps WHERE environment = ? AND app = ?", (key.environment, key.app)
            )
        # Numbers start again at 1 for an app deployed anew.
        for cached in [k for k in self._releases if k[0] == key]:
            self._releases.pop(cached, None)

    # --- releases ---------------------------------------------------------------------------

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
        if spec.key != str(key):
            raise InvalidInput(f"the spec describes app {spec.key}, not {key}")
        if scale < 0:
            raise InvalidInput(f"scale must be 0 or more, got {scale}")
        if deadline_seconds <= 0:
            raise InvalidInput(f"a rollout deadline must be more than 0s, got {deadline_seconds}")
        at = _to_db(now)
        deadline = _to_db(now + timedelta(seconds=deadline_seconds))
        spec_json = json.dumps(spec.model_dump(mode="json"), sort_keys=True)
        base_json = (
            None
            if base_spec is None
            else json.dumps(base_spec.model_dump(mode="json"), sort_keys=True)
        )
        with self._write(f"create a release of {key}") as conn:
            app = _app_or_none(conn, key)
            if app is None:
                # A new app of an old name: what its destroyed namesake left aside is not its.
                conn.execute(
                    "DELETE FROM destroyed_releases WHERE environment = ? AND app = ?",
                    (key.environment, key.app),
                )
                conn.execute(
                    "INSERT INTO apps (environment, app, scale, target_release, stable_release, "
                    "stopped, created_at, updated_at) VALUES (?, ?, ?, NULL, NULL, 0, ?, ?)",
                    (key.environment, key.app, scale, at, at),
                )
                stable = None
            else:
                stable = app.stable_release
            # Inside BEGIN IMMEDIATE nobody else can append, so MAX + 1 is gap-free and unique.
            number = int(
                conn.execute(
                    "SELECT COALESCE(MAX(number), 0) + 1 FROM releases "
                    "WHERE environment = ? AND app = ?",
                    (key.environment, key.app),
                ).fetchone()[0]
            )
            if rollback_of is not None and not 1 <= rollback_of < number:
                raise NotFound(
                    f"no release {rollback_of} of {key} to roll back to; "
                    f"`kiln releases {key}` lists them"
                )
            try:
                release = Release(
                    key=key,
                    number=number,
                    image=image,
                    digest=digest,
                    spec=spec,
                    spec_hash=spec_hash,
                    created_at=_from_db(at),
                    created_by=created_by,
                    message=message,
                    origin=ReleaseOrigin(origin),
                    rollback_of=rollback_of,
                    base_spec=base_spec,
                    secret_versions=dict(secret_versions or {}),
                )
            except ValueError as exc:
                raise InvalidInput(str(exc)) from exc
            conn.execute(
                f"INSERT INTO releases ({_RELEASE_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key.environment,
                    key.app,
                    number,
                    image,
                    digest,
                    spec_json,
                    spec_hash,
                    at,
                    created_by,
                    message,
                    release.origin.value,
                    rollback_of,
                    base_json,
                    json.dumps(release.secret_versions, sort_keys=True),
                ),
            )
            # A new deploy ends the previous rollback window and the held failed release.
            conn.execute(
                "UPDATE apps SET target_release = ?, scale = ?, stopped = 0, updated_at = ?, "
                "warm_release = NULL, warm_until = NULL, held_release = NULL "
                "WHERE environment = ? AND app = ?",
                (number, scale, at, key.environment, key.app),
            )
            rollout = _open_rollout(
                conn,
                key,
                from_release=stable,
                to_release=number,
                strategy=spec.deploy.strategy,
                kind=RolloutKind.DEPLOY,
                at=at,
                deadline=deadline,
                why=f"superseded by release {number}",
            )
        return release, rollout

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
        if kind is RolloutKind.DEPLOY:
            raise InvalidInput("a deploy rollout comes with its release: use create_release")
        at = _to_db(now)
        deadline = _to_db(now + timedelta(seconds=deadline_seconds))
        with self._write(f"start a rollout of {key} to release {to_release}") as conn:
            app = _require_app(conn, key)
            known = conn.execute(
                "SELECT 1 FROM releases WHERE environment = ? AND app = ? AND number = ?",
                (key.environment, key.app, to_release),
            ).fetchone()
            if known is None:
                raise NotFound(f"no release {to_release} of {key}; `kiln releases` lists them")
            where = (key.environment, key.app)
            if kind is RolloutKind.SWITCH_BACK:
                # Back to the warm release; the one we leave becomes warm in its place
                # when the switch succeeds (finish_rollout), the window is over until then.
                conn.execute(
                    "UPDATE apps SET target_release = ?, stopped = 0, updated_at = ?, "
                    "warm_release = NULL, warm_until = NULL WHERE environment = ? AND app = ?",
                    (to_release, at, *where),
                )
            else:
                conn.execute(
                    "UPDATE apps SET target_release = ?, stopped = 0, updated_at = ?, "
                    "held_release = NULL WHERE environment = ? AND app = ?",
                    (to_release, at, *where),
                )
            return _open_rollout(
                conn,
                key,
                from_release=app.stable_release,
                to_release=to_release,
                strategy=strategy,
                kind=kind,
                at=at,
                deadline=deadline,
                why=f"superseded by a {kind.value.replace('_', ' ')} to release {to_release}",
            )

    def destroyed_releases(self, key: AppKey) -> list[Release]:
        with self._read(f"read the destroyed releases of {key}") as conn:
            if _app_or_none(conn, key) is not None:
                return []
            rows = conn.execute(
                f"SELECT {_RELEASE_COLUMNS} FROM destroyed_releases"
                " WHERE environment = ? AND app = ? ORDER BY number",
                (key.environment, key.app),
            ).fetchall()
        found = []
        for row in rows:
            found.append(self._release(row))
            # Not in the release cache: get_release must never answer with one of these.
            self._releases.pop((key, found[-1].number), None)
        return found

    def get_release(self, key: AppKey, number: int) -> Release:
        cached = self._releases.get((key, number))
        if cached is not None:
            return cached
        with self._read(f"read release {number} of {key}") as conn:
            release = self._release_in(conn, key, number)
            if release is None:
                _require_app(conn, key)
                raise NotFound(_no_release(key, number))
        return release

    def _release_in(self, conn: sqlite3.Connection, key: AppKey, number: int) -> Release | None:
        """Release ``number`` of ``key`` from the cache, else read in ``conn``'s transaction."""
        cached = self._releases.get((key, number))
        if cached is not None:
            return cached
        row = conn.execute(
            f"SELECT {_RELEASE_COLUMNS} FROM releases "
            "WHERE environment = ? AND app = ? AND number = ?",
            (key.environment, key.app, number),
        ).fetchone()
        return None if row is None else self._release(row)

    def desired_state(self, key: AppKey) -> DesiredState | None:
        with self._read(f"read the desired state of {key}") as conn:
            app = _app_or_none(conn, key)
            if app is None:
                return None

            def release(number: int | None, *, required: bool) -> Release | None:
                if number is None:
                    return None
                found = self._release_in(conn, key, number)
                if found is None and required:
                    raise NotFound(_no_release(key, number))
                return found

            rollout = conn.execute(
                f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts "
                "WHERE environment = ? AND app = ? AND state = ?",
                (key.environment, key.app, RolloutState.IN_PROGRESS.value),
            ).fetchone()
            return DesiredState(
                app=app,
                target=release(app.target_release, required=True),
                stable=release(app.stable_release, required=True),
                rollout=None if rollout is None else _rollout(rollout),
                warm=release(app.warm_release, required=False),
                held=release(app.held_release, required=False),
            )

    def list_releases(self, key: AppKey) -> list[Release]:
        with self._read(f"list releases of {key}") as conn:
            rows = conn.execute(
                f"SELECT {_RELEASE_COLUMNS} FROM releases WHERE environment = ? AND app = ? "
                "ORDER BY number",
                (key.environment, key.app),
            ).fetchall()
        return [self._release(row) for row in rows]

    def _release(self, row: sqlite3.Row | tuple[Any, ...]) -> Release:
        (environment, app, number, image, digest, spec) = row[:6]
        (spec_hash, created_at, created_by, message, origin, rollback_of, base) = row[6:13]
        secrets = row[13]
        cached = self._releases.get((AppKey(environment, app), number))
        if cached is not None:
            return cached
        try:
            parsed = AppSpec.model_validate(json.loads(spec))
            base_spec = None if base is None else AppSpec.model_validate(json.loads(base))
        except (ValueError, ValidationError) as exc:
            raise PermanentFailure(
                f"release {number} of {environment}/{app} in {self.path} holds a spec this kiln "
                f"cannot read: {exc}"
            ) from exc
        release = self._releases[(AppKey(environment, app), number)] = Release(
            key=AppKey(environment, app),
            number=number,
            image=image,
            digest=digest,
            spec=parsed,
            spec_hash=spec_hash,
            created_at=_from_db(created_at),
            created_by=created_by,
            message=message,
            origin=ReleaseOrigin(origin),
            rollback_of=rollback_of,
            base_spec=base_spec,
            secret_versions={str(k): int(v) for k, v in json.loads(secrets).items()},
        )
        return release

    # --- rollouts ---------------------------------------------------------------------------

    def active_rollout(self, key: AppKey) -> Rollout | None:
        with self._read(f"read the rollout of {key}") as conn:
            row = conn.execute(
                f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts "
                "WHERE environment = ? AND app = ? AND state = ?",
                (key.environment, key.app, RolloutState.IN_PROGRESS.value),
            ).fetchone()
        return None if row is None else _rollout(row)

    def active_rollouts(self) -> dict[AppKey, Rollout]:
        with self._read("read the rollouts in progress") as conn:
            rows = conn.execute(
                f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts WHERE state = ?",
                (RolloutState.IN_PROGRESS.value,),
            ).fetchall()
        rollouts = [_rollout(row) for row in rows]
        return {rollout.key: rollout for rollout in rollouts}

    def list_rollouts(self, key: AppKey) -> list[Rollout]:
        with self._read(f"list rollouts of {key}") as conn:
            rows = conn.execute(
                f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts WHERE environment = ? AND app = ? "
                "ORDER BY id",
                (key.environment, key.app),
            ).fetchall()
        return [_rollout(row) for row in rows]

    def update_rollout(
        self, rollout_id: int, progress: RolloutProgress, *, now: datetime
    ) -> Rollout:
        with self._write(f"update rollout {rollout_id}") as conn:
            rollout = _require_rollout(conn, rollout_id)
            if rollout.state.finished:
                raise Conflict(
                    f"rollout {rollout_id} of {rollout.key} is {rollout.state.value}; "
                    "`kiln rollout status` shows the current one"
                )
            conn.execute(
                "UPDATE rollouts SET progress = ? WHERE id = ?",
                (_progress_json(progress), rollout_id),
            )
            return _require_rollout(conn, rollout_id)

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
        state = RolloutState(state)
        if not state.finished:
            raise InvalidInput(
                f"a rollout is finished as succeeded, failed, aborted or superseded, "
                f"not {state.value}"
            )
        at = _to_db(now)
        with self._write(f"finish rollout {rollout_id}") as conn:
            rollout = _require_rollout(conn, rollout_id)
            if rollout.state.finished:
                return rollout
            key = rollout.key
            conn.execute(
                "UPDATE rollouts SET state = ?, finished_at = ?, reason = ? WHERE id = ?",
                (state.value, at, reason, rollout_id),
            )
            where = (key.environment, key.app)
            failed = state in (RolloutState.FAILED, RolloutState.ABORTED)
            if state is RolloutState.SUCCEEDED:
                keep_warm = warm_until is not None and rollout.from_release is not None
                conn.execute(
                    "UPDATE apps SET stable_release = ?, updated_at = ?, warm_release = ?, "
                    "warm_until = ? WHERE environment = ? AND app = ?",
                    (
                        rollout.to_release,
                        at,
                        rollout.from_release if keep_warm else None,
                        _to_db(warm_until) if keep_warm and warm_until is not None else None,
                        *where,
                    ),
                )
            elif failed and rollout.from_release is not None:
                conn.execute(
                    "UPDATE apps SET target_release = ?, updated_at = ?, held_release = ? "
                    "WHERE environment = ? AND app = ?",
                    (rollout.from_release, at, rollout.to_release if hold else None, *where),
                )
            elif failed:
                # Nothing ever worked: no release to go back to, so run none.
                conn.execute(
                    "UPDATE apps SET target_release = NULL, stopped = 1, updated_at = ? "
                    "WHERE environment = ? AND app = ?",
                    (at, *where),
                )
            return _require_rollout(conn, rollout_id)

    # --- approvals --------------------------------------------------------------------------

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
        at = _to_db(now)
        with self._write(f"approve a promotion into {key}") as conn:
            cursor = conn.execute(
                f"INSERT INTO approvals ({_APPROVAL_COLUMNS}) "
                "VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key.environment,
                    key.app,
                    source_environment,
                    source_release,
                    digest,
                    spec_hash,
                    approved_by,
                    at,
                    note,
                ),
            )
            row = conn.execute(
                f"SELECT {_APPROVAL_COLUMNS} FROM approvals WHERE id = ?", (cursor.lastrowid,)
            ).fetchone()
        return _approval(row)

    def list_approvals(self, key: AppKey) -> list[Approval]:
        with self._read(f"list approvals of {key}") as conn:
            rows = conn.execute(
                f"SELECT {_APPROVAL_COLUMNS} FROM approvals WHERE environment = ? AND app = ? "
                "ORDER BY id",
                (key.environment, key.app),
            ).fetchall()
        return [_approval(row) for row in rows]

    # --- events -----------------------------------------------------------------------------

    def append_event(self, event: NewEvent, *, now: datetime) -> Event:
        return self.append_events([event], now=now)[0]

    def append_events(self, events: Sequence[NewEvent], *, now: datetime) -> list[Event]:
        at = _to_db(now)
        stored: list[Event] = []
        if not events:
            return stored
        with self._write("append events") as conn:
            for event in events:
                severity = Severity(event.severity)
                cursor = conn.execute(
                    "INSERT INTO events (at, environment, app, kind, reason, severity, release, "
                    "instance) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        at,
                        event.key.environment if event.key else None,
                        event.key.app if event.key else None,
                        event.kind.value,
                        event.reason,
                        severity.value,
                        event.release,
                        event.instance,
                    ),
                )
                stored.append(
                    Event(
                        id=int(cursor.lastrowid or 0),
                        at=_from_db(at),
                        key=event.key,
                        kind=event.kind,
                        reason=event.reason,
                        severity=severity,
                        release=event.release,
                        instance=event.instance,
                    )
                )
        return stored

    def list_events(
        self,
        *,
        key: AppKey | None = None,
        after_id: int = 0,
        limit: int = 100,
        kinds: Collection[EventKind] | None = None,
    ) -> list[Event]:
        if limit < 0:
            raise InvalidInput(f"limit must be 0 or more, got {limit}")
        where = "id > ?"
        params: list[Any] = [after_id]
        if key is not None:
            where += " AND environment = ? AND app = ?"
            params += [key.environment, key.app]
        if kinds is not None:
            chosen = sorted(str(kind) for kind in kinds)
            where += f" AND kind IN ({', '.join('?' for _ in chosen)})" if chosen else " AND 0"
            params += chosen
        # after_id 0 means "the latest": take the newest `limit` and hand them back oldest first.
        order = "DESC" if after_id <= 0 else "ASC"
        with self._read("list events") as conn:
            rows = conn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE {where} ORDER BY id {order} LIMIT ?",
                (*params, limit),
            ).fetchall()
        if order == "DESC":
            rows.reverse()
        return [_event(row) for row in rows]

    # --- webhook cursors ----------------------------------------------------------------

    def webhook_cursor(self, url: str) -> int | None:
        with self._read("read a webhook cursor") as conn:
            row = conn.execute(
                "SELECT last_event_id FROM webhook_cursors WHERE url = ?", (url,)
            ).fetchone()
        return None if row is None else int(row[0])

    def set_webhook_cursor(self, url: str, event_id: int, *, now: datetime) -> None:
        if event_id < 0:
            raise InvalidInput(f"an event id is 0 or more, got {event_id}")
        with self._write("move a webhook cursor") as conn:
            conn.execute(
                "INSERT INTO webhook_cursors (url, last_event_id, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (url) DO UPDATE SET"
                " last_event_id = MAX(last_event_id, excluded.last_event_id),"
                " updated_at = excluded.updated_at",
                (url, event_id, _to_db(now)),
            )


# --- rows ⇄ model -------------------------------------------------------------------------------


def _to_db(moment: datetime) -> str:
    """An aware datetime as a fixed-width UTC ISO string (so text order is time order)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidInput(
            f"the store takes timezone-aware datetimes, got naive {moment.isoformat()}"
        )
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _from_db(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _app(row: tuple[Any, ...]) -> AppRecord:
    environment, app, scale, target, stable, stopped, created_at, updated_at = row[:8]
    warm, warm_until, held = row[8:]
    return AppRecord(
        warm_release=warm,
        warm_until=None if warm_until is None else _from_db(warm_until),
        held_release=held,
        key=AppKey(environment, app),
        scale=scale,
        target_release=target,
        stable_release=stable,
        stopped=bool(stopped),
        created_at=_from_db(created_at),
        updated_at=_from_db(updated_at),
    )


def _app_or_none(conn: sqlite3.Connection, key: AppKey) -> AppRecord | None:
    row = conn.execute(
        f"SELECT {_APP_COLUMNS} FROM apps WHERE environment = ? AND app = ?",
        (key.environment, key.app),
    ).fetchone()
    return None if row is None else _app(row)


def _require_app(conn: sqlite3.Connection, key: AppKey) -> AppRecord:
    app = _app_or_none(conn, key)
    if app is None:
        raise NotFound(f"no app {key}; `kiln status` lists apps")
    return app


def _approval(row: tuple[Any, ...]) -> Approval:
    (approval_id, environment, app, source_environment, source_release, digest) = row[:6]
    (spec_hash, approved_by, approved_at, note) = row[6:]
    return Approval(
        id=approval_id,
        key=AppKey(environment, app),
        source_environment=source_environment,
        source_release=source_release,
        digest=digest,
        spec_hash=spec_hash,
        approved_by=approved_by,
        approved_at=_from_db(approved_at),
        note=note,
    )


def _no_release(key: AppKey, number: int) -> str:
    return f"no release {number} of {key}; `kiln releases {key}` lists them"


def _rollout(row: tuple[Any, ...]) -> Rollout:
    (rid, environment, app, from_release, to_release, strategy) = row[:6]
    (state, started, deadline, finished, reason, kind, progress) = row[6:]
    return Rollout(
        kind=RolloutKind(kind),
        progress=_progress_from_json(progress),
        id=rid,
        key=AppKey(environment, app),
        from_release=from_release,
        to_release=to_release,
        strategy=Strategy(strategy),
        state=RolloutState(state),
        started_at=_from_db(started),
        deadline_at=_from_db(deadline),
        finished_at=None if finished is None else _from_db(finished),
        reason=reason,
    )


def _open_rollout(
    conn: sqlite3.Connection,
    key: AppKey,
    *,
    from_release: int | None,
    to_release: int,
    strategy: Strategy,
    kind: RolloutKind,
    at: str,
    deadline: str,
    why: str,
) -> Rollout:
    """Supersede the rollout in progress (at most one per app) and open a new one."""
    conn.execute(
        "UPDATE rollouts SET state = ?, finished_at = ?, reason = ? "
        "WHERE environment = ? AND app = ? AND state = ?",
        (
            RolloutState.SUPERSEDED.value,
            at,
            why,
            key.environment,
            key.app,
            RolloutState.IN_PROGRESS.value,
        ),
    )
    cursor = conn.execute(
        "INSERT INTO rollouts (environment, app, from_release, to_release, strategy, "
        "state, started_at, deadline_at, finished_at, reason, kind, progress) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, '', ?, '{}')",
        (
            key.environment,
            key.app,
            from_release,
            to_release,
            strategy.value,
            RolloutState.IN_PROGRESS.value,
            at,
            deadline,
            kind.value,
        ),
    )
    return _require_rollout(conn, int(cursor.lastrowid or 0))


_PROGRESS_TIMES = ("step_entered_at", "step_ready_at")


def _progress_json(progress: RolloutProgress) -> str:
    data: dict[str, Any] = dataclasses.asdict(progress)
    for name in _PROGRESS_TIMES:
        value = data[name]
        data[name] = None if value is None else _to_db(value)
    return json.dumps(data, sort_keys=True)


def _progress_from_json(text: str) -> RolloutProgress:
    data = json.loads(text or "{}")
    known = {f.name for f in dataclasses.fields(RolloutProgress)}
    fields = {k: v for k, v in data.items() if k in known}
    for name in _PROGRESS_TIMES:
        if fields.get(name) is not None:
            fields[name] = _from_db(fields[name])
    return RolloutProgress(**fields)


def _require_rollout(conn: sqlite3.Connection, rollout_id: int) -> Rollout:
    row = conn.execute(
        f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts WHERE id = ?", (rollout_id,)
    ).fetchone()
    if row is None:
        raise NotFound(f"no rollout {rollout_id}; `kiln status` shows an app's rollout")
    return _rollout(row)


def _event_kind(value: str) -> EventKind:
    try:
        return EventKind(value)
    except ValueError:  # written by a newer kiln: show it, as a kind this one does not know
        return EventKind.UNKNOWN


def _event(row: tuple[Any, ...]) -> Event:
    eid, at, environment, app, kind, reason, severity, release, instance = row
    return Event(
        id=eid,
        at=_from_db(at),
        key=AppKey(environment, app) if environment is not None and app is not None else None,
        kind=_event_kind(kind),
        reason=reason,
        severity=Severity(severity),
        release=release,
        instance=instance,
    )


__all__ = ["BUSY_TIMEOUT_MS", "SqliteStore"]
