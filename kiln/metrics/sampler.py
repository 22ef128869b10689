"""``StatsSampler``: CPU and memory of every known instance, sampled in the background.

One ``driver.stats(ids)`` call per round for all instances (the Docker driver reads their
cgroups, no engine call), every ``interval`` seconds; a scrape only reads the last result, so
its cost does not grow with a call per instance.

It also starts and stops the event loop's ``LoopLagSampler`` when given one: the metrics'
background tasks live and end together, started and closed where the engine starts and
closes this sampler.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from kiln.background import Periodic
from kiln.drivers.base import Driver, InstanceStats
from kiln.errors import KilnError
from kiln.metrics.loop_lag import LoopLagSampler

log = logging.getLogger("kiln.metrics")


class StatsSampler:
    def __init__(
        self,
        driver: Driver,
        container_ids: Callable[[], Sequence[str]],
        *,
        interval: float = 5.0,
        loop_lag: LoopLagSampler | None = None,
    ) -> None:
        self._driver = driver
        self._container_ids = container_ids
        self.interval = interval
        self.latest: dict[str, InstanceStats] = {}
        self.sampled_at: float | None = None  # time.monotonic() of the last round
        self._samples = Periodic(
            self.sample, every=interval, name="instance stats sampling", log=log
        )
        self.loop_lag = loop_lag

    @property
    def age(self) -> float | None:
        return None if self.sampled_at is None else time.monotonic() - self.sampled_at

    async def sample(self) -> None:
        ids = list(self._container_ids())
        try:
            self.latest = await self._driver.stats(ids) if ids else {}
        except KilnError as exc:
            log.debug("no instance stats this round: %s", exc)
            return
        self.sampled_at = time.monotonic()

    def start(self) -> None:
        self._samples.start()
        if self.loop_lag is not None:
            self.loop_lag.start()

    async def close(self) -> None:
        if self.loop_lag is not None:
            await self.loop_lag.close()
        await self._samples.close()
