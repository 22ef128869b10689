"""Logs kept past an instance's life: a crashed instance's lines after its replacement, `-f`
across a rollout, merged in time order, bounded by size and age per app."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kiln.controller.views import LogRequest
from kiln.logs import ArchivedLine, LogArchive, LogQuery
from kiln.model import AppKey
from tests.controller.world import World, eventually, spec

WEB = AppKey("dev", "web")


async def history(world: World, **request: object) -> list[ArchivedLine]:
    instance = request.pop("instance", None)
    return [
        line
        async for line in world.engine.logs(
            WEB,
            instance=instance,  # type: ignore[arg-type]
            follow=False,
            tail=None,
            request=LogRequest(**request),  # type: ignore[arg-type]
        )
    ]


async def test_a_crashed_instance_logs_are_readable_after_its_replacement(world: World) -> None:
    await world.engine.deploy(spec(instances=1), message="", who="t")
    await eventually(lambda: world.store.active_rollout(WEB) is None)
    victim = world.running()[0]
    world.driver.add_log(victim.container_id, "starting up")
    world.driver.add_log(victim.container_id, "panic: out of cheese", stream="stderr")

    async def kept() -> list[str]:
        return [line.text for line in await history(world, instance=victim.id)]

    deadline = time.monotonic() + 10
    while len(await kept()) < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    world.driver.crash(victim.id, exit_code=2)
    await eventually(lambda: world.running() and world.running()[0].id != victim.id)
    await eventually(lambda: victim.container_id in world.driver.removed)

    assert await kept() == ["starting up", "panic: out of cheese"]
    lines = await history(world, grep="cheese")
    assert [(line.instance, line.stream, line.release) for line in lines] == [
        (victim.id, "stderr", 1)
    ]
    assert [line.text for line in await history(world, release=2)] == []


async def test_follow_goes_on_across_a_rollout_as_new_instances_join(world: World) -> None:
    await world.engine.deploy(spec(instances=1), message="", who="t")
    await eventually(lambda: world.store.active_rollout(WEB) is None, timeout=30)
    old = world.running()[0]
    seen: list[ArchivedLine] = []

    async def follow() -> None:
        # tail=None: a line written while the follow starts comes from the history instead
        # of being missed (the app check before it now awaits the store thread).
        async for line in world.engine.logs(WEB, instance=None, follow=True, tail=None):
            seen.append(line)

    follower = asyncio.create_task(follow())
    try:
        world.driver.add_log(old.container_id, "old says hi")
        await eventually(lambda: any(line.text == "old says hi" for line in seen), timeout=30)
        await world.engine.deploy(spec("web:v2", instances=1), message="", who="t")
        await eventually(lambda: [i.release for i in world.running()] == [2], timeout=30)
        new = world.running()[0]
        world.driver.add_log(new.container_id, "new says hi")
        await eventually(lambda: any(line.text == "new says hi" for line in seen), timeout=30)
    finally:
        follower.cancel()
        with pytest.raises(asyncio.CancelledError):
            await follower
    assert [(line.release, line.text) for line in seen] == [(1, "old says hi"), (2, "new says hi")]


def test_history_merges_instances_in_time_order_and_filters(tmp_path: Path) -> None:
    archive = LogArchive(tmp_path)
    a = archive.writer(WEB, "r1-a", 1)
    b = archive.writer(WEB, "r2-b", 2)
    base = 1_700_000_000.0
    a.write(base + 1, "stdout", "a1")
    b.write(base + 2, "stdout", "b2")
    a.write(base + 3, "stderr", "a3 ERROR")
    b.write(base + 4, "stdout", "b4")
    a.close()
    b.close()
    assert [line.text for line in archive.history(WEB, LogQuery())] == [
        "a1",
        "b2",
        "a3 ERROR",
        "b4",
    ]
    assert [line.text for line in archive.history(WEB, LogQuery(), tail=2)] == ["a3 ERROR", "b4"]
    assert [line.text for line in archive.history(WEB, LogQuery(grep="ERROR"))] == ["a3 ERROR"]
    assert [line.text for line in archive.history(WEB, LogQuery(release=2))] == ["b2", "b4"]
    since = datetime.fromtimestamp(base + 2.5, UTC)
    assert [line.text for line in archive.history(WEB, LogQuery(since=since))] == [
        "a3 ERROR",
        "b4",
    ]


def test_an_app_keeps_at_most_its_bytes_and_its_age(tmp_path: Path) -> None:
    archive = LogArchive(tmp_path, max_bytes_per_app=64 * 1024, max_file_bytes=8 * 1024)
    for n in range(5):
        writer = archive.writer(WEB, f"r1-i{n}", 1)
        for i in range(400):  # ~30 KiB each, several segments
            writer.write(time.time(), "stdout", f"line {i} " + "x" * 50)
        writer.close()
    total = sum(path.stat().st_size for _, _, path in archive.segments(WEB))
    assert total <= 64 * 1024
    assert "r1-i4" in archive.instances(WEB)  # the newest are the ones kept
    assert "r1-i0" not in archive.instances(WEB)

    old = archive.writer(AppKey("dev", "old"), "r1-x", 1)
    old.write(time.time(), "stdout", "ancient")
    old.close()
    segment = archive.segments(AppKey("dev", "old"))[0][2]
    week_ago = time.time() - timedelta(days=8).total_seconds()
    os.utime(segment, (week_ago, week_ago))
    assert archive.prune_all() >= 1
    assert archive.segments(AppKey("dev", "old")) == []


def test_a_restarted_kiln_does_not_keep_a_line_twice(tmp_path: Path) -> None:
    archive = LogArchive(tmp_path)
    first = archive.writer(WEB, "r1-a", 1)
    first.write(100.0, "stdout", "once")
    first.close()
    again = archive.writer(WEB, "r1-a", 1)
    assert again.last_at == 100.0  # the keeper skips lines up to here


async def test_kiln_own_log_lines_as_json_carry_app_env_and_release(tmp_path: Path) -> None:
    import json
    import logging

    from kiln.controller.events import EventBus
    from kiln.logs.structured import JsonLines
    from kiln.model import EventKind
    from kiln.store.aio import AsyncStore
    from kiln.store.sqlite import SqliteStore

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    logger = logging.getLogger("kiln.events")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        store = AsyncStore(SqliteStore(tmp_path / "kiln.db"))
        bus = EventBus(store, lambda: datetime.now(UTC))
        bus.record(WEB, EventKind.ROLLOUT_STARTED, "rolling to 3", release=3)
        await bus.close()
        await store.close()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    line = json.loads(JsonLines().format(records[-1]))
    assert (line["env"], line["app"], line["release"], line["kind"]) == (
        "dev",
        "web",
        3,
        "rollout.started",
    )
    assert "rolling to 3" in line["message"]
