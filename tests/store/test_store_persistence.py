"""What survives: close and reopen, migrations, a newer schema, a SIGKILL mid-write."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kiln.errors import PermanentFailure
from kiln.model import NewEvent, RolloutState
from kiln.store import SqliteStore
from kiln.store.migrations import MIGRATIONS, SCHEMA_VERSION, migrate, schema_version

from .support import API, WEB, at, deploy


def test_a_second_store_on_the_same_file_sees_everything(db_path: Path) -> None:
    first = SqliteStore(db_path)
    _, r1 = deploy(first, WEB, version=1, now=at(0))
    first.finish_rollout(r1.id, RolloutState.SUCCEEDED, "ok", now=at(1))
    deploy(first, WEB, version=2, now=at(2))
    deploy(first, API, version=1, now=at(3))
    first.set_scale(API, 4, now=at(4))
    first.append_event(NewEvent(key=WEB, kind="rollout.started", reason="v2"), now=at(5))
    before = (
        first.list_apps(),
        first.list_releases(WEB),
        first.list_rollouts(WEB),
        first.list_events(),
    )
    first.close()

    reopened = SqliteStore(db_path)
    try:
        after = (
            reopened.list_apps(),
            reopened.list_releases(WEB),
            reopened.list_rollouts(WEB),
            reopened.list_events(),
        )
        assert after == before
        assert deploy(reopened, WEB, version=3)[0].number == 3
    finally:
        reopened.close()


def test_opening_again_runs_no_migration_twice(db_path: Path) -> None:
    SqliteStore(db_path).close()
    SqliteStore(db_path).close()
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        assert schema_version(conn) == SCHEMA_VERSION == len(MIGRATIONS)
        assert migrate(conn, db_path) == SCHEMA_VERSION
    finally:
        conn.close()


def test_migrations_apply_in_order_each_in_its_own_transaction(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    try:
        steps = (
            ("CREATE TABLE a (x INTEGER)",),
            ("ALTER TABLE a ADD COLUMN y TEXT", "INSERT INTO a (x, y) VALUES (1, 'one')"),
        )
        assert migrate(conn, tmp_path / "m.db", steps) == 2
        assert conn.execute("SELECT x, y FROM a").fetchall() == [(1, "one")]

        broken = (*steps, ("CREATE TABLE b (x)", "THIS IS NOT SQL"))
        with pytest.raises(sqlite3.OperationalError):
            migrate(conn, tmp_path / "m.db", broken)
        # The failed step left nothing behind: version 2, no table b.
        assert schema_version(conn) == 2
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "b" not in tables
    finally:
        conn.close()


def test_a_store_written_by_a_newer_kiln_asks_for_an_upgrade(db_path: Path) -> None:
    SqliteStore(db_path).close()
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        future = (*MIGRATIONS, ("CREATE TABLE from_the_future (x)",))
        migrate(conn, db_path, future)
    finally:
        conn.close()
    with pytest.raises(PermanentFailure, match=r"newer kiln.*Upgrade kiln") as caught:
        SqliteStore(db_path)
    assert str(db_path) in caught.value.message
    assert f"version {SCHEMA_VERSION + 1}" in caught.value.message


def test_a_file_that_is_not_a_database_is_a_clear_error(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"this is not sqlite, " * 100)
    with pytest.raises(PermanentFailure, match=str(db_path)):
        SqliteStore(db_path)


_WRITER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    from pathlib import Path
    from kiln.model import AppKey, NewEvent
    from kiln.store import SqliteStore

    store = SqliteStore(Path(sys.argv[1]))
    key = AppKey("dev", "web")
    for i in range(200_000):  # bounded: the parent kills us long before
        event = store.append_event(
            NewEvent(key=key, kind="kiln.started", reason=f"tick {i}"), now=datetime.now(UTC)
        )
        print(event.id, flush=True)
    """
)


def test_killing_kiln_mid_write_loses_nothing_acknowledged(db_path: Path) -> None:
    SqliteStore(db_path).close()
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(db_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acknowledged: list[int] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while len(acknowledged) < 300 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.endswith("\n"):
                acknowledged.append(int(line))
    finally:
        proc.send_signal(signal.SIGKILL)
        _, stderr = proc.communicate(timeout=30)
    assert len(acknowledged) >= 300, f"the writer stopped early: {stderr}"
    assert proc.returncode == -signal.SIGKILL

    reopened = SqliteStore(db_path)
    try:
        stored = {e.id for e in reopened.list_events(limit=1_000_000)}
    finally:
        reopened.close()
    assert set(acknowledged) <= stored
