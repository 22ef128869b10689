"""Refused calls (401, 403) in the audit log expire by count and age; changes never do."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from kiln.config.file import AuditSettings, load_file_settings
from kiln.errors import InvalidInput
from kiln.model.access import NewAuditEntry
from kiln.store.access import AccessStore, FakeAccessStore, SqliteAccessStore
from tests.store.support import T0

KEEP = 100  # the smallest count the settings allow
DAY = 24 * 3600.0


def call(path: str, status: int) -> NewAuditEntry:
    outcome = "ok" if status < 400 else "refused" if status in (401, 403) else "failed"
    return NewAuditEntry(
        token=None if status == 401 else "ci",
        peer="tcp 127.0.0.1:40000",
        claimed="",
        method="POST",
        path=path,
        environment=None,
        app=None,
        status=status,
        outcome=outcome,
    )


MakeStore = Callable[..., AccessStore]


@pytest.fixture(params=["sqlite", "fake"])
def make_store(request: pytest.FixtureRequest, db_path: Path) -> Iterator[MakeStore]:
    opened: list[AccessStore] = []

    def make(**retention: float) -> AccessStore:
        settings = AuditSettings.model_validate(retention)
        store: AccessStore = (
            SqliteAccessStore(db_path, audit=settings)
            if request.param == "sqlite"
            else FakeAccessStore(audit=settings)
        )
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def everything(store: AccessStore) -> list[tuple[str, int]]:
    return [(e.path, e.status) for e in store.list_audit(limit=100_000)]


def test_a_flood_of_refused_calls_keeps_only_the_newest_and_every_change(
    make_store: MakeStore,
) -> None:
    store = make_store(refused_max_entries=KEEP)
    store.append_audit(call("/v1/deploy", 201), now=T0)
    for n in range(3 * KEEP):
        store.append_audit(call(f"/v1/refused/{n}", 401 if n % 2 else 403), now=T0)
        if n % 50 == 0:
            store.append_audit(call(f"/v1/change/{n}", 500 if n % 100 else 202), now=T0)
    entries = everything(store)
    refused = [path for path, status in entries if status in (401, 403)]
    assert refused == [f"/v1/refused/{n}" for n in range(2 * KEEP, 3 * KEEP)]
    changes = [path for path, status in entries if status not in (401, 403)]
    assert changes == ["/v1/deploy"] + [f"/v1/change/{n}" for n in range(0, 3 * KEEP, 50)]


def test_refused_calls_older_than_the_age_go_and_old_changes_stay(make_store: MakeStore) -> None:
    store = make_store(refused_max_age=7 * DAY)
    store.append_audit(call("/v1/old-change", 201), now=T0)
    store.append_audit(call("/v1/old-refusal", 401), now=T0)
    store.append_audit(call("/v1/recent-refusal", 403), now=T0 + timedelta(days=5))
    assert [p for p, _ in everything(store)] == [
        "/v1/old-change",
        "/v1/old-refusal",
        "/v1/recent-refusal",
    ]
    # The next refusal, eight days on: the first one is past its week, the second is not.
    store.append_audit(call("/v1/new-refusal", 401), now=T0 + timedelta(days=8))
    assert [p for p, _ in everything(store)] == [
        "/v1/old-change",
        "/v1/recent-refusal",
        "/v1/new-refusal",
    ]


def test_a_lower_limit_applies_to_what_an_earlier_kiln_kept(db_path: Path) -> None:
    before = SqliteAccessStore(db_path, audit=AuditSettings(refused_max_entries=1000))
    for n in range(300):
        before.append_audit(call(f"/v1/refused/{n}", 401), now=T0)
    before.close()
    after = SqliteAccessStore(db_path, audit=AuditSettings(refused_max_entries=KEEP))
    try:
        assert len(everything(after)) == 300  # nothing is trimmed before a refusal comes
        after.append_audit(call("/v1/refused/last", 401), now=T0)
        paths = [p for p, _ in everything(after)]
        assert len(paths) == KEEP and paths[-1] == "/v1/refused/last"
        assert paths[0] == f"/v1/refused/{300 - KEEP + 1}"
    finally:
        after.close()


def test_only_refused_entries_can_be_deleted_even_by_hand(db_path: Path) -> None:
    store = SqliteAccessStore(db_path)
    store.append_audit(call("/v1/deploy", 201), now=T0)
    store.append_audit(call("/v1/deploy", 500), now=T0)
    store.append_audit(call("/v1/deploy", 403), now=T0)
    store.close()
    conn = sqlite3.connect(db_path)
    try:
        for outcome in ("ok", "failed"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                conn.execute("DELETE FROM audit WHERE outcome = ?", (outcome,))
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("UPDATE audit SET outcome = 'refused'")
        conn.execute("DELETE FROM audit WHERE outcome = 'refused'")
        assert conn.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == 2
    finally:
        conn.close()


def test_the_retention_is_read_from_the_settings_file_and_checked(tmp_path: Path) -> None:
    settings = tmp_path / "settings.yaml"
    assert load_file_settings(settings).audit == AuditSettings()  # defaults: 10,000 and 30 days
    assert AuditSettings().refused_max_entries == 10_000
    assert AuditSettings().refused_max_age == 30 * DAY
    settings.write_text("audit: {refused_max_entries: 500, refused_max_age: 86400}\n")
    assert load_file_settings(settings).audit == AuditSettings(
        refused_max_entries=500, refused_max_age=DAY
    )
    settings.write_text("audit: {refused_max_entries: 5, refused_max_age: 0}\n")
    with pytest.raises(InvalidInput) as caught:
        load_file_settings(settings)
    assert "audit.refused_max_entries" in caught.value.message
    assert "audit.refused_max_age" in caught.value.message
