"""Sealed secret versions in the SQLite store (mixed into ``SqliteStore``).

The store keeps ciphertext only; sealing and opening is ``kiln.store.vault.SecretVault``'s.
Versions are numbered 1, 2, 3 … per app, environment and name, inside the write transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from kiln.errors import InvalidInput, NotFound
from kiln.model import AppKey, SealedSecret, SecretVersion

Sealer = Callable[[int], tuple[str, bytes, bytes]]
"""Given the new version number: (key id, nonce, ciphertext) — the version is associated data."""

_COLUMNS = "environment, app, name, version, key_id, nonce, ciphertext, created_at, created_by"


class SecretRows:
    # Provided by SqliteStore.
    def _write(self, doing: str) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def _read(self, doing: str) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def add_secret_version(
        self, key: AppKey, name: str, *, seal: Sealer, created_by: str, now: datetime
    ) -> SecretVersion:
        """Append version N+1 of ``name``, sealed by ``seal(N+1)``, in one transaction."""
        at = _stamp(now)
        with self._write(f"store a new version of secret {name} of {key}") as conn:
            version = int(
                conn.execute(
                    "SELECT COALESCE(MAX(version), 0) + 1 FROM secrets "
                    "WHERE environment = ? AND app = ? AND name = ?",
                    (key.environment, key.app, name),
                ).fetchone()[0]
            )
            key_id, nonce, ciphertext = seal(version)
            conn.execute(
                f"INSERT INTO secrets ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key.environment,
                    key.app,
                    name,
                    version,
                    key_id,
                    nonce,
                    ciphertext,
                    at,
                    created_by,
                ),
            )
        return SecretVersion(
            key=key,
            name=name,
            version=version,
            created_at=datetime.fromisoformat(at),
            created_by=created_by,
            key_id=key_id,
        )

    def secret_versions(self, key: AppKey, name: str | None = None) -> list[SecretVersion]:
        """Every version of the app's secrets (of ``name`` only when given), by name and version."""
        query = f"SELECT {_COLUMNS} FROM secrets WHERE environment = ? AND app = ?"
        args: tuple[str, ...] = (key.environment, key.app)
        if name is not None:
            query += " AND name = ?"
            args += (name,)
        with self._read(f"list the secrets of {key}") as conn:
            rows = conn.execute(query + " ORDER BY name, version", args).fetchall()
        return [_sealed(row).meta for row in rows]

    def sealed_secret(self, key: AppKey, name: str, version: int) -> SealedSecret:
        with self._read(f"read secret {name} of {key}") as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM secrets "
                "WHERE environment = ? AND app = ? AND name = ? AND version = ?",
                (key.environment, key.app, name, version),
            ).fetchone()
        if row is None:
            raise NotFound(
                f"{key} has no version {version} of secret {name}; `kiln secret ls {key}`"
                " lists what there is"
            )
        return _sealed(row)

    def delete_secret(self, key: AppKey, name: str) -> int:
        """Delete every version of ``name``; how many there were (``NotFound`` for none)."""
        with self._write(f"delete secret {name} of {key}") as conn:
            count = conn.execute(
                "DELETE FROM secrets WHERE environment = ? AND app = ? AND name = ?",
                (key.environment, key.app, name),
            ).rowcount
        if not count:
            raise NotFound(f"{key} has no secret {name}; `kiln secret ls {key}` lists them")
        return int(count)

    def sealed_secrets_not_under(self, key_id: str, *, limit: int) -> list[SealedSecret]:
        """Up to ``limit`` versions sealed under another master key than ``key_id``."""
        with self._read("list secrets to re-encrypt") as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM secrets WHERE key_id != ? LIMIT ?", (key_id, limit)
            ).fetchall()
        return [_sealed(row) for row in rows]

    def reseal_secret(
        self, old: SealedSecret, *, key_id: str, nonce: bytes, ciphertext: bytes
    ) -> bool:
        """Replace one version's ciphertext if it is still sealed as ``old`` (compare and swap)."""
        meta = old.meta
        with self._write(f"re-encrypt secret {meta.name} of {meta.key}") as conn:
            changed = conn.execute(
                "UPDATE secrets SET key_id = ?, nonce = ?, ciphertext = ? WHERE environment = ?"
                " AND app = ? AND name = ? AND version = ? AND key_id = ? AND nonce = ?",
                (
                    key_id,
                    nonce,
                    ciphertext,
                    meta.key.environment,
                    meta.key.app,
                    meta.name,
                    meta.version,
                    meta.key_id,
                    old.nonce,
                ),
            ).rowcount
        return bool(changed)

    def secret_key_ids(self) -> set[str]:
        """The master keys some stored version is sealed under."""
        with self._read("list master keys in use") as conn:
            return {str(row[0]) for row in conn.execute("SELECT DISTINCT key_id FROM secrets")}


def _stamp(now: datetime) -> str:
    if now.tzinfo is None:
        raise InvalidInput(f"the store takes timezone-aware datetimes, got {now.isoformat()}")
    return now.astimezone(UTC).isoformat(timespec="microseconds")


def _sealed(row: tuple[Any, ...]) -> SealedSecret:
    environment, app, name, version, key_id, nonce, ciphertext, created_at, created_by = row
    return SealedSecret(
        meta=SecretVersion(
            key=AppKey(str(environment), str(app)),
            name=str(name),
            version=int(str(version)),
            created_at=datetime.fromisoformat(str(created_at)).astimezone(UTC),
            created_by=str(created_by),
            key_id=str(key_id),
        ),
        nonce=bytes(nonce),
        ciphertext=bytes(ciphertext),
    )
