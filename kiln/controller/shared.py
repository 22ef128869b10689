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
backoff); the next caller starts a new read. Both reads are a ``GroupCommit`` (groupcommit.py,
which route applies share too) whose callers bring what they want read.

**Kept lists.** While the engine's event stream is open (``watching``), one app's list is kept
for ``KEPT_FOR`` seconds and answers that app's next rounds without asking the engine. A change
of one of its containers (an engine event of the app, or a start, stop or removal by kiln itself,
told by the executor once the driver returned) does not drop the list: the container is inspected
and put into the kept list as it is now (``changed(key, container_id)``: a patch). A rollout's
rounds come a few milliseconds apart, and a listing at 300 containers costs the engine a scan of
all of them where an inspect costs one container; a round that asks while a patch of its app is
under way waits for it. A change whose container is unknown (a start that failed), a patch that
failed, or ``changed(None)`` (the event stream reopened) drops the list: the next round lists.
A list read while a change came is not kept (it may predate it), and the resync tick drops every
kept list (the resync is the net under missed events, so it always asks the engine).
Only for drivers that place instances themselves (``placement == "instances"``): an
orchestrator replaces instances on its own.

**Narrowed engine lists.** A round woken alone (its own container's event, a rollout step of
one app while ninety-nine others idle) needs one app's containers, not three hundred: when the
callers of a read ask for a few apps only, the read asks the engine for those apps' containers
(filtered by label at the engine) instead of every container. The resync, and anything that
asks for every app, gets the full list.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from kiln.controller.groupcommit import GroupCommit
from kiln.drivers.base import Driver
from kiln.model import AppKey, Instance, ReleaseTraffic
from kiln.router.base import Router

T = TypeVar("T")
log = logging.getLogger(__name__)

NARROW_UP_TO = 8
"""A read asked for this many apps or fewer lists each of them (in parallel); more, every app."""

KEPT_FOR = 2.0
"""Seconds an app's list answers its rounds while no change of its containers came."""


class SharedRead(Generic[T]):
    """``read()`` for everyone who asks at the same time: single flight, with freshness (a
    ``GroupCommit`` whose callers bring nothing but their wish to read)."""

    def __init__(self, read: Callable[[], Awaitable[T]], *, name: str) -> None:
        self._read = read
        self._commit: GroupCommit[None, T] = GroupCommit(name=name)

    @property
    def reads(self) -> int:
        """Reads made (for tests and benchmarks)."""
        return self._commit.runs

    async def get(self) -> T:
        """The result of a read that started after this call."""
        return await self._commit.join(None, self._read_for)

    async def close(self) -> None:
        """Cancel a read in flight (its callers see ``CancelledError``)."""
        await self._commit.close()

    async def _read_for(self, _callers: list[None]) -> T:
        return await self._read()


