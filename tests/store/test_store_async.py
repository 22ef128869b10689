"""The async facade: every store call runs on the store's own thread, never on the event loop's,
and the guard makes a call left on the loop fail loudly."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from kiln.model import EventKind, NewEvent
from kiln.model.access import NewAuditEntry
from kiln.store import SqliteStore
from kiln.store.access import SqliteAccessStore
from kiln.store.aio import AsyncAccessStore, AsyncStore
from kiln.store.connection import StoreOnEventLoop
from tests.store.support import API, T0, WEB, deploy


async def test_a_direct_call_from_the_loop_fails_once_the_facade_is_in_use(db_path: Path) -> None:
    store = SqliteStore(db_path)
    facade = AsyncStore(store, guard=True)
    try:
        assert await facade.get_app(WEB) is None  # through the facade: fine
        with pytest.raises(StoreOnEventLoop, match="event loop's thread"):
            store.get_app(WEB)
        with pytest.raises(StoreOnEventLoop):
            store.images.list()
        with pytest.raises(StoreOnEventLoop):
            store.close()
    finally:
        await facade.close()


async def test_without_the_guard_a_direct_call_still_works(db_path: Path) -> None:
    store = SqliteStore(db_path)
    facade = AsyncStore(store, guard=False)
    try:
        assert await facade.list_apps() == []
        assert store.list_apps() == []
    finally:
        await facade.close()


async def test_every_call_runs_on_one_store_thread_that_is_not_the_loops(db_path: Path) -> None:
    facade = AsyncStore(SqliteStore(db_path), guard=True)
    try:
        threads = {await facade.run(threading.get_ident) for _ in range(5)}
        assert len(threads) == 1
        assert threading.get_ident() not in threads
        # Calls made together stay in the order they were made.
        events = [NewEvent(key=WEB, kind=EventKind.APP_SCALED, reason=str(n)) for n in range(20)]
        stored = await asyncio.gather(*(facade.append_event(e, now=T0) for e in events))
        assert [e.reason for e in stored] == [str(n) for n in range(20)]
        assert [e.id for e in stored] == sorted(e.id for e in stored)
    finally:
        await facade.close()


async def test_the_access_store_is_guarded_the_same_way(db_path: Path) -> None:
    access = SqliteAccessStore(db_path)
    facade = AsyncAccessStore(access, guard=True)
    try:
        entry = NewAuditEntry(
            token="ann",
            peer="tcp 127.0.0.1:1",
            claimed="",
            method="POST",
            path="/v1/apps",
            environment="dev",
            app="web",
            status=200,
            outcome="ok",
            release=1,
            detail="",
        )
        await facade.append_audit(entry, now=T0)
        assert [e.path for e in await facade.list_audit()] == ["/v1/apps"]
        assert await facade.token_by_hash("nope") is None
        with pytest.raises(StoreOnEventLoop):
            access.list_audit()
    finally:
        await facade.close()


async def test_releases_are_cached_and_an_apps_entries_go_with_it(db_path: Path) -> None:
    store = SqliteStore(db_path)
    deploy(store, WEB, version=1)
    deploy(store, API, version=1)
    facade = AsyncStore(store, guard=True)
    try:
        assert facade.cached_release(WEB, 1) is None  # not read yet
        first = await facade.get_release(WEB, 1)
        assert facade.cached_release(WEB, 1) is first
        assert await facade.get_release(WEB, 1) is first  # no second read
        await facade.list_releases(API)
        assert facade.cached_release(API, 1) is not None
        assert await facade.release_or_none(WEB, 9) is None

        await facade.delete_app(WEB)
        assert facade.cached_release(WEB, 1) is None
        assert facade.cached_release(API, 1) is not None
    finally:
        await facade.close()


async def test_close_is_idempotent_and_ends_the_thread(db_path: Path) -> None:
    facade = AsyncStore(SqliteStore(db_path))
    await facade.list_apps()
    await facade.close()
    await facade.close()


async def test_the_desired_state_read_fills_the_release_cache(db_path: Path) -> None:
    store = SqliteStore(db_path)
    release, _ = deploy(store, WEB, version=1)
    facade = AsyncStore(store, guard=True)
    try:
        state = await facade.desired_state(WEB)
        assert state is not None and state.target == release
        assert facade.cached_release(WEB, 1) is state.target
        assert await facade.desired_state(API) is None
    finally:
        await facade.close()
