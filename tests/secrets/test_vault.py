"""The secret vault over a real SQLite store: AES-256-GCM at rest, versions, refusals, rotation."""

from __future__ import annotations

import base64
import sqlite3
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kiln.errors import InvalidInput, NotFound
from kiln.model import AppKey
from kiln.store.keyring import FILE_NAME, key_id, load_keyring, new_key
from kiln.store.sqlite import SqliteStore
from kiln.store.vault import SecretUnreadable, SecretVault

WEB = AppKey("dev", "web")
API = AppKey("dev", "api")
NOW = datetime(2026, 12, 1, tzinfo=UTC)
VALUE = b"hunter2-correct-horse-battery"


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "kiln.db")


@pytest.fixture
def vault(store: SqliteStore, tmp_path: Path) -> SecretVault:
    return SecretVault(store, home=tmp_path)


def test_a_value_is_sealed_versioned_and_read_back(vault: SecretVault, tmp_path: Path) -> None:
    first, made = vault.set(WEB, "DB_PASSWORD", VALUE, who="ann", now=NOW)
    assert made and first.version == 1
    again, made = vault.set(WEB, "DB_PASSWORD", VALUE, who="ann", now=NOW)
    assert not made and again.version == 1  # same value: no new version
    second, made = vault.set(WEB, "DB_PASSWORD", b"new", who="bob", now=NOW)
    assert made and second.version == 2
    assert vault.reveal(WEB, "DB_PASSWORD", 1) == VALUE
    assert vault.reveal(WEB, "DB_PASSWORD", 2) == b"new"
    assert vault.newest(WEB) == {"DB_PASSWORD": 2}
    assert [v.created_by for v in vault.versions(WEB)] == ["ann", "bob"]
    key_file = tmp_path / FILE_NAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_the_value_is_nowhere_in_the_database_file_or_its_wal(
    vault: SecretVault, store: SqliteStore, tmp_path: Path
) -> None:
    vault.set(WEB, "DB_PASSWORD", VALUE, who="ann", now=NOW)
    for path in tmp_path.glob("kiln.db*"):
        assert VALUE not in path.read_bytes(), path
    store.close()
    assert VALUE not in (tmp_path / "kiln.db").read_bytes()


def test_tampered_ciphertext_is_refused_with_a_clear_error(
    vault: SecretVault, tmp_path: Path
) -> None:
    vault.set(WEB, "DB_PASSWORD", VALUE, who="ann", now=NOW)
    with sqlite3.connect(tmp_path / "kiln.db") as db:
        (blob,) = db.execute("SELECT ciphertext FROM secrets").fetchone()
        flipped = bytes([blob[0] ^ 1]) + blob[1:]
        db.execute("UPDATE secrets SET ciphertext = ?", (flipped,))
    with pytest.raises(SecretUnreadable, match="altered or copied from another secret"):
        vault.reveal(WEB, "DB_PASSWORD", 1)


def test_a_row_copied_to_another_secret_does_not_decrypt(
    vault: SecretVault, tmp_path: Path
) -> None:
    vault.set(WEB, "DB_PASSWORD", VALUE, who="ann", now=NOW)
    vault.set(API, "TOKEN", b"harmless", who="ann", now=NOW)
    with sqlite3.connect(tmp_path / "kiln.db") as db:
        nonce, blob = db.execute(
            "SELECT nonce, ciphertext FROM secrets WHERE app = 'web'"
        ).fetchone()
        db.execute("UPDATE secrets SET nonce = ?, ciphertext = ? WHERE app = 'api'", (nonce, blob))
    with pytest.raises(SecretUnreadable, match="copied from another secret"):
        vault.reveal(API, "TOKEN", 1)
    assert vault.reveal(WEB, "DB_PASSWORD", 1) == VALUE


def test_a_wrong_master_key_is_named_as_such(store: SqliteStore, tmp_path: Path) -> None:
    SecretVault(store, home=tmp_path).set(WEB, "DB_PASSWORD", VALUE, who="ann", now=NOW)
    other = base64.b64encode(new_key()).decode()
    wrong = SecretVault(store, load_keyring(tmp_path, {"KILN_MASTER_KEY": other}))
    with pytest.raises(SecretUnreadable, match="master key is wrong"):
        wrong.reveal(WEB, "DB_PASSWORD", 1)


