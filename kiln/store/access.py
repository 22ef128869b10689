"""The access store: API tokens (as hashes, with roles) and the append-only audit log.

``SqliteAccessStore`` keeps both in kiln's SQLite file (tables ``tokens`` and ``audit``,
migration 5), on its own connection (opened as the main store opens its: connection.py): the
API checks a token on every request and appends an audit entry after every change, without
waiting behind the controller's store lock. The triggers of migrations 5 and 7 enforce what
this code promises: a token is never deleted or changed, only revoked once; an audit entry is
never updated, and never deleted but for refused calls (401, 403) past their retention
(``AuditSettings``: a count and an age), trimmed as each refused call is appended — anyone who
can reach the API can make those, and they must not fill the disk. ``FakeAccessStore`` is the
in-memory stand-in for tests of the layers above.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from kiln.config.file import AuditSettings
from kiln.errors import Conflict, InvalidInput, NotFound
from kiln.model.access import AuditEntry, NewAuditEntry, Role, TokenRecord
from kiln.store.connection import ThreadGuard, mapped_errors, open_connection


class AccessStore(Protocol):
    def add_token(self, record: TokenRecord) -> TokenRecord:
        """Store a new token. ``Conflict`` when an active token has the name, or the token
        itself is stored already."""

    def import_token(self, record: TokenRecord) -> bool:
        """Store ``record`` unless a token with its hash is stored (active or revoked): how
        the home's token file becomes the first admin token once, and a revoked one stays
        revoked. A taken name gets a suffix. True when it was stored."""

    def token_by_hash(self, token_hash: str) -> TokenRecord | None: ...

    def token_by_id(self, token_id: str) -> TokenRecord | None: ...

    def list_tokens(self, *, revoked: bool = False) -> list[TokenRecord]:
        """Active tokens by name (with ``revoked``, the revoked ones too, after them)."""

    def revoke_token(self, name: str, *, by: str, now: datetime) -> TokenRecord:
        """``NotFound`` for no active token of that name; ``Conflict`` for the last admin."""

    def append_audit(self, entry: NewAuditEntry, *, now: datetime) -> AuditEntry:
        """Store ``entry`` at ``now``. A refused one (outcome ``refused``) also trims the
        refused entries to the retention: none older than ``refused_max_age`` before ``now``,
        at most ``refused_max_entries`` (the oldest go first)."""

    def list_audit(
        self,
        *,
        environment: str | None = None,
        app: str | None = None,
        since: datetime | None = None,
        after_id: int = 0,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """Oldest first; the last ``limit`` entries when ``after_id`` is 0. ``environment``
        and ``app`` filter each on its own."""

    def close(self) -> None: ...


def _last_admin(tokens: list[TokenRecord], name: str) -> bool:
    admins = [t for t in tokens if t.active and t.role is Role.ADMIN]
    return len(admins) == 1 and admins[0].name == name


_LAST_ADMIN = (
    "{name!r} is the last admin token; create another admin token first "
    "(`kiln token create NAME --role admin`), or nobody could manage tokens any more"
)


_NAME_TAKEN = (
    "a token named {name!r} exists; revoke it first (`kiln token revoke {name}`) "
    "or pick another name"
)


def _free_name(taken: set[str], name: str) -> str:
    if name not in taken:
        return name
    n = 2
    while f"{name}-{n}" in taken:
        n += 1
    return f"{name}-{n}"


REFUSED = "refused"
"""The outcome of a 401 or 403: the only entries that expire."""


class SqliteAccessStore:
    """``AccessStore`` on kiln's SQLite file (its own connection, WAL like the main store)."""

    def __init__(self, path: Path, *, audit: AuditSettings | None = None) -> None:
        self.path = Path(path)
        self.retention = audit or AuditSettings()
        # Refused entries stored: counted once (on the first refused append), then kept up to
        # date, so a trim by count is a delete of the few oldest, not a count of them all.
        self._refused: int | None = None
        self._lock = threading.Lock()
        self._conn = open_connection(self.path)
        # Off until the async facade names the event loop's thread (see connection.py).
        self.guard = ThreadGuard()

    @contextmanager
    def _tx(self, doing: str, *, write: bool) -> Iterator[sqlite3.Connection]:
        self.guard.check(self.path, doing)
        with self._lock, mapped_errors(self.path, doing):
            self._conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        self.guard.check(self.path, "close")
        with self._lock:
            self._conn.close()

    # --- tokens -----------------------------------------------------------------------------

    def add_token(self, record: TokenRecord) -> TokenRecord:
        with self._tx(f"add token {record.name!r}", write=True) as conn:
            if _token_where(conn, "name = ? AND revoked_at IS NULL", record.name):
                raise Conflict(_NAME_TAKEN.format(name=record.name))
            _insert_token(conn, record)
        return record

    def import_token(self, record: TokenRecord) -> bool:
        with self._tx("import the home's token", write=True) as conn:
            if _token_where(conn, "token_hash = ?", record.token_hash):
                return False
            taken = {t.name for t in _token_where(conn, "revoked_at IS NULL")}
            _insert_token(conn, replace(record, name=_free_name(taken, record.name)))
            return True

    def token_by_hash(self, token_hash: str) -> TokenRecord | None:
        with self._tx("check a token", write=False) as conn:
            found = _token_where(conn, "token_hash = ?", token_hash)
        return found[0] if found else None

    def token_by_id(self, token_id: str) -> TokenRecord | None:
        with self._tx("look up a token", write=False) as conn:
            found = _token_where(conn, "token_id = ?", token_id)
        return found[0] if found else None

    def list_tokens(self, *, revoked: bool = False) -> list[TokenRecord]:
        with self._tx("list tokens", write=False) as conn:
            tokens = _token_where(conn, "1 = 1")
        active = sorted((t for t in tokens if t.active), key=lambda t: t.name)
        gone = [t for t in tokens if not t.active] if revoked else []
        return active + gone

    def revoke_token(self, name: str, *, by: str, now: datetime) -> TokenRecord:
        with self._tx(f"revoke token {name!r}", write=True) as conn:
            if not _token_where(conn, "name = ? AND revoked_at IS NULL", name):
                raise NotFound(f"no active token named {name!r}; `kiln token ls` lists them")
            if _last_admin(_token_where(conn, "revoked_at IS NULL"), name):
                raise Conflict(_LAST_ADMIN.format(name=name))
            conn.execute(
                "UPDATE tokens SET revoked_at = ?, revoked_by = ? "
                "WHERE name = ? AND revoked_at IS NULL",
                (_to_db(now), by, name),
            )
            revoked = _token_where(conn, "name = ? AND revoked_at = ?", name, _to_db(now))
        return revoked[-1]

    # --- audit ------------------------------------------------------------------------------

    def append_audit(self, entry: NewAuditEntry, *, now: datetime) -> AuditEntry:
        with self._tx("append to the audit log", write=True) as conn:
            cursor = conn.execute(
                f"INSERT INTO audit ({_AUDIT_COLUMNS[4:]}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    _to_db(now),
                    entry.token,
                    entry.peer,
                    entry.claimed,
                    entry.method,
                    entry.path,
                    entry.environment,
                    entry.app,
                    entry.status,
                    entry.outcome,
                    entry.release,
                    entry.detail,
                ),
            )
            row = conn.execute(
                f"SELECT {_AUDIT_COLUMNS} FROM audit WHERE id = ?", (cursor.lastrowid,)
            ).fetchone()
            refused = self._trim_refused(conn, now) if entry.outcome == REFUSED else None
        if refused is not None:
            self._refused = refused  # only once committed
        return _audit(row)

    def _trim_refused(self, conn: sqlite3.Connection, now: datetime) -> int:
        """Apply the retention to refused entries (the one just appended included); return
        how many are left. The literal 'refused' in each statement lets SQLite use the
        partial index: every statement here reads only the few entries it deletes."""
        known, self._refused = self._refused, None  # unknown until this transaction commits
        cutoff = _to_db(now - timedelta(seconds=self.retention.refused_max_age))
        expired = conn.execute(
            "DELETE FROM audit WHERE outcome = 'refused' AND at < ?", (cutoff,)
        ).rowcount
        if known is None:
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM audit WHERE outcome = 'refused'"
            ).fetchone()
        else:
            # The server's connection is the audit log's only writer: the count it knew,
            # plus the entry just appended, minus the expired ones.
            count = known + 1 - expired
        over = count - self.retention.refused_max_entries
        if over > 0:
            count -= conn.execute(
                "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE outcome = 'refused' "
                "ORDER BY at, id LIMIT ?)",
                (over,),
            ).rowcount
        return int(count)

    def list_audit(
        self,
        *,
        environment: str | None = None,
        app: str | None = None,
        since: datetime | None = None,
        after_id: int = 0,
        limit: int = 100,
    ) -> list[AuditEntry]:
        if limit < 0:
            raise InvalidInput(f"limit must be 0 or more, got {limit}")
        where = "id > ?"
        params: list[Any] = [after_id]
        if environment is not None:
            where += " AND environment = ?"
            params.append(environment)
        if app is not None:
            where += " AND app = ?"
            params.append(app)
        if since is not None:
            where += " AND at >= ?"
            params.append(_to_db(since))
        order = "DESC" if after_id <= 0 else "ASC"
        with self._tx("read the audit log", write=False) as conn:
            rows = conn.execute(
                f"SELECT {_AUDIT_COLUMNS} FROM audit WHERE {where} ORDER BY id {order} LIMIT ?",
                (*params, limit),
            ).fetchall()
        if order == "DESC":
            rows.reverse()
        return [_audit(row) for row in rows]


