"""The engine never touches SQLite on the event loop's thread, and the events it records are
written in order, batched, and in the store before a command answers."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from kiln.model import Event, EventKind
from kiln.store.sqlite import SqliteStore
from tests.controller.world import WEB, World, eventually, spec


def engine_store(world: World) -> SqliteStore:
    store = world.engine.plane.store.sync
    assert isinstance(store, SqliteStore)
    return store


async def test_deploy_status_and_events_never_touch_the_store_on_the_loop(world: World) -> None:
    # The suite turns the guard on: the engine's connection refuses this very thread.
    assert engine_store(world).guard.forbidden == threading.get_ident()

    seen: list[Event] = []

    async def follow() -> None:
        async for event in world.engine.follow_events(key=WEB, after_id=0):
            seen.append(event)

    follower = asyncio.create_task(follow())
    try:
        await world.engine.deploy(spec(), message="first", who="alice")
        await eventually(lambda: world.store.active_rollout(WEB) is None)
        await world.engine.deploy(spec("web:v2"), message="second", who="alice")
        await eventually(lambda: world.store.active_rollout(WEB) is None)
        status = await world.engine.status(WEB)
        assert status.state == "running" and status.target_release == 2
        assert status.urls  # read from the release (cache or store thread)
        assert [r.release.number for r in await world.engine.releases(WEB)] == [1, 2]
        await world.engine.scale(WEB, 2, who="alice")
        await world.engine.rollout_status(WEB)
        stored = await world.engine.events(key=WEB, limit=1000)
        await eventually(lambda: len(seen) >= len(stored))
    finally:
        follower.cancel()
        with pytest.raises(asyncio.CancelledError):
            await follower
    # Nothing failed on the way: no round recorded an error.
    assert not world.engine.plane.loops.last_error.get(WEB)
    # The live stream and the log agree, in id order, without gaps or repeats.
    assert [e.id for e in seen[: len(stored)]] == [e.id for e in stored]
    assert [e.id for e in seen] == sorted({e.id for e in seen})


async def test_a_command_answers_only_once_its_events_are_stored(world: World) -> None:
    result = await world.engine.deploy(spec(), message="first", who="alice")
    # Read through the test's own connection, right after the answer: no waiting.
    kinds = [e.kind for e in world.store.list_events(key=WEB)]
    assert EventKind.RELEASE_CREATED in kinds and EventKind.ROLLOUT_STARTED in kinds
    await eventually(lambda: world.store.active_rollout(WEB) is None)
    await world.engine.scale(WEB, 1, who="bob")
    scaled = [e for e in world.store.list_events(key=WEB) if e.kind == EventKind.APP_SCALED]
    assert scaled and "bob scaled" in scaled[-1].reason
    assert result.release.number == 1


async def test_a_burst_of_events_is_stored_in_order_and_resumes_after_an_id(
    world: World,
) -> None:
    bus = world.engine.plane.events
    before = world.store.list_events(limit=1)
    start = before[-1].id if before else 0
    for n in range(1200):  # more than one batch
        bus.record(WEB, EventKind.APP_SCALED, f"burst {n}")
    await bus.flush()
    stored = [e for e in world.store.list_events(key=WEB, after_id=start, limit=5000)]
    assert [e.reason for e in stored] == [f"burst {n}" for n in range(1200)]
    assert [e.id for e in stored] == sorted(e.id for e in stored)

    # A follower resuming after an id gets exactly the rest, then live ones.
    resume_at = stored[999].id
    got: list[Event] = []

    async def follow() -> None:
        async for event in world.engine.follow_events(key=WEB, after_id=resume_at):
            got.append(event)

    follower = asyncio.create_task(follow())
    try:
        await eventually(lambda: len(got) >= 200)
        bus.record(WEB, EventKind.APP_SCALED, "live")
        await eventually(lambda: got and got[-1].reason == "live")
    finally:
        follower.cancel()
        with pytest.raises(asyncio.CancelledError):
            await follower
    assert [e.reason for e in got] == [f"burst {n}" for n in range(1000, 1200)] + ["live"]


async def test_closing_the_engine_writes_what_is_queued(tmp_path: Path) -> None:
    w = World(tmp_path)
    await w.engine.start()
    for n in range(50):
        w.engine.plane.events.record(WEB, EventKind.APP_SCALED, f"late {n}")
    await w.engine.close()
    reasons = [e.reason for e in w.store.list_events(key=WEB, limit=1000)]
    assert reasons == [f"late {n}" for n in range(50)]
    kinds = [e.kind for e in w.store.list_events(limit=1)]
    assert kinds == [EventKind.KILN_STOPPED]


async def test_a_flush_says_so_when_the_store_cannot_write_and_the_bus_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import UTC, datetime

    from kiln.controller import events as events_module
    from kiln.controller.events import EventBus
    from kiln.errors import TemporaryFailure
    from kiln.store.aio import AsyncStore

    broken = {"now": True}

    class FlakyStore(SqliteStore):
        def append_events(self, events, *, now):  # type: ignore[no-untyped-def]
            if broken["now"]:
                raise TemporaryFailure("the disk is full")
            return super().append_events(events, now=now)

    monkeypatch.setattr(events_module, "_RETRY_PAUSE", 0.001)
    store = AsyncStore(FlakyStore(tmp_path / "kiln.db"), guard=True)
    bus = EventBus(store, lambda: datetime.now(UTC))
    try:
        bus.record(WEB, EventKind.APP_SCALED, "lost")
        with pytest.raises(TemporaryFailure, match="disk is full"):
            await bus.flush()
        broken["now"] = False
        bus.record(WEB, EventKind.APP_SCALED, "kept")
        await bus.flush()
        assert [e.reason for e in await store.list_events(key=WEB)] == ["kept"]
    finally:
        await bus.close()
        await store.close()
