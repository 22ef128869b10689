"""Keeping logs: every instance's output copied into the ``LogArchive`` while it runs, and
NGINX's log files rotated by size and age.

    round sees an instance ──collect──▶ task: driver.logs([container], follow) ──▶ SegmentWriter
                                        (lines already kept, by time, are skipped: a restarted
                                         kiln re-reads a container's history without doubling it)
    every ROTATE_EVERY s ──▶ NGINX's access/error log over size or age? rename + reopen (USR1)
                         └─▶ archive.prune_all() (age bound for apps that went quiet)
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

from kiln.background import stop_tasks
from kiln.config.file import LogsSettings
from kiln.drivers.base import Driver
from kiln.errors import KilnError
from kiln.logs import LogArchive, rotate
from kiln.model import AppKey, Instance
from kiln.router.base import Router

log = logging.getLogger("kiln.logs")

ROTATE_EVERY = 10.0
# Every app's archive directory is walked and stat'ed: at 100 apps that is thousands of
# syscalls, so it runs in a thread, and less often than NGINX's two files are looked at.
PRUNE_EVERY = 60.0


class LogKeeper:
    def __init__(
        self, *, driver: Driver, router: Router, archive: LogArchive, settings: LogsSettings
    ) -> None:
        self._driver = driver
        self._router = router
        self.archive = archive
        self._settings = settings
        self._tasks: dict[str, asyncio.Task[None]] = {}  # by container id
        # Containers collected (or being collected) → their app: forgotten once the container
        # is gone (``gone``) or its app is (``forget_app``), so it holds what runs, not history.
        self._seen: dict[str, AppKey] = {}
        self._rotator: asyncio.Task[None] | None = None
        self._opened_at: dict[str, float] = {}  # NGINX log name → when it was started anew

    def collect(self, instance: Instance) -> None:
        """Start copying the instance's output, once per container."""
        if instance.container_id in self._seen or instance.container_id in self._tasks:
            return
        self._seen[instance.container_id] = instance.key
        task = asyncio.get_running_loop().create_task(
            self._copy(instance), name=f"kiln-logs:{instance.id}"
        )
        self._tasks[instance.container_id] = task
        container_id = instance.container_id

        def done(_task: asyncio.Task[None]) -> None:
            self._tasks.pop(container_id, None)

        task.add_done_callback(done)

    def gone(self, container_id: str) -> None:
        """The engine removed the container: it is never listed again (its copy, if still
        running, ends with the container's output stream)."""
        self._seen.pop(container_id, None)

    def forget_app(self, key: AppKey) -> None:
        """A destroyed app whose instances are gone: nothing of it is collected any more."""
        for container_id in [c for c, app in self._seen.items() if app == key]:
            del self._seen[container_id]

    def collected(self) -> dict[str, AppKey]:
        """The containers whose output is being (or was) copied, by container id."""
        return dict(self._seen)

    async def _copy(self, instance: Instance) -> None:
        writer = self.archive.writer(instance.key, instance.id, instance.release)
        kept_until = writer.last_at
        try:
            async for line in self._driver.logs([instance.container_id], follow=True, tail=None):
                at = (line.at or datetime.now(UTC)).timestamp()
                if at <= kept_until:
                    continue
                writer.write(at, line.stream, line.text.rstrip("\n"))
        except KilnError as exc:
            log.debug("logs of %s end: %s", instance.id, exc)
        except Exception:
            log.exception("copying the logs of %s failed", instance.id)
        finally:
            writer.close()

    # --- NGINX's files ---------------------------------------------------------------------

    def start(self) -> None:
        if self._rotator is None:
            self._rotator = asyncio.create_task(self._rotate_forever(), name="kiln-log-rotation")

    async def rotate_router_logs(self, *, now: float | None = None) -> list[str]:
        """Rotate NGINX's files past ``router_max_bytes`` or ``router_max_age``; which."""
        moment = time.time() if now is None else now
        done: list[str] = []
        for name, path in self._router.log_files().items():
            opened = self._opened_at.setdefault(name, moment)
            try:
                size = path.stat().st_size
            except OSError:
                continue
            due = size >= self._settings.router_max_bytes or (
                size > 0 and moment - opened >= self._settings.router_max_age
            )
            if due and rotate(path, self._settings.router_keep):
                done.append(name)
                self._opened_at[name] = moment
        if done:
            await self._router.reopen_logs()
        return done

    async def _rotate_forever(self) -> None:
        pruned_at = time.monotonic()
        while True:
            await asyncio.sleep(ROTATE_EVERY)
            try:
                await self.rotate_router_logs()
                if time.monotonic() - pruned_at >= PRUNE_EVERY:
                    pruned_at = time.monotonic()
                    await asyncio.to_thread(self.archive.prune_all)
            except Exception:
                log.exception("log rotation failed; trying again in %gs", ROTATE_EVERY)

    async def close(self) -> None:
        await stop_tasks(*self._tasks.values(), self._rotator)
        self._tasks.clear()
        self._rotator = None
