"""One level-based reconcile loop per app: wake on a key, ``observe → plan → act``, sleep.

The work queue carries keys, never events: a wake-up (driver event, health flip, API write,
the resync ticker, a plan's ``Wait.until``) only says "look at this app again". ``sync(key)``
is idempotent, so extra wake-ups cost one cheap round and lost ones are caught by the resync.
A round that fails with a temporary failure is retried with a doubling delay (0.2 s → 10 s).

The resync is one ticker for every loop, not a timer per loop: every ``resync_seconds`` it
wakes them all at once, so their rounds observe through one shared engine list (shared.py)
instead of one list per app spread over the period. Plan deadlines, retries and event wakes
stay per app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from kiln.background import stop_tasks
from kiln.errors import KilnError, TemporaryFailure
from kiln.model import AppKey

log = logging.getLogger("kiln.controller")

_RETRY_FIRST = 0.2
_RETRY_CAP = 10.0


class AppLoops:
    def __init__(
        self,
        sync: Callable[[AppKey], Awaitable[datetime | None]],
        *,
        resync_seconds: float,
        clock: Callable[[], datetime],
    ) -> None:
        self._sync = sync
        self._resync = resync_seconds
        self._clock = clock
        self._wakeups: dict[AppKey, asyncio.Event] = {}
        self._tasks: dict[AppKey, asyncio.Task[None]] = {}
        self._ticker: asyncio.Task[None] | None = None
        self.last_error: dict[AppKey, str] = {}
        # Called with a key whose loop is forgotten (a destroyed app whose instances are gone):
        # the control plane drops what it kept for the app (ControlPlane.forget_app).
        self.on_forget: Callable[[AppKey], None] | None = None
        # Called at each resync tick, before the loops wake: what a round keeps between rounds
        # (engine lists, shared.py) is dropped, so the resync always looks afresh.
        self.on_resync: Callable[[], None] | None = None
        self._closed = False

    def wake(self, key: AppKey) -> None:
        """Reconcile ``key`` soon; starts its loop if it has none. Nothing once closed: what
        still reports in while kiln stops (a health check, a finished stop) must not start a
        loop nobody will stop."""
        if self._closed:
            return
        event = self._wakeups.get(key)
        if event is None:
            event = self._wakeups[key] = asyncio.Event()
            self._tasks[key] = asyncio.create_task(self._run(key, event), name=f"reconcile {key}")
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._tick(), name="reconcile resync")
        event.set()

    def keys(self) -> list[AppKey]:
        return list(self._tasks)

    async def forget(self, key: AppKey) -> None:
        task = self._tasks.pop(key, None)
        self._wakeups.pop(key, None)
        self.last_error.pop(key, None)
        if self.on_forget is not None:
            self.on_forget(key)
        if task is not asyncio.current_task():
            await stop_tasks(task)

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._tasks.values())
        if self._ticker is not None:
            tasks.append(self._ticker)
            self._ticker = None
        self._tasks.clear()
        self._wakeups.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _tick(self) -> None:
        """The resync: every loop woken at the same moment, every ``resync_seconds``."""
        while True:
            await asyncio.sleep(self._resync)
            if self.on_resync is not None:
                self.on_resync()
            for event in self._wakeups.values():
                event.set()

    async def _run(self, key: AppKey, wakeup: asyncio.Event) -> None:
        retry = _RETRY_FIRST
        while True:
            wakeup.clear()
            delay: float | None = None  # until the next wake: an event, a command, the ticker
            try:
                until = await self._sync(key)
                retry = _RETRY_FIRST
                self.last_error.pop(key, None)
                if until is not None:
                    delay = max(0.0, (until - self._clock()).total_seconds())
            except asyncio.CancelledError:
                raise
            except TemporaryFailure as exc:
                self.last_error[key] = exc.message
                log.warning("reconcile %s: %s (retry in %.1fs)", key, exc.message, retry)
                delay, retry = retry, min(retry * 2, _RETRY_CAP)
            except KilnError as exc:
                self.last_error[key] = exc.message
                log.error("reconcile %s: %s", key, exc.message)
                delay, retry = retry, min(retry * 2, _RETRY_CAP)
            except Exception:
                self.last_error[key] = "internal error, see the server log"
                log.exception("reconcile %s failed", key)
                delay, retry = retry, min(retry * 2, _RETRY_CAP)
            if self._tasks.get(key) is not asyncio.current_task():
                return  # forgotten during this round: the app is gone and nothing runs
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), timeout=delay)
