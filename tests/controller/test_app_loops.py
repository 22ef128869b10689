"""AppLoops: one reconcile loop per app, and none left behind once closed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from kiln.controller.reconciler import AppLoops
from kiln.controller.shared import SharedRead
from kiln.model import AppKey


async def test_a_wake_after_close_starts_no_loop() -> None:
    rounds: list[AppKey] = []
    first_round = asyncio.Event()

    async def sync(key: AppKey) -> None:
        rounds.append(key)
        first_round.set()

    loops = AppLoops(sync, resync_seconds=60, clock=lambda: datetime.now(UTC))
    web = AppKey("dev", "web")
    loops.wake(web)
    await asyncio.wait_for(first_round.wait(), timeout=5)
    await loops.close()

    # What still reports in while kiln stops (a health change, a finished stop) wakes an app.
    loops.wake(AppKey("dev", "late"))
    await asyncio.sleep(0)

    assert loops.keys() == []
    assert rounds == [web]
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("reconcile")]


async def test_the_resync_wakes_every_loop_together_so_they_share_one_engine_list() -> None:
    lists = 0

    async def list_all() -> int:
        nonlocal lists
        lists += 1
        return lists

    shared = SharedRead(list_all, name="engine list")
    rounds: dict[AppKey, int] = {}

    async def sync(key: AppKey) -> None:
        await shared.get()
        rounds[key] = rounds.get(key, 0) + 1

    loops = AppLoops(sync, resync_seconds=0.05, clock=lambda: datetime.now(UTC))
    keys = [AppKey("dev", f"app{n}") for n in range(20)]
    for key in keys:
        loops.wake(key)
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while min(rounds.get(key, 0) for key in keys) < 4:
            assert asyncio.get_running_loop().time() < deadline, "the resync stopped"
            await asyncio.sleep(0.01)
    finally:
        await loops.close()

    # Every round read the list, yet the apps' rounds of one tick shared a read: far fewer
    # reads than rounds (about one per tick, whatever the number of apps).
    assert sum(rounds.values()) >= 80
    assert lists <= 2 * max(rounds.values()) + 1


async def test_a_loop_sleeps_until_its_plan_deadline_not_only_until_the_resync() -> None:
    rounds = 0
    second_round = asyncio.Event()

    async def sync(key: AppKey) -> datetime | None:
        nonlocal rounds
        rounds += 1
        if rounds == 2:
            second_round.set()
        return datetime.now(UTC) + timedelta(seconds=0.05) if rounds == 1 else None

    loops = AppLoops(sync, resync_seconds=3600, clock=lambda: datetime.now(UTC))
    loops.wake(AppKey("dev", "web"))
    try:
        await asyncio.wait_for(second_round.wait(), timeout=10)
    finally:
        await loops.close()


async def test_each_resync_tick_calls_on_resync_before_it_wakes_the_loops() -> None:
    """The hook that drops what rounds keep between them (engine lists): every tick's rounds
    then look at the engine afresh."""
    log: list[str] = []
    ticked = asyncio.Event()

    async def sync(key: AppKey) -> None:
        log.append("round")
        if log.count("resync") >= 2:
            ticked.set()

    loops = AppLoops(sync, resync_seconds=0.05, clock=lambda: datetime.now(UTC))
    loops.on_resync = lambda: log.append("resync")
    loops.wake(AppKey("dev", "web"))
    try:
        await asyncio.wait_for(ticked.wait(), timeout=10)
    finally:
        await loops.close()

    first = log.index("resync")
    assert log[0] == "round" and log[first + 1] == "round"
