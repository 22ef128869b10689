"""Reads every app's round needs, made once for all the rounds that want them at the same time.

A round observes its app through three reads that answer for every app at once: the engine's
container list, and NGINX's in-flight and traffic counters. With one round per app per resync,
a hundred apps would make a hundred engine lists every resync; rounds woken together (the
aligned resync ticker, a burst of events) share one read instead.

    round A ──get()──┐                       ┌──▶ A, B: the read that started after both asked
    round B ──get()──┼─▶ SharedRead: one read ┤
    round C ──get()──┘   in flight at a time  └──▶ C (asked while it ran): the next read

**Freshness.** A caller only joins a read that *starts after it asked*; one that asks while a
read is already running waits for the next read (which starts as soon as the running one ends).
So a round that starts after a change (a container died, a peer list moved) always sees the
change, exactly as if it had read alone; the sharing only saves reads, never hides news. The
read starts one event-loop step after its first caller asked, so callers woken in the same
step (the resync ticker wakes every loop at once) all join it.

A failed read fails every caller that joined it with the same error (a round retries with its
backoff); the next caller starts a new read.

**Narrowed engine lists.** A round woken alone (its own container's event, a rollout step of
one app while ninety-nine others idle) needs one app's containers, not three hundred: when the
callers of a read ask for a few apps only, the read asks the engine for those apps' containers
(filtered by label at the engine) instead of every container. The resync, and anything that
asks for every app, gets the full list.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from kiln.drivers.base import Driver
from kiln.model import AppKey, Instance, ReleaseTraffic
from kiln.router.base import Router

T = TypeVar("T")


class SharedRead(Generic[T]):
    """``read()`` for everyone who asks at the same time: single flight, with freshness."""

    def __init__(self, read: Callable[[], Awaitable[T]], *, name: str) -> None:
        self._read = read
        self._name = name
        self._next: asyncio.Future[T] | None = None  # callers waiting for a read not started yet
        self._task: asyncio.Task[None] | None = None
        self.reads = 0  # reads made (for tests and benchmarks)

    async def get(self) -> T:
        """The result of a read that started after this call."""
        if self._next is None:
            future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
            # Nobody may be left to hear a failure (every caller cancelled): not an error.
            future.add_done_callback(_consume)
            self._next = future
        waiting_for = self._next
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"shared read: {self._name}")
        # Shielded: one caller cancelled (its loop forgotten) must not cancel the others' read.
        return await asyncio.shield(waiting_for)

    async def close(self) -> None:
        """Cancel a read in flight (its callers see ``CancelledError``)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._next is not None:
            self._next.cancel()
            self._next = None

    def _read_next(self) -> Awaitable[T]:
        """The read for the callers that joined so far (called as it starts)."""
        return self._read()

    async def _run(self) -> None:
        # Started as a task: its first step runs after the callers of this loop step asked.
        try:
            while self._next is not None:
                future, self._next = self._next, None
                self.reads += 1
                try:
                    result = await self._read_next()
                except asyncio.CancelledError:
                    future.cancel()
                    raise
                except Exception as exc:
                    if not future.done():
                        future.set_exception(exc)
                else:
                    if not future.done():
                        future.set_result(result)
        finally:
            if self._task is asyncio.current_task():
                self._task = None


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


NARROW_UP_TO = 8
"""A read asked for this many apps or fewer lists each of them (in parallel); more, every app."""


class InstancesRead(SharedRead[dict[AppKey, list[Instance]]]):
    """The engine's containers by app: ``get()`` every app's, ``of(key)`` one app's (a read
    only ``of`` callers joined lists just their apps)."""

    def __init__(self, driver: Driver) -> None:
        super().__init__(self._list_all, name="engine list")
        self._driver = driver
        self._keys: set[AppKey] | None = set()  # the next read's apps; None: every app
        self.narrowed = 0  # reads that listed some apps only (for tests and benchmarks)

    async def of(self, key: AppKey) -> list[Instance]:
        """``key``'s instances (this installation's and legacy ones), running or not."""
        if self._keys is not None:
            self._keys.add(key)
        return list((await super().get()).get(key, ()))

    async def get(self) -> dict[AppKey, list[Instance]]:
        self._keys = None
        return await super().get()

    def _read_next(self) -> Awaitable[dict[AppKey, list[Instance]]]:
        keys, self._keys = self._keys, set()
        if keys is None or len(keys) > NARROW_UP_TO:
            return self._list_all()
        self.narrowed += 1
        return self._list_some(sorted(keys))

    async def _list_all(self) -> dict[AppKey, list[Instance]]:
        by_app: dict[AppKey, list[Instance]] = {}
        for instance in await self._driver.list_instances():
            by_app.setdefault(instance.key, []).append(instance)
        return by_app

    async def _list_some(self, keys: list[AppKey]) -> dict[AppKey, list[Instance]]:
        lists = await asyncio.gather(*(self._driver.list_instances(key) for key in keys))
        return dict(zip(keys, lists, strict=True))


class SharedReads:
    """What the rounds observe, read once for all apps: ``instances`` (the engine's list, by
    app), ``in_flight`` and ``traffic`` (NGINX's counters, by app)."""

    def __init__(self, driver: Driver, router: Router) -> None:
        self.instances = InstancesRead(driver)
        self.in_flight: SharedRead[dict[AppKey, dict[str, int]]] = SharedRead(
            router.in_flight, name="in-flight counts"
        )
        self.traffic: SharedRead[dict[AppKey, dict[int, ReleaseTraffic]]] = SharedRead(
            router.traffic, name="traffic counters"
        )

    async def instances_of(self, key: AppKey) -> list[Instance]:
        """``key``'s instances (this installation's and legacy ones), running or not."""
        return await self.instances.of(key)

    async def close(self) -> None:
        for read in (self.instances, self.in_flight, self.traffic):
            await read.close()
