"""The event log: append, page forward, tail, filter by app, concurrent writers."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from kiln.errors import InvalidInput
from kiln.model import EventKind, NewEvent, Severity
from kiln.store import SqliteStore

from .support import API, WEB, at


def _event(n: int) -> NewEvent:
    return NewEvent(key=WEB, kind="rollout.progress", reason=f"step {n}")


def test_appended_events_come_back_numbered_and_intact(store: SqliteStore) -> None:
    event = store.append_event(
        NewEvent(
            key=WEB,
            kind="instance.exited",
            reason="exit code 3",
            severity=Severity.ERROR,
            release=2,
            instance="r2-abc",
        ),
        now=at(4),
    )
    assert event.id >= 1
    assert store.list_events() == [event]
    assert (event.at, event.severity, event.release, event.instance) == (
        at(4),
        Severity.ERROR,
        2,
        "r2-abc",
    )


def test_append_events_writes_a_batch_in_order(store: SqliteStore) -> None:
    events = store.append_events([_event(n) for n in range(5)], now=at(1))
    assert [e.reason for e in events] == [f"step {n}" for n in range(5)]
    assert [e.id for e in events] == sorted(e.id for e in events)
    assert store.append_events([], now=at(1)) == []


def test_list_events_without_after_id_returns_the_latest_oldest_first(store: SqliteStore) -> None:
    store.append_events([_event(n) for n in range(10)], now=at(1))
    latest = store.list_events(limit=3)
    assert [e.reason for e in latest] == ["step 7", "step 8", "step 9"]


def test_list_events_after_an_id_pages_forward(store: SqliteStore) -> None:
    events = store.append_events([_event(n) for n in range(10)], now=at(1))
    page = store.list_events(after_id=events[2].id, limit=3)
    assert [e.reason for e in page] == ["step 3", "step 4", "step 5"]
    assert store.list_events(after_id=events[-1].id) == []


def test_list_events_filters_by_app(store: SqliteStore) -> None:
    store.append_events(
        [
            NewEvent(key=WEB, kind=EventKind.APP_SCALED, reason="web 1"),
            NewEvent(key=API, kind=EventKind.APP_SCALED, reason="api 1"),
            NewEvent(key=None, kind="router.restarted", reason="server-wide"),
            NewEvent(key=WEB, kind=EventKind.APP_SCALED, reason="web 2"),
        ],
        now=at(1),
    )
    assert [e.reason for e in store.list_events(key=WEB)] == ["web 1", "web 2"]
    assert [e.reason for e in store.list_events()] == ["web 1", "api 1", "server-wide", "web 2"]
    assert store.list_events()[2].key is None


def test_concurrent_appends_from_threads_lose_nothing(store: SqliteStore) -> None:
    threads, per_thread = 8, 100
    ids: list[int] = []
    ids_lock = threading.Lock()
    start = threading.Barrier(threads)

    def writer(n: int) -> None:
        start.wait()
        for i in range(per_thread):
            e = store.append_event(
                NewEvent(key=WEB, kind=EventKind.ROLLOUT_PROGRESS, reason=f"{n}-{i}"), now=at(i)
            )
            with ids_lock:
                ids.append(e.id)

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    stored = store.list_events(limit=10_000)
    assert len(ids) == len(set(ids)) == threads * per_thread
    assert sorted(ids) == [e.id for e in stored]
    assert {e.reason for e in stored} == {
        f"{n}-{i}" for n in range(threads) for i in range(per_thread)
    }


def test_two_stores_on_one_file_append_without_losing_events(
    store: SqliteStore, db_path: Path
) -> None:
    other = SqliteStore(db_path)
    try:
        barrier = threading.Barrier(2)

        def writer(s: SqliteStore, name: str) -> None:
            barrier.wait()
            for i in range(100):
                s.append_event(
                    NewEvent(key=WEB, kind=EventKind.ROLLOUT_PROGRESS, reason=f"{name}-{i}"),
                    now=at(i),
                )

        workers = [
            threading.Thread(target=writer, args=(store, "a")),
            threading.Thread(target=writer, args=(other, "b")),
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=60)
        assert len(store.list_events(limit=1000)) == 200
    finally:
        other.close()


def test_list_events_filters_by_kind(store: SqliteStore) -> None:
    store.append_events(
        [
            NewEvent(key=WEB, kind=EventKind.ROLLOUT_STARTED, reason="start"),
            NewEvent(key=WEB, kind=EventKind.INSTANCE_EXITED, reason="crash"),
            NewEvent(key=WEB, kind=EventKind.ROLLOUT_FAILED, reason="failed"),
        ],
        now=at(1),
    )
    failed = store.list_events(kinds={EventKind.ROLLOUT_FAILED})
    assert [e.reason for e in failed] == ["failed"]
    assert failed[0].kind is EventKind.ROLLOUT_FAILED
    assert store.list_events(kinds=set()) == []


def test_an_event_kind_must_be_one_of_the_enum() -> None:
    with pytest.raises(ValueError, match="not an event kind"):
        NewEvent(key=WEB, kind="rollout.exploded", reason="?")  # type: ignore[arg-type]


def test_a_stored_kind_this_version_does_not_know_reads_as_unknown(store: SqliteStore) -> None:
    with store._write("test") as conn:  # a newer kiln wrote a kind this one lacks
        conn.execute(
            "INSERT INTO events (at, environment, app, kind, reason, severity) "
            "VALUES ('2026-01-01T00:00:00+00:00', 'dev', 'web', 'future.thing', 'r', 'info')"
        )
    assert store.list_events()[0].kind is EventKind.UNKNOWN


def test_a_webhook_cursor_only_moves_forward_and_survives_a_reopen(db_path: Path) -> None:
    store = SqliteStore(db_path)
    url = "http://127.0.0.1:9/hook"
    assert store.webhook_cursor(url) is None  # never set: the receiver is new
    store.set_webhook_cursor(url, 7, now=at(0))
    store.set_webhook_cursor(url, 3, now=at(1))  # a late, older write changes nothing
    store.set_webhook_cursor(url + "#2", 1, now=at(1))
    store.close()
    reopened = SqliteStore(db_path)
    assert reopened.webhook_cursor(url) == 7
    assert reopened.webhook_cursor(url + "#2") == 1
    with pytest.raises(InvalidInput, match="0 or more"):
        reopened.set_webhook_cursor(url, -1, now=at(2))
    reopened.close()
