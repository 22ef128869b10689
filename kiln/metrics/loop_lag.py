"""``LoopLagSampler``: how late kiln's event loop runs a task that asked to wake up.

Every ``interval`` seconds a small task sleeps ``interval`` and measures how much later than
asked it woke: the time a ready callback waits while something else holds the loop (a
blocking store call, a long synchronous planner round, a big JSON answer). Near 0 on a healthy
loop; a lag of L means every request, probe and reconcile waiting at that moment was L late.
Each measurement goes to ``kiln_event_loop_lag_seconds`` (a histogram).

The clock and the sleep are arguments so a test can drive it without real time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from kiln.background import Periodic

log = logging.getLogger("kiln.metrics")

DEFAULT_INTERVAL = 0.25  # 4 wake-ups a second: cheap, and fine enough to see a 0.1 s stall


class LoopLagSampler:
    def __init__(
        self,
        observe: Callable[[float], None],
        *,
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._observe = observe
        self.interval = interval
        self._clock = clock
        self._sleep = sleep
        # No wait between two measurements: each one is a sleep of ``interval``.
        self._sampling = Periodic(self.measure, every=0, name="kiln-loop-lag", log=log)

    async def measure(self) -> float:
        """One sleep of ``interval``; records and returns how late it woke (never < 0)."""
        asked = self._clock() + self.interval
        await self._sleep(self.interval)
        lag = max(0.0, self._clock() - asked)
        self._observe(lag)
        return lag

    def start(self) -> None:
        self._sampling.start()

    async def close(self) -> None:
        await self._sampling.close()
