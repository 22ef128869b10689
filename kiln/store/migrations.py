"""The SQLite schema, as an ordered list of migrations.

The schema version lives in ``PRAGMA user_version`` (0 for a new file). Migration ``i`` (1-based)
takes the schema from version ``i - 1`` to ``i``; each runs in its own ``BEGIN IMMEDIATE``
transaction together with the bump of ``user_version``, so a crash mid-migration leaves the
previous version intact and the next open simply runs it again.

Rules for adding a migration: append, never edit a released one; a migration is a tuple of
single SQL statements (trigger bodies may hold ``;``, so statements are not split by text).

Append-only rules are enforced by triggers, not only by the code above them, so a bug (or a
hand-written ``UPDATE``) cannot rewrite history:

- ``releases``: no UPDATE ever; DELETE only once the app row is gone (that is ``delete_app``,
  whose ``DELETE FROM apps`` cascades to the releases and rollouts).
- ``rollouts``: a finished rollout is never updated; DELETE only once the app row is gone.
- ``events``: no UPDATE, no DELETE, ever.
- ``audit``: no UPDATE ever; DELETE only of refused calls (their retention, migration 7).
- ``tokens``: never deleted (the audit log names them); the one change is revoking an active
  token, once.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from kiln.errors import PermanentFailure

Migration = tuple[str, ...]

_V1: Migration = (
    """
    CREATE TABLE apps (
        environment     TEXT NOT NULL,
        app             TEXT NOT NULL,
        scale           INTEGER NOT NULL CHECK (scale >= 0),
        target_release  INTEGER,
        stable_release  INTEGER,
        stopped         INTEGER NOT NULL DEFAULT 0 CHECK (stopped IN (0, 1)),
        created_at      TEXT NOT NULL,
        updated_at      TEXT NOT NULL,
        PRIMARY KEY (environment, app)
    )
    """,
    """
    CREATE TABLE releases (
        environment  TEXT NOT NULL,
        app          TEXT NOT NULL,
        number       INTEGER NOT NULL CHECK (number >= 1),
        image        TEXT NOT NULL,
        digest       TEXT NOT NULL,
        spec         TEXT NOT NULL,
        spec_hash    TEXT NOT NULL,
        created_at   TEXT NOT NULL,
        created_by   TEXT NOT NULL,
        message      TEXT NOT NULL,
        origin       TEXT NOT NULL,
        rollback_of  INTEGER,
        UNIQUE (environment, app, number),
        FOREIGN KEY (environment, app) REFERENCES apps (environment, app) ON DELETE CASCADE
    )
    """,
    """
    CREATE TRIGGER releases_never_update BEFORE UPDATE ON releases
    BEGIN
        SELECT RAISE(ABORT, 'releases are append-only: a release is never updated');
    END
    """,
    """
    CREATE TRIGGER releases_delete_only_with_app BEFORE DELETE ON releases
    WHEN EXISTS (SELECT 1 FROM apps a WHERE a.environment = OLD.environment AND a.app = OLD.app)
    BEGIN
        SELECT RAISE(ABORT, 'releases are append-only: they go only when their app is deleted');
    END
    """,
    """
    CREATE TABLE rollouts (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        environment   TEXT NOT NULL,
        app           TEXT NOT NULL,
        from_release  INTEGER,
        to_release    INTEGER NOT NULL,
        strategy      TEXT NOT NULL,
        state         TEXT NOT NULL,
        started_at    TEXT NOT NULL,
        deadline_at   TEXT NOT NULL,
        finished_at   TEXT,
        reason        TEXT NOT NULL DEFAULT '',
        FOREIGN KEY (environment, app) REFERENCES apps (environment, app) ON DELETE CASCADE,
        FOREIGN KEY (environment, app, to_release)
            REFERENCES releases (environment, app, number) ON DELETE CASCADE
    )
    """,
    # At most one rollout in progress per app: create_release supersedes the previous one.
    """
    CREATE UNIQUE INDEX rollouts_one_in_progress ON rollouts (environment, app)
    WHERE state = 'in_progress'
    """,
    """
    CREATE TRIGGER rollouts_finished_never_update BEFORE UPDATE ON rollouts
    WHEN OLD.state <> 'in_progress'
    BEGIN
        SELECT RAISE(ABORT, 'a finished rollout is never updated');
    END
    """,
    """
    CREATE TRIGGER rollouts_delete_only_with_app BEFORE DELETE ON rollouts
    WHEN EXISTS (SELECT 1 FROM apps a WHERE a.environment = OLD.environment AND a.app = OLD.app)
    BEGIN
        SELECT RAISE(ABORT, 'rollouts go only when their app is deleted');
    END
    """,
    # AUTOINCREMENT: ids never go back, so an SSE client's ``after_id`` stays meaningful.
    """
    CREATE TABLE events (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        at           TEXT NOT NULL,
        environment  TEXT,
        app          TEXT,
        kind         TEXT NOT NULL,
        reason       TEXT NOT NULL,
        severity     TEXT NOT NULL,
        release      INTEGER,
        instance     TEXT
    )
    """,
    "CREATE INDEX events_by_app ON events (environment, app, id)",
    """
    CREATE TRIGGER events_never_update BEFORE UPDATE ON events
    BEGIN
        SELECT RAISE(ABORT, 'events are append-only: an event is never updated');
    END
    """,
    """
    CREATE TRIGGER events_never_delete BEFORE DELETE ON events
    BEGIN
        SELECT RAISE(ABORT, 'events are append-only: an event is never deleted');
    END
    """,
)

# Release groups: the rollout machine's progress (JSON, see RolloutProgress) and kind; the
# release kept warm for a rollback inside its window and the failed one held for inspection.
_V2: Migration = (
    "ALTER TABLE rollouts ADD COLUMN kind TEXT NOT NULL DEFAULT 'deploy'",
    "ALTER TABLE rollouts ADD COLUMN progress TEXT NOT NULL DEFAULT '{}'",
    "ALTER TABLE apps ADD COLUMN warm_release INTEGER",
    "ALTER TABLE apps ADD COLUMN warm_until TEXT",
    "ALTER TABLE apps ADD COLUMN held_release INTEGER",
)

# The image catalogue: repository:tag → the manifest digest it means in the registry. A tag's
# digest never changes (but for `latest`), enforced here as well as in the code.
_V3: Migration = (
    """
    CREATE TABLE image_tags (
        repository  TEXT NOT NULL,
        tag         TEXT NOT NULL,
        digest      TEXT NOT NULL,
        image_id    TEXT NOT NULL,
        size        INTEGER,
        labels      TEXT NOT NULL DEFAULT '{}',
        created_at  TEXT NOT NULL,
        created_by  TEXT NOT NULL,
        PRIMARY KEY (repository, tag)
    )
    """,
    """
    CREATE TRIGGER image_tags_immutable BEFORE UPDATE OF digest ON image_tags
    WHEN OLD.tag != 'latest' AND NEW.digest != OLD.digest
    BEGIN
        SELECT RAISE(ABORT, 'a tag means one digest forever (only latest moves)');
    END
    """,
)

# Environments and promotion: the spec as written before the environment's overrides (what a
# promotion applies the next environment's overrides to) and the approvals of promotions,
# append-only like releases.
_V4: Migration = (
    "ALTER TABLE releases ADD COLUMN base_spec TEXT",
    """
    CREATE TABLE approvals (
        id                  INTEGER PRIMARY KEY AUTOINCREMENT,
        environment         TEXT NOT NULL,
        app                 TEXT NOT NULL,
        source_environment  TEXT NOT NULL,
        source_release      INTEGER NOT NULL CHECK (source_release >= 1),
        digest              TEXT NOT NULL,
        spec_hash           TEXT NOT NULL,
        approved_by         TEXT NOT NULL,
        approved_at         TEXT NOT NULL,
        note                TEXT NOT NULL DEFAULT ''
    )
    """,
    "CREATE INDEX approvals_by_app ON approvals (environment, app, id)",
    """
    CREATE TRIGGER approvals_never_update BEFORE UPDATE ON approvals
    BEGIN
        SELECT RAISE(ABORT, 'approvals are append-only: an approval is never updated');
    END
    """,
)

# Access control: API tokens (stored as hashes) with roles, and the append-only audit log.
_V5: Migration = (
    """
    CREATE TABLE tokens (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        name          TEXT NOT NULL,
        role          TEXT NOT NULL CHECK (role IN ('admin', 'deployer', 'viewer')),
        environments  TEXT NOT NULL DEFAULT '',
        token_id      TEXT NOT NULL UNIQUE,
        token_hash    TEXT NOT NULL UNIQUE,
        created_at    TEXT NOT NULL,
        created_by    TEXT NOT NULL,
        revoked_at    TEXT,
        revoked_by    TEXT
    )
    """,
    # A name is reused only once its token is revoked.
    "CREATE UNIQUE INDEX tokens_active_name ON tokens (name) WHERE revoked_at IS NULL",
    """
    CREATE TRIGGER tokens_only_revoked_once BEFORE UPDATE ON tokens
    WHEN OLD.revoked_at IS NOT NULL OR NEW.revoked_at IS NULL
        OR NEW.name IS NOT OLD.name OR NEW.role IS NOT OLD.role
        OR NEW.environments IS NOT OLD.environments OR NEW.token_id IS NOT OLD.token_id
        OR NEW.token_hash IS NOT OLD.token_hash
    BEGIN
        SELECT RAISE(ABORT, 'a token is never changed, only revoked once');
    END
    """,
    """
    CREATE TRIGGER tokens_never_delete BEFORE DELETE ON tokens
    BEGIN
        SELECT RAISE(ABORT, 'tokens are never deleted: revoke them');
    END
    """,
    """
    CREATE TABLE audit (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        at           TEXT NOT NULL,
        token        TEXT,
        peer         TEXT NOT NULL,
        claimed      TEXT NOT NULL DEFAULT '',
        method       TEXT NOT NULL,
        path         TEXT NOT NULL,
        environment  TEXT,
        app          TEXT,
        status       INTEGER NOT NULL,
        outcome      TEXT NOT NULL,
        release      INTEGER,
        detail       TEXT NOT NULL DEFAULT ''
    )
    """,
    "CREATE INDEX audit_by_app ON audit (environment, app, id)",
    "CREATE INDEX audit_by_time ON audit (at)",
    """
    CREATE TRIGGER audit_never_update BEFORE UPDATE ON audit
    BEGIN
        SELECT RAISE(ABORT, 'the audit log is append-only: an entry is never updated');
    END
    """,
    """
    CREATE TRIGGER audit_never_delete BEFORE DELETE ON audit
    BEGIN
        SELECT RAISE(ABORT, 'the audit log is append-only: an entry is never deleted');
    END
    """,
)

# Secrets: each release pins the secret versions it uses (JSON name → version); every version of
# every secret, sealed (AES-256-GCM) under the master key named by key_id. A version never
# changes but for re-encryption under a new master key (kiln secret rotate-key).
_V6: Migration = (
    "ALTER TABLE releases ADD COLUMN secrets TEXT NOT NULL DEFAULT '{}'",
    """
    CREATE TABLE secrets (
        environment  TEXT NOT NULL,
        app          TEXT NOT NULL,
        name         TEXT NOT NULL,
        version      INTEGER NOT NULL CHECK (version >= 1),
        key_id       TEXT NOT NULL,
        nonce        BLOB NOT NULL,
        ciphertext   BLOB NOT NULL,
        created_at   TEXT NOT NULL,
        created_by   TEXT NOT NULL,
        PRIMARY KEY (environment, app, name, version)
    )
    """,
    "CREATE INDEX secrets_by_key ON secrets (key_id)",
    """
    CREATE TRIGGER secrets_versions_immutable
    BEFORE UPDATE OF environment, app, name, version, created_at, created_by ON secrets
    BEGIN
        SELECT RAISE(ABORT, 'a secret version is immutable: set a new version instead');
    END
    """,
)

# Refused calls (401, 403) expire: anyone who can reach the API can make them, so their entries
# are trimmed by count and age (AuditSettings). Every other entry stays undeletable.
_V7: Migration = (
    "DROP TRIGGER audit_never_delete",
    """
    CREATE TRIGGER audit_never_delete BEFORE DELETE ON audit
    WHEN OLD.outcome IS NOT 'refused'
    BEGIN
        SELECT RAISE(ABORT, 'the audit log is append-only: an entry is never deleted');
    END
    """,
    # The trims' only index: refused entries by time (a partial index, small).
    "CREATE INDEX audit_refused_by_time ON audit (at) WHERE outcome = 'refused'",
)

# Outgoing webhooks: per receiver URL, the last event id delivered or given up on, so a
# restarted kiln sends what it had not sent yet (at-least-once) instead of dropping it.
_V8: Migration = (
    """
    CREATE TABLE webhook_cursors (
        url            TEXT PRIMARY KEY,
        last_event_id  INTEGER NOT NULL CHECK (last_event_id >= 0),
        updated_at     TEXT NOT NULL
    )
    """,
)

# A destroyed app's releases that legacy containers (no installation id, from a kiln before
# ids) still ran when it was destroyed: kept so the loop of the forgotten app knows those
# containers as this kiln's and removes them, after a restart too. Gone after 7 days, or when
# the app is deployed anew. The release columns, in _RELEASE_COLUMNS's order (a column added
# to releases is added here too).
_V9: Migration = (
    """
    CREATE TABLE destroyed_releases (
        environment   TEXT NOT NULL,
        app           TEXT NOT NULL,
        number        INTEGER NOT NULL,
        image         TEXT NOT NULL,
        digest        TEXT NOT NULL,
        spec          TEXT NOT NULL,
        spec_hash     TEXT NOT NULL,
        created_at    TEXT NOT NULL,
        created_by    TEXT NOT NULL,
        message       TEXT NOT NULL,
        origin        TEXT NOT NULL,
        rollback_of   INTEGER,
        base_spec     TEXT,
        secrets       TEXT NOT NULL,
        destroyed_at  TEXT NOT NULL,
        PRIMARY KEY (environment, app, number)
    )
    """,
)

MIGRATIONS: tuple[Migration, ...] = (_V1, _V2, _V3, _V4, _V5, _V6, _V7, _V8, _V9)
"""Every migration in order; ``len(MIGRATIONS)`` is the schema version this kiln writes."""

SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate(
    conn: sqlite3.Connection, path: Path, migrations: tuple[Migration, ...] = MIGRATIONS
) -> int:
    """Bring the database to the newest version this kiln knows; return that version.

    ``conn`` must be in autocommit mode (``isolation_level=None``) so that the transactions
    here are the only ones. Safe to call on every open, and from two processes at once: the
    version is re-read inside the write transaction.
    """
    known = len(migrations)
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = schema_version(conn)
            if current > known:
                raise PermanentFailure(
                    f"the kiln store {path} has schema version {current}, but this kiln knows "
                    f"only up to version {known}: it was written by a newer kiln. "
                    "Upgrade kiln (`pip install -U kiln`) to use it."
                )
            if current == known:
                conn.execute("COMMIT")
                return current
            for statement in migrations[current]:
                conn.execute(statement)
            # PRAGMA takes no parameters; the value is our own integer.
            conn.execute(f"PRAGMA user_version = {current + 1:d}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
