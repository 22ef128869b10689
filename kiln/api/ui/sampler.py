"""Keeps the dashboard's chart history filled while someone watches it.

One background task reads every app's counters (one read of the router for all apps) and the
instances' CPU and memory (what the metrics sampler last read) every ``interval`` seconds into
a ``TrafficHistory`` and a ``UsageHistory``; it starts with the first dashboard request and
stops by itself once nobody has looked for ``idle_after`` seconds, so an unwatched kiln pays
nothing for its dashboard.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from kiln.api.ui.series import TrafficHistory, UsageHistory
from kiln.background import stop_tasks
from kiln.controller.service import Service
from kiln.errors import KilnError

log = logging.getLogger("kiln.api.ui")

MIN_INTERVAL = 1.0
"""Seconds between two samples, however many pages ask."""


class TrafficSampler:
    def __init__(
        self,
        service: Service,
        history: TrafficHistory,
        *,
        interval: float = 2.0,
        idle_after: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.history = history
        self.usage = UsageHistory()
        self.interval = interval
        self.idle_after = idle_after
        self.clock = clock
        self._last_view = 0.0
        self._last_sample = -MIN_INTERVAL
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def watched(self) -> None:
        """Someone looks at the dashboard: sample (again) until they have gone for a while."""
        self._last_view = self.clock()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="kiln dashboard sampler"
            )

    async def sample_now(self) -> None:
        """One sample of every app, unless the last one is too recent."""
        async with self._lock:
            now = self.clock()
            if now - self._last_sample < MIN_INTERVAL:
                return
            self._last_sample = now
            try:
                counters = await self.service.release_counters()
            except KilnError as exc:
                log.debug("dashboard: traffic counters unavailable: %s", exc.message)
                return
            for key, by_release in counters.items():
                self.history.add(key, now, by_release)
            self.history.prune(now)
            stats = await self.service.instance_stats()
            self.usage.add(now, {c: (s.cpu_seconds, s.memory_bytes) for c, s in stats.items()})

    async def close(self) -> None:
        await stop_tasks(self._task)

    async def _run(self) -> None:
        while self.clock() - self._last_view < self.idle_after:
            try:
                await self.sample_now()
            except Exception:  # a bug here must not end the charts for good
                log.exception("dashboard: sampling traffic failed")
            await asyncio.sleep(self.interval)
