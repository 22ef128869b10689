"""Freed memory goes back to the system once after a burst of forgotten apps (a fake trim
stands in for glibc's malloc_trim)."""

from __future__ import annotations

import asyncio

from kiln.controller.memory import MemoryTrimmer, glibc_trim


class FakeTrim:
    def __init__(self) -> None:
        self.calls = 0
        self.called = asyncio.Event()

    def __call__(self) -> None:
        self.calls += 1
        self.called.set()


async def test_a_burst_of_asks_makes_one_trim_after_the_last() -> None:
    trim = FakeTrim()
    trimmer = MemoryTrimmer(trim=trim, delay=0.05)
    for _ in range(100):  # a hundred apps destroyed at once
        trimmer.soon()
        await asyncio.sleep(0)
    assert trim.calls == 0  # not before the burst is over

    await asyncio.wait_for(trim.called.wait(), 5)
    await trimmer.close()

    assert trim.calls == 1


async def test_an_ask_while_trimming_trims_again() -> None:
    trimmer: MemoryTrimmer
    calls = 0
    second = asyncio.Event()

    def trim() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:  # an app forgotten while the first trim runs
            loop.call_soon_threadsafe(trimmer.soon)
        else:
            loop.call_soon_threadsafe(second.set)

    loop = asyncio.get_running_loop()
    trimmer = MemoryTrimmer(trim=trim, delay=0.01)
    trimmer.soon()
    await asyncio.wait_for(second.wait(), 5)
    await trimmer.close()
    assert calls == 2


async def test_without_a_trim_function_nothing_runs() -> None:
    trimmer = MemoryTrimmer(trim=None, delay=0.01)
    trimmer.soon()
    await asyncio.sleep(0.05)
    assert trimmer.trims == 0
    await trimmer.close()


def test_glibc_trim_is_found_on_this_machine() -> None:
    # Debian's Python runs on glibc: the trim exists and returns (1: memory released, 0: none).
    trim = glibc_trim()
    assert trim is not None
    assert trim() in (0, 1)
