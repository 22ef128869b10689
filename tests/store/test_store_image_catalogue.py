"""The image catalogue: a tag means one digest forever (only `latest` moves), in the code and
in the file itself."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import pytest

from kiln.errors import Conflict
from kiln.model.image import CatalogueEntry
from kiln.store import SqliteStore

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64


def entry(tag: str, digest: str, repository: str = "web") -> CatalogueEntry:
    return CatalogueEntry(
        repository=repository,
        tag=tag,
        digest=digest,
        image_id="sha256:" + digest[-1] * 64,
        size=2048,
        labels={"org.opencontainers.image.revision": "abc123"},
        created_at=datetime(2026, 12, 1, tzinfo=UTC),
        created_by="ann",
    )


def test_a_recorded_tag_refuses_another_digest_naming_both(store: SqliteStore) -> None:
    store.images.record(entry("1.4.2", A))
    assert store.images.record(entry("1.4.2", A)).digest == A  # the same again is fine
    with pytest.raises(Conflict) as refused:
        store.images.record(entry("1.4.2", B))
    assert A in refused.value.message and B in refused.value.message
    assert store.images.get("web", "1.4.2") == entry("1.4.2", A)


def test_latest_moves_and_forget_drops_every_tag_of_a_digest(store: SqliteStore) -> None:
    store.images.record(entry("latest", A))
    store.images.record(entry("latest", B))
    store.images.record(entry("1.0", B))
    assert store.images.get("web", "latest").digest == B  # type: ignore[union-attr]
    assert store.images.forget("web", B) == 2
    assert store.images.list() == []


def test_the_file_itself_refuses_moving_an_immutable_tag(store: SqliteStore, db_path) -> None:  # type: ignore[no-untyped-def]
    store.images.record(entry("2.0", A))
    conn = sqlite3.connect(db_path)
    with pytest.raises(sqlite3.IntegrityError, match="one digest forever"):
        conn.execute("UPDATE image_tags SET digest = ? WHERE tag = '2.0'", (B,))
    conn.close()
