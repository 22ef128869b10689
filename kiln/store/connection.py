"""Opening kiln's SQLite file, and what its errors mean: one place for every store on it.

The controller's store (``sqlite.SqliteStore``) and the API's access store
(``access.SqliteAccessStore``) each hold their own connection to the same file, opened the same
way: WAL (refused if the file system cannot do it), foreign keys on, migrated to this kiln's
schema.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kiln.errors import Conflict, PermanentFailure, TemporaryFailure
from kiln.store.migrations import migrate

BUSY_TIMEOUT_MS = 5_000


def open_connection(path: Path) -> sqlite3.Connection:
    """A migrated connection to the store at ``path`` (its directory made 0700 if missing)."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise PermanentFailure(
            f"cannot create the directory of the kiln store {path.parent}: {exc.strerror}"
        ) from exc
    try:
        # isolation_level=None: no implicit transactions; every write says BEGIN IMMEDIATE
        # itself, so the write lock is taken up front and reads inside the transaction (the
        # next release number) cannot go stale.
        conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
        )
    except sqlite3.Error as exc:
        raise PermanentFailure(f"cannot open the kiln store {path}: {exc}") from exc
    try:
        with mapped_errors(path, "open"):
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise PermanentFailure(
                    f"the kiln store {path} cannot use write-ahead logging "
                    f"(journal mode stayed {mode!r}); put KILN_HOME on a local disk"
                )
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


@contextmanager
def mapped_errors(path: Path, doing: str) -> Iterator[None]:
    """Turn sqlite3 errors into kiln errors that say what the store was doing."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        raise Conflict(f"the kiln store refused to {doing}: {exc}") from exc
    except sqlite3.OperationalError as exc:
        raise TemporaryFailure(
            f"the kiln store {path} could not {doing}: {exc}; kiln retries"
        ) from exc
    except sqlite3.Error as exc:
        raise PermanentFailure(f"the kiln store {path} could not {doing}: {exc}") from exc


class StoreOnEventLoop(RuntimeError):
    """A store connection was used on the thread it must never run on (the event loop's).

    A bug, not an operational failure: the caller must go through the async facade
    (``kiln.store.aio``), which runs every call on the store's own thread."""


class ThreadGuard:
    """The one thread a connection must never be used from, once ``forbid`` names it.

    The async facade names the event loop's thread when it is first used with the guard on
    (tests turn it on), so a store call left on the loop fails loudly instead of blocking it."""

    def __init__(self) -> None:
        self.forbidden: int | None = None

    def forbid(self, thread_id: int | None) -> None:
        self.forbidden = thread_id

    def check(self, path: Path, doing: str) -> None:
        if self.forbidden is not None and threading.get_ident() == self.forbidden:
            raise StoreOnEventLoop(
                f"the kiln store {path} was asked to {doing} on the event loop's thread; "
                "await the store's async facade (kiln.store.aio) instead"
            )