_TOKEN_COLUMNS = (
    "name, role, environments, token_id, token_hash, created_at, created_by, revoked_at, revoked_by"
)
_AUDIT_COLUMNS = (
    "id, at, token, peer, claimed, method, path, environment, app, status, outcome, release, detail"
)


def _to_db(moment: datetime) -> str:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidInput(
            f"the store takes timezone-aware datetimes, got naive {moment.isoformat()}"
        )
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _from_db(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _insert_token(conn: sqlite3.Connection, record: TokenRecord) -> None:
    conn.execute(
        f"INSERT INTO tokens ({_TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL)",
        (
            record.name,
            record.role.value,
            ",".join(sorted(record.environments)),
            record.token_id,
            record.token_hash,
            _to_db(record.created_at),
            record.created_by,
        ),
    )


def _token_where(conn: sqlite3.Connection, where: str, *params: Any) -> list[TokenRecord]:
    rows = conn.execute(
        f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE {where} ORDER BY id", params
    ).fetchall()
    return [_token(row) for row in rows]


def _token(row: tuple[Any, ...]) -> TokenRecord:
    name, role, envs, tid, thash, created_at, created_by, revoked_at, revoked_by = row
    return TokenRecord(
        name=name,
        role=Role(role),
        environments=frozenset(e for e in envs.split(",") if e),
        token_id=tid,
        token_hash=thash,
        created_at=_from_db(created_at),
        created_by=created_by,
        revoked_at=None if revoked_at is None else _from_db(revoked_at),
        revoked_by=revoked_by,
    )


def _audit(row: tuple[Any, ...]) -> AuditEntry:
    eid, at, token, peer, claimed, method, path, env, app, status, outcome, release, detail = row
    return AuditEntry(
        id=eid,
        at=_from_db(at),
        token=token,
        peer=peer,
        claimed=claimed,
        method=method,
        path=path,
        environment=env,
        app=app,
        status=status,
        outcome=outcome,
        release=release,
        detail=detail,
    )


class FakeAccessStore:
    """``AccessStore`` in memory, for tests of the API over a fake service."""

    def __init__(self, *, audit: AuditSettings | None = None) -> None:
        self.tokens: list[TokenRecord] = []
        self.audit: list[AuditEntry] = []
        self.retention = audit or AuditSettings()
        self._next_id = 1

    def add_token(self, record: TokenRecord) -> TokenRecord:
        if any(t.active and t.name == record.name for t in self.tokens):
            raise Conflict(_NAME_TAKEN.format(name=record.name))
        if any(t.token_hash == record.token_hash for t in self.tokens):
            raise Conflict("that token is stored already")
        self.tokens.append(record)
        return record

    def import_token(self, record: TokenRecord) -> bool:
        if any(t.token_hash == record.token_hash for t in self.tokens):
            return False
        taken = {t.name for t in self.tokens if t.active}
        self.tokens.append(replace(record, name=_free_name(taken, record.name)))
        return True

    def token_by_hash(self, token_hash: str) -> TokenRecord | None:
        return next((t for t in self.tokens if t.token_hash == token_hash), None)

    def token_by_id(self, token_id: str) -> TokenRecord | None:
        return next((t for t in self.tokens if t.token_id == token_id), None)

    def list_tokens(self, *, revoked: bool = False) -> list[TokenRecord]:
        active = sorted((t for t in self.tokens if t.active), key=lambda t: t.name)
        return active + ([t for t in self.tokens if not t.active] if revoked else [])

    def revoke_token(self, name: str, *, by: str, now: datetime) -> TokenRecord:
        for i, token in enumerate(self.tokens):
            if token.active and token.name == name:
                if _last_admin(self.tokens, name):
                    raise Conflict(_LAST_ADMIN.format(name=name))
                self.tokens[i] = replace(token, revoked_at=now, revoked_by=by)
                return self.tokens[i]
        raise NotFound(f"no active token named {name!r}; `kiln token ls` lists them")

    def append_audit(self, entry: NewAuditEntry, *, now: datetime) -> AuditEntry:
        stored = AuditEntry(id=self._next_id, at=now, **vars(entry))
        self._next_id += 1
        self.audit.append(stored)
        if entry.outcome == REFUSED:
            cutoff = now - timedelta(seconds=self.retention.refused_max_age)
            refused = sorted(
                (e for e in self.audit if e.outcome == REFUSED and e.at >= cutoff),
                key=lambda e: (e.at, e.id),
            )
            kept = {e.id for e in refused[-self.retention.refused_max_entries :]}
            self.audit = [e for e in self.audit if e.outcome != REFUSED or e.id in kept]
        return stored

    def list_audit(
        self,
        *,
        environment: str | None = None,
        app: str | None = None,
        since: datetime | None = None,
        after_id: int = 0,
        limit: int = 100,
    ) -> list[AuditEntry]:
        found = [
            e
            for e in self.audit
            if e.id > after_id
            and environment in (None, e.environment)
            and app in (None, e.app)
            and (since is None or e.at >= since)
        ]
        return found[-limit:] if after_id <= 0 else found[:limit]

    def close(self) -> None:
        pass