class InstancesRead:
    """The engine's containers by app, read once for everyone who asks at the same time:
    ``get()`` every app's, ``of(key)`` one app's (a read that only ``of`` callers of a few apps
    joined lists just those apps)."""

    def __init__(self, driver: Driver, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._driver = driver
        self._clock = clock
        # Each caller joins with the app it wants, or None for every app.
        self._commit: GroupCommit[AppKey | None, dict[AppKey, list[Instance]]] = GroupCommit(
            name="engine list"
        )
        self.narrowed = 0  # reads that listed some apps only (for tests and benchmarks)
        self.kept_answers = 0  # calls answered from a kept list (for tests and benchmarks)
        # Set by the driver watch while its event stream is open: every change is then told.
        self.watching = False
        self._keep = driver.placement == "instances"
        self._kept: dict[AppKey, tuple[float, tuple[Instance, ...]]] = {}  # (read at, containers)
        # The apps that changed since the read in flight began (one read at a time): their
        # lists from it are not kept. None: every app changed.
        self._changed_since_read: set[AppKey] | None = set()
        # Patches of kept lists: the containers each app's patch is still to inspect, and the
        # patch under way per app (set when it is done).
        self._dirty: dict[AppKey, set[str]] = {}
        self._patching: dict[AppKey, asyncio.Event] = {}
        self._patches: set[asyncio.Task[None]] = set()
        self.patches = 0  # kept lists patched (for tests and benchmarks)

    @property
    def reads(self) -> int:
        """Reads made (for tests and benchmarks)."""
        return self._commit.runs

    async def of(self, key: AppKey) -> list[Instance]:
        """``key``'s instances (this installation's and legacy ones), running or not."""
        while self.watching and (kept := self._kept.get(key)) is not None:
            if self._clock() - kept[0] >= KEPT_FOR:
                break
            patching = self._patching.get(key)
            if patching is None:
                self.kept_answers += 1
                return list(kept[1])
            await patching.wait()  # then look again: the patch may have dropped the list
        return list((await self._commit.join(key, self._list)).get(key, ()))

    def changed(self, key: AppKey | None, container_id: str | None = None) -> None:
        """``key``'s container ``container_id`` changed, or may have: a kept list of the app
        gets it inspected and put in (a patch). Without a container (a change that cannot say
        which), or without a kept list, ``key``'s next round lists; ``key`` None: every app's."""
        if key is None:
            self._changed_since_read = None
            self._kept.clear()
            self._dirty.clear()
            return
        if self._changed_since_read is not None:
            self._changed_since_read.add(key)
        if container_id is None or key not in self._kept:
            self._kept.pop(key, None)
            return
        self._dirty.setdefault(key, set()).add(container_id)
        if key not in self._patching:
            done = self._patching[key] = asyncio.Event()
            task = asyncio.create_task(self._patch(key, done), name=f"patch list of {key}")
            self._patches.add(task)
            task.add_done_callback(self._patches.discard)

    async def _patch(self, key: AppKey, done: asyncio.Event) -> None:
        """Inspect ``key``'s changed containers, and put them into its kept list as they are,
        until no change waits (one patch at a time per app: a later inspect never lands before
        an earlier one)."""
        try:
            while changed := self._dirty.pop(key, None):
                ids = sorted(changed)
                now = await asyncio.gather(*(self._driver.inspect_instance(cid) for cid in ids))
                kept = self._kept.get(key)
                if kept is None:
                    continue  # dropped meanwhile: the next round lists
                by_container = {i.container_id: i for i in kept[1]}
                for cid, instance in zip(ids, now, strict=True):
                    if instance is None or instance.key != key:
                        by_container.pop(cid, None)  # gone
                    else:
                        by_container[cid] = instance
                self._kept[key] = (kept[0], tuple(by_container.values()))
                self.patches += 1
        except Exception as exc:  # the engine did not answer: the next round lists
            log.debug("patching the kept list of %s failed: %s", key, exc)
            self._kept.pop(key, None)
            self._dirty.pop(key, None)
        finally:
            del self._patching[key]
            done.set()

    async def get(self) -> dict[AppKey, list[Instance]]:
        return await self._commit.join(None, self._list)

    async def close(self) -> None:
        for task in list(self._patches):
            task.cancel()
        await asyncio.gather(*self._patches, return_exceptions=True)
        await self._commit.close()

    async def _list(self, asked: list[AppKey | None]) -> dict[AppKey, list[Instance]]:
        began, self._changed_since_read = self._clock(), set()
        keys = {key for key in asked if key is not None}
        by_app: dict[AppKey, list[Instance]]
        if None in asked or len(keys) > NARROW_UP_TO:
            by_app = {}
            for instance in await self._driver.list_instances():
                by_app.setdefault(instance.key, []).append(instance)
        else:
            self.narrowed += 1
            ordered = sorted(keys)
            lists = await asyncio.gather(*(self._driver.list_instances(key) for key in ordered))
            by_app = dict(zip(ordered, lists, strict=True))
        changed = self._changed_since_read
        if self._keep and changed is not None:
            # What has aged out goes (a destroyed app's last list among it).
            self._kept = {k: v for k, v in self._kept.items() if began - v[0] < KEPT_FOR}
            for key in keys.union(by_app).difference(changed):
                self._kept[key] = (began, tuple(by_app.get(key, ())))
        return by_app


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
