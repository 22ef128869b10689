"""AppLoops: one reconcile loop per app, and none left behind once closed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from kiln.controller.reconciler import AppLoops
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
