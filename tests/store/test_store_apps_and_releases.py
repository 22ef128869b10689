"""Apps and releases: numbering, immutability, scale/stop, delete."""

from __future__ import annotations

import sqlite3
import stat
from datetime import datetime
from pathlib import Path

import pytest

from kiln.errors import InvalidInput, NotFound
from kiln.model import AppKey, ReleaseOrigin
from kiln.spec import AppSpec
from kiln.store import SqliteStore

from .support import API, PROD_WEB, T0, WEB, at, deploy, digest


def test_store_creates_its_directory_private(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "home" / "kiln.db"
    s = SqliteStore(path)
    s.close()
    assert path.exists()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_store_file_is_in_wal_mode(store: SqliteStore, db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_release_numbers_count_up_per_app(store: SqliteStore) -> None:
    numbers = [deploy(store, WEB, version=v)[0].number for v in (1, 2, 3)]
    assert numbers == [1, 2, 3]


def test_release_numbers_are_independent_across_apps_and_environments(store: SqliteStore) -> None:
    deploy(store, WEB, version=1)
    deploy(store, WEB, version=2)
    assert deploy(store, API, version=1)[0].number == 1
    assert deploy(store, PROD_WEB, version=1)[0].number == 1
    assert deploy(store, WEB, version=3)[0].number == 3
    assert [r.number for r in store.list_releases(API)] == [1]


def test_first_release_creates_the_app_targeting_it(store: SqliteStore) -> None:
    assert store.get_app(WEB) is None
    deploy(store, WEB, scale=3, now=at(5))
    app = store.get_app(WEB)
    assert app is not None
    assert (app.scale, app.target_release, app.stable_release, app.stopped) == (3, 1, None, False)
    assert app.created_at == at(5)
    assert store.list_apps() == [app]


def test_release_round_trips_with_spec_and_aware_datetimes(store: SqliteStore) -> None:
    release, _ = deploy(store, WEB, version=7, now=at(1.25))
    stored = store.get_release(WEB, 1)
    assert stored == release
    assert stored.spec == AppSpec(app="web", image="demo:7", port=8080, instances=2)
    assert stored.digest == digest(7)
    assert stored.created_at == at(1.25)
    assert stored.created_at.tzinfo is not None


def test_releases_are_listed_oldest_first(store: SqliteStore) -> None:
    made = [deploy(store, WEB, version=v)[0] for v in (1, 2, 3)]
    assert store.list_releases(WEB) == made


def test_a_raw_update_of_a_release_is_aborted_by_the_database(
    store: SqliteStore, db_path: Path
) -> None:
    deploy(store, WEB)
    conn = sqlite3.connect(db_path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE releases SET digest = 'sha256:evil' WHERE number = 1")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM releases WHERE number = 1")
        conn.rollback()
    finally:
        conn.close()
    assert store.get_release(WEB, 1).digest == digest(1)


def test_events_cannot_be_rewritten_or_deleted(store: SqliteStore, db_path: Path) -> None:
    from kiln.model import NewEvent

    store.append_event(NewEvent(key=WEB, kind="release.created", reason="r"), now=T0)
    conn = sqlite3.connect(db_path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE events SET reason = 'nothing happened'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM events")
        conn.rollback()
    finally:
        conn.close()


def test_unknown_release_is_not_found_with_a_hint(store: SqliteStore) -> None:
    deploy(store, WEB)
    with pytest.raises(NotFound, match=r"no release 9 of dev/web"):
        store.get_release(WEB, 9)
    with pytest.raises(NotFound, match=r"no app dev/nope; `kiln status` lists apps"):
        store.get_release(AppKey("dev", "nope"), 1)


def test_a_tag_instead_of_a_digest_is_refused_and_changes_nothing(store: SqliteStore) -> None:
    spec = AppSpec(app="web", image="demo:1", port=8080)
    with pytest.raises(InvalidInput, match="digest"):
        store.create_release(
            WEB,
            spec=spec,
            image="demo:1",
            digest="demo:1",
            spec_hash="h",
            created_by="alice",
            message="",
            origin=ReleaseOrigin.DEPLOY,
            rollback_of=None,
            scale=1,
            deadline_seconds=60,
            now=T0,
        )
    assert store.get_app(WEB) is None
    assert store.list_releases(WEB) == []


def test_a_spec_for_another_app_is_refused(store: SqliteStore) -> None:
    with pytest.raises(InvalidInput, match="describes app dev/web, not dev/api"):
        store.create_release(
            API,
            spec=AppSpec(app="web", image="demo:1"),
            image="demo:1",
            digest=digest(1),
            spec_hash="h",
            created_by="alice",
            message="",
            origin=ReleaseOrigin.DEPLOY,
            rollback_of=None,
            scale=1,
            deadline_seconds=60,
            now=T0,
        )
    assert store.list_apps() == []


def test_naive_datetimes_are_refused(store: SqliteStore) -> None:
    with pytest.raises(InvalidInput, match="timezone-aware"):
        deploy(store, WEB, now=datetime(2026, 1, 1))


def test_rollback_release_records_what_it_rolls_back_to(store: SqliteStore) -> None:
    deploy(store, WEB, version=1)
    deploy(store, WEB, version=2)
    release, _ = deploy(store, WEB, version=1, origin=ReleaseOrigin.ROLLBACK, rollback_of=1)
    assert (release.number, release.origin, release.rollback_of) == (3, ReleaseOrigin.ROLLBACK, 1)
    assert store.get_release(WEB, 3) == release


def test_rollback_of_an_unknown_release_is_not_found(store: SqliteStore) -> None:
    deploy(store, WEB, version=1)
    with pytest.raises(NotFound, match="no release 5 of dev/web"):
        deploy(store, WEB, version=2, origin=ReleaseOrigin.ROLLBACK, rollback_of=5)
    assert [r.number for r in store.list_releases(WEB)] == [1]


def test_set_scale_changes_only_the_scale(store: SqliteStore) -> None:
    deploy(store, WEB, scale=2, now=at(0))
    app = store.set_scale(WEB, 5, now=at(10))
    assert (app.scale, app.target_release, app.updated_at, app.created_at) == (5, 1, at(10), at(0))
    assert store.get_app(WEB) == app


def test_negative_scale_is_refused(store: SqliteStore) -> None:
    deploy(store, WEB, scale=2)
    with pytest.raises(InvalidInput, match="0 or more"):
        store.set_scale(WEB, -1, now=T0)


def test_stop_and_start_keep_the_history(store: SqliteStore) -> None:
    deploy(store, WEB)
    assert store.set_stopped(WEB, True, now=at(1)).stopped is True
    assert store.list_releases(WEB) != []
    assert store.set_stopped(WEB, False, now=at(2)).stopped is False


def test_a_new_release_unstops_the_app(store: SqliteStore) -> None:
    deploy(store, WEB, version=1)
    store.set_stopped(WEB, True, now=at(1))
    deploy(store, WEB, version=2, scale=4, now=at(2))
    app = store.get_app(WEB)
    assert app is not None
    assert (app.stopped, app.scale, app.target_release) == (False, 4, 2)


def test_unknown_app_is_not_found_for_every_app_write(store: SqliteStore) -> None:
    with pytest.raises(NotFound, match=r"no app dev/web; `kiln status` lists apps"):
        store.set_scale(WEB, 1, now=T0)
    with pytest.raises(NotFound, match="no app dev/web"):
        store.set_stopped(WEB, True, now=T0)
    with pytest.raises(NotFound, match="no app dev/web"):
        store.delete_app(WEB)


def test_delete_app_forgets_releases_and_rollouts_but_keeps_events(store: SqliteStore) -> None:
    from kiln.model import NewEvent

    deploy(store, WEB, version=1)
    deploy(store, WEB, version=2)
    deploy(store, API, version=1)
    store.append_event(NewEvent(key=WEB, kind="release.created", reason="v2"), now=T0)
    store.delete_app(WEB)
    assert store.get_app(WEB) is None
    assert store.list_releases(WEB) == []
    assert store.list_rollouts(WEB) == []
    assert [e.kind for e in store.list_events(key=WEB)] == ["release.created"]
    # The other app is untouched, and a new app of the same name starts over at 1.
    assert [r.number for r in store.list_releases(API)] == [1]
    assert deploy(store, WEB, version=3)[0].number == 1


def test_lists_of_an_unknown_app_are_empty(store: SqliteStore) -> None:
    assert store.list_releases(WEB) == []
    assert store.list_rollouts(WEB) == []
    assert store.active_rollout(WEB) is None


def test_a_closed_store_says_so(db_path: Path) -> None:
    from kiln.errors import PermanentFailure

    s = SqliteStore(db_path)
    s.close()
    s.close()  # twice is fine
    with pytest.raises(PermanentFailure, match="closed"):
        s.list_apps()


def test_concurrent_deploys_from_two_processes_number_gap_free(
    store: SqliteStore, db_path: Path
) -> None:
    import threading

    other = SqliteStore(db_path)
    try:
        barrier = threading.Barrier(2)

        def deployer(s: SqliteStore, first_version: int) -> None:
            barrier.wait()
            for v in range(first_version, first_version + 20):
                deploy(s, WEB, version=v)

        workers = [
            threading.Thread(target=deployer, args=(store, 1)),
            threading.Thread(target=deployer, args=(other, 100)),
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=60)
        releases = store.list_releases(WEB)
        assert [r.number for r in releases] == list(range(1, 41))
        assert len({r.digest for r in releases}) == 40
        assert len([r for r in store.list_rollouts(WEB) if not r.state.finished]) == 1
    finally:
        other.close()


def test_releases_legacy_containers_ran_outlive_their_destroyed_app_for_a_while(
    db_path: Path,
) -> None:
    store = SqliteStore(db_path)
    deploy(store, WEB, version=1, now=at(0))
    deploy(store, WEB, version=2, now=at(1))
    store.delete_app(WEB, keep_releases={1}, now=at(2))
    with pytest.raises(NotFound):
        store.get_release(WEB, 1)  # gone as a release: nothing but the forgotten loop sees it
    store.close()

    reopened = SqliteStore(db_path)
    (kept,) = reopened.destroyed_releases(WEB)
    assert (kept.number, kept.digest) == (1, digest(1))
    deploy(reopened, API, version=1, now=at(3))
    reopened.delete_app(API, now=at(3 + 8 * 24 * 3600))  # any destroy trims those over 7 days
    assert reopened.destroyed_releases(WEB) == []

    deploy(reopened, WEB, version=1, now=at(4))
    reopened.delete_app(WEB, keep_releases={1}, now=at(5))
    deploy(reopened, WEB, version=3, now=at(6))  # a new app of the old name
    assert reopened.destroyed_releases(WEB) == []
    assert reopened.get_release(WEB, 1).digest == digest(3)
    reopened.close()
