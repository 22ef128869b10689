"""The event loop's lag (kiln_event_loop_lag_seconds): a loop held by blocking work shows up as
a late wake-up of the sampler, at least as long as the hold; an engine exposes it on /metrics."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import CollectorRegistry, Histogram

from kiln.metrics import LoopLagSampler
from tests.controller.world import World, eventually
from tests.observe.test_metrics import samples, value


def lag_histogram() -> tuple[CollectorRegistry, Histogram]:
    registry = CollectorRegistry()
    histogram = Histogram(
        "lag_seconds", "test", buckets=(0.01, 0.1, 0.5, 1.0, 5.0), registry=registry
    )
    return registry, histogram


class FakeClock:
    """A clock that moves only when the sampler sleeps: by the sleep, plus a stall when set."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.stall = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds + self.stall
        await asyncio.sleep(0)


async def test_a_stalled_wake_up_is_recorded_as_the_stall() -> None:
    clock = FakeClock()
    recorded: list[float] = []
    sampler = LoopLagSampler(recorded.append, interval=0.25, clock=clock, sleep=clock.sleep)

    assert await sampler.measure() == 0.0
    clock.stall = 1.5
    assert await sampler.measure() == pytest.approx(1.5)
    assert recorded == [0.0, pytest.approx(1.5)]


async def test_a_blocked_loop_shows_a_lag_at_least_as_long_as_the_block() -> None:
    registry, histogram = lag_histogram()
    interval, block = 0.01, 0.6
    sampler = LoopLagSampler(histogram.observe, interval=interval)
    sampler.start()
    try:

        def count() -> float:
            return registry.get_sample_value("lag_seconds_count") or 0.0

        await eventually(lambda: count() >= 1)  # the sampler is sleeping now
        time.sleep(block)  # noqa: ASYNC251 - holding the loop is the point of this test
        before = count()
        await eventually(lambda: count() > before)
    finally:
        await sampler.close()
    # The sampler asked to wake at most ``interval`` after it went to sleep, and the loop was
    # held for ``block`` from some moment of that sleep: it woke at least block - interval late.
    at_most_half = registry.get_sample_value("lag_seconds_bucket", {"le": "0.5"})
    total = registry.get_sample_value("lag_seconds_count")
    assert at_most_half is not None and total is not None
    assert total - at_most_half >= 1, "no wake-up recorded as later than 0.5 s"


async def test_an_engine_reports_its_event_loop_lag_on_metrics(world: World) -> None:
    async def lag_count() -> float:
        found = samples(await world.engine.metrics())
        return value(found, "kiln_event_loop_lag_seconds_count")

    first = await lag_count()
    deadline = time.monotonic() + 10
    while await lag_count() <= first:
        assert time.monotonic() < deadline, "the loop lag sampler never ran"
        await asyncio.sleep(0.05)
