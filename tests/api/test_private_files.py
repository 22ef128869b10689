"""Files under KILN_HOME that only their owner may read: installation id, store, logs, token."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from kiln.api import load_or_create_token
from kiln.config import (
    Settings,
    make_state_private,
    read_or_create_installation_id,
    refuse_unless_private,
)
from kiln.errors import InvalidInput


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_installation_id_is_created_private_once_and_then_reused(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    first = read_or_create_installation_id(settings)
    assert len(first) == 32 and int(first, 16) >= 0
    assert mode(settings.installation_id_path) == 0o600
    assert read_or_create_installation_id(settings) == first
    assert [p.name for p in settings.home.iterdir()] == ["installation-id"]  # no temp file


def test_a_damaged_installation_id_is_refused_not_replaced(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    settings.installation_id_path.write_text("not-an-id\n")
    with pytest.raises(InvalidInput, match="does not hold a kiln installation id"):
        read_or_create_installation_id(settings)
    assert settings.installation_id_path.read_text() == "not-an-id\n"


def test_a_file_others_can_read_is_refused_with_the_chmod_to_run(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("secret\n")
    os.chmod(path, 0o644)
    with pytest.raises(InvalidInput) as caught:
        refuse_unless_private(path)
    assert f"chmod 600 {path}" in caught.value.message
    assert "0644" in caught.value.message
    os.chmod(path, 0o600)
    refuse_unless_private(path)


def test_the_server_refuses_a_token_file_others_can_read(tmp_path: Path) -> None:
    path = tmp_path / "token"
    token = load_or_create_token(path)
    os.chmod(path, 0o640)
    with pytest.raises(InvalidInput, match=f"chmod 600 {path}"):
        load_or_create_token(path)
    os.chmod(path, 0o600)
    assert load_or_create_token(path) == token


def test_store_and_logs_are_private_and_sqlite_keeps_its_wal_private(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    settings.log_dir.mkdir(parents=True, mode=0o755)
    old_log = settings.log_dir / "server.log"
    old_log.write_text("from an older kiln\n")
    os.chmod(old_log, 0o644)

    make_state_private(settings)

    assert mode(settings.db_path) == 0o600
    assert mode(old_log) == 0o600
    assert mode(settings.log_dir) == 0o700
    with sqlite3.connect(settings.db_path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE t (x)")
        db.execute("INSERT INTO t VALUES (1)")
        for suffix in ("-wal", "-shm"):
            side = settings.db_path.with_name(settings.db_path.name + suffix)
            assert mode(side) == 0o600, suffix
    db.close()


def test_make_state_private_narrows_an_existing_store(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    settings.db_path.write_bytes(b"")
    os.chmod(settings.db_path, 0o664)
    make_state_private(settings)
    assert mode(settings.db_path) == 0o600