def test_a_master_key_file_others_can_read_is_refused(vault: SecretVault, tmp_path: Path) -> None:
    vault.set(WEB, "A", b"x", who="ann", now=NOW)
    (tmp_path / FILE_NAME).chmod(0o644)
    with pytest.raises(InvalidInput, match="chmod 600"):
        load_keyring(tmp_path, {})


def test_rotation_re_encrypts_everything_and_retires_the_old_key(
    vault: SecretVault, store: SqliteStore, tmp_path: Path
) -> None:
    for i in range(5):
        vault.set(WEB, f"S{i}", f"value {i}".encode(), who="ann", now=NOW)
    old = vault.current_key_id
    rotation = vault.rotate()
    assert rotation.reencrypted == 5 and rotation.retired == (old,)
    assert store.secret_key_ids() == {rotation.key_id} != {old}
    fresh = SecretVault(store, home=tmp_path)  # a restarted kiln reads the new key file
    assert [fresh.reveal(WEB, f"S{i}", 1) for i in range(5)] == [
        f"value {i}".encode() for i in range(5)
    ]
    assert old not in load_keyring(tmp_path, {}).keys


def test_a_rotation_cut_short_leaves_everything_readable_and_the_next_one_finishes(
    vault: SecretVault, store: SqliteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(3):
        vault.set(WEB, f"S{i}", f"value {i}".encode(), who="ann", now=NOW)
    original = store.reseal_secret
    calls = 0

    def crash_after_one(*args: object, **kwargs: object) -> bool:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise KeyboardInterrupt("killed mid-rotation")
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "reseal_secret", crash_after_one)
    with pytest.raises(KeyboardInterrupt):
        vault.rotate()
    monkeypatch.setattr(store, "reseal_secret", original)
    restarted = SecretVault(store, home=tmp_path)
    assert len(store.secret_key_ids()) == 2  # half under each key, both keys kept in the file
    assert [restarted.reveal(WEB, f"S{i}", 1) for i in range(3)] == [
        f"value {i}".encode() for i in range(3)
    ]
    rotation = restarted.rotate()
    assert store.secret_key_ids() == {rotation.key_id}
    assert len(load_keyring(tmp_path, {}).keys) == 1


def test_keys_from_the_environment_rotate_to_the_first_one(store: SqliteStore) -> None:
    old, new = new_key(), new_key()
    env = {"KILN_MASTER_KEY": base64.b64encode(old).decode()}
    SecretVault(store, load_keyring(Path("/nonexistent"), env)).set(
        WEB, "A", b"x", who="ann", now=NOW
    )
    both = ",".join(base64.b64encode(k).decode() for k in (new, old))
    vault = SecretVault(store, load_keyring(Path("/nonexistent"), {"KILN_MASTER_KEY": both}))
    rotation = vault.rotate()
    assert rotation.key_id == key_id(new) and rotation.kept_in_env == (key_id(old),)
    only_new = {"KILN_MASTER_KEY": base64.b64encode(new).decode()}
    assert SecretVault(store, load_keyring(Path("/x"), only_new)).reveal(WEB, "A", 1) == b"x"


def test_bad_input_is_refused_and_changes_nothing(vault: SecretVault) -> None:
    with pytest.raises(InvalidInput, match="letters, digits"):
        vault.set(WEB, "1-bad", b"x", who="ann", now=NOW)
    with pytest.raises(InvalidInput, match="empty"):
        vault.set(WEB, "EMPTY", b"", who="ann", now=NOW)
    with pytest.raises(InvalidInput, match="at most 64 KiB"):
        vault.set(WEB, "BIG", b"x" * (64 * 1024 + 1), who="ann", now=NOW)
    with pytest.raises(InvalidInput, match="KILN_MASTER_KEY"):
        load_keyring(Path("/x"), {"KILN_MASTER_KEY": base64.b64encode(b"short").decode()})
    assert vault.versions(WEB) == []
    with pytest.raises(NotFound):
        vault.reveal(WEB, "NOPE", 1)
    with pytest.raises(NotFound):
        vault.remove(WEB, "NOPE")
