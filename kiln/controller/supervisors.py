"""The background supervisors: they keep what the control plane depends on in order.

    watch driver   driver events (start, die, oom ...) ─▶ wake that app's loop
    supervise      every second: NGINX alive? (restart it with the last routes and peers)
                   engine reachable? (event when it goes and comes back, then converge)
                   every KILN_RESYNC_SECONDS: start loops for apps that have none yet (the
                   loops' own resync ticker wakes the others) and check the route table

Wakes are precise: an event wakes its app only, and nothing here wakes every app except the
engine coming back (whatever happened meanwhile was not announced).

A failed supervisor round is logged and the next one tries again: supervision never stops.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from kiln.controller.drift import report_removed
from kiln.controller.routes import sync_routes
from kiln.controller.runtime import ControlPlane
from kiln.errors import DriverUnavailable, KilnError, TemporaryFailure
from kiln.model import AppKey, EventKind, Severity

log = logging.getLogger("kiln.engine")

_ROUTER_RETRY_FIRST = 0.05
_ROUTER_RETRY_CAP = 5.0
_SUPERVISE_SECONDS = 1.0
# Events that say nothing a round should act on at once: "kill" is a signal sent (a death it
# causes is a "die" of its own), "stop" follows the "die" of a stopped container, and "create"
# comes a moment before the "start" of the same container. Each wake is a round of the app;
# during a rollout the old instances' stops sent three of these apiece (with their rechecks),
# and the rounds they made held up its own. A round woken by a "create" also raced the start
# it precedes: it found a container not started yet, of kiln's labels, and removed it (a
# hand-made `docker run` with kiln's labels then failed to start instead of being reported). A
# container created and never started is seen by the next resync.
_NO_NEWS_ACTIONS = frozenset({"create", "kill", "stop"})
_EXIT_ACTIONS = frozenset({"die", "oom"})
_EXIT_RECHECK_SECONDS = (0.05, 0.15, 0.4)


class Supervisors:
    def __init__(self, plane: ControlPlane) -> None:
        self._plane = plane
        self._driver_ok = True
        self._tasks: list[asyncio.Task[None]] = []
        self._router_lock = asyncio.Lock()  # one restart at a time: the watch and the poll

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._watch_driver(), name="watch driver"),
            asyncio.create_task(self._watch_router(), name="watch router"),
            asyncio.create_task(self._supervise(), name="supervise"),
        ]
        if self._plane.registry is not None:
            self._tasks.append(asyncio.create_task(self._watch_registry(), name="watch registry"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _watch_driver(self) -> None:
        plane = self._plane
        delay = 0.2
        reopened = False
        while True:
            try:
                events = plane.driver.watch()  # from now on: nothing after this is missed
                # ... so engine lists may be kept until an event says they changed (shared.py).
                plane.reads.instances.changed(None)
                plane.reads.instances.watching = True
                if reopened and await self._engine_answers():
                    # What happened while no stream was open sent no event: every app looks
                    # again now rather than at the next resync. (An engine that is down gets
                    # its converge from supervise_driver once it answers again.)
                    await wake_known_apps(plane)
                reopened = True
                async for event in events:
                    delay = 0.2
                    log.debug(
                        "driver event %s %s of %s", event.action, event.instance_id, event.key
                    )
                    if event.action not in _NO_NEWS_ACTIONS:
                        plane.reads.instances.changed(event.key, event.container_id)
                        plane.loops.wake(event.key)
                    if event.action == "destroy":
                        report_removed(plane, event.key, event.instance_id, event.container_id)
                        # Gone for good: what was kept for it goes too.
                        plane.forget_instance(event.key, event.instance_id, event.container_id)
                        if plane.logs is not None:
                            plane.logs.gone(event.container_id)
                    if event.action in _EXIT_ACTIONS:
                        # Docker announces a death a moment before its container list shows
                        # the container as exited: look again shortly after, unless a round
                        # already saw it so.
                        loop = asyncio.get_running_loop()
                        for after in _EXIT_RECHECK_SECONDS:
                            loop.call_later(
                                after, recheck_exit, plane, event.key, event.container_id
                            )
            except asyncio.CancelledError:
                raise
            except KilnError as exc:
                log.debug("driver watch ended: %s", exc.message)
            except Exception:
                log.exception("driver watch failed")
            finally:
                plane.reads.instances.watching = False  # no news now: every round lists
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _watch_router(self) -> None:
        """Restart NGINX the moment its master exits (the 1 s supervise poll is the fallback);
        while it cannot start, try again with a doubling delay (0.05 s → 5 s)."""
        plane = self._plane
        delay = _ROUTER_RETRY_FIRST
        while True:
            try:
                await plane.router.wait_exited()
                async with self._router_lock:
                    await self.supervise_router()
                delay = _ROUTER_RETRY_FIRST if await plane.router.is_running() else delay
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("router watch failed")
            await asyncio.sleep(delay)
            if not await plane.router.is_running():
                delay = min(delay * 2, _ROUTER_RETRY_CAP)

    async def _watch_registry(self) -> None:
        """Restart the embedded registry the moment its process exits (like NGINX); while it
        cannot start, try again with a doubling delay (0.05 s → 5 s)."""
        registry = self._plane.registry
        assert registry is not None
        delay = _ROUTER_RETRY_FIRST
        while True:
            try:
                await registry.wait_exited()
                started = await self.supervise_registry()
                delay = _ROUTER_RETRY_FIRST if started else min(delay * 2, _ROUTER_RETRY_CAP)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("registry watch failed")
            await asyncio.sleep(delay)

    async def supervise_registry(self, *, first: bool = False) -> bool:
        """Start the registry when it does not run; False when it could not be started (an
        event says why; running apps are unaffected, only pushes and pulls wait for it)."""
        registry = self._plane.registry
        if registry is None:
            return True
        plane = self._plane
        try:
            if first:
                await registry.start()
                return True
            if not await registry.ensure_running():
                return True
        except KilnError as exc:
            plane.events.record(
                None,
                EventKind.REGISTRY_RESTART_FAILED,
                f"the registry at {registry.host} cannot start: {exc.message}",
                severity=Severity.ERROR,
            )
            return False
        plane.events.record(
            None,
            EventKind.REGISTRY_RESTARTED,
            f"the embedded registry at {registry.host} had exited; restarted it",
            severity=Severity.WARNING,
        )
        return True

    async def _supervise(self) -> None:
        """Keep NGINX up, notice the engine coming and going, resync every app."""
        plane = self._plane
        last_resync = plane.clock()
        while True:
            await asyncio.sleep(_SUPERVISE_SECONDS)
            try:
                async with self._router_lock:
                    await self.supervise_router()
                await self.supervise_driver()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("supervisor round failed")
            if plane.clock() - last_resync >= timedelta(seconds=plane.settings.resync_seconds):
                last_resync = plane.clock()
                try:
                    await wake_new_apps(plane)
                    # A round syncs the routes when its own app's changed; this is the
                    # level-based net under that (a table NGINX lost, an app gone from the store).
                    await sync_routes(plane)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("resync failed")
                await note_other_installations(plane)

    async def supervise_router(self) -> None:
        plane = self._plane
        if await plane.router.is_running():
            return
        plane.events.record(
            None,
            EventKind.ROUTER_DOWN,
            "NGINX is not running; restarting it",
            severity=Severity.WARNING,
        )
        try:
            await plane.router.start()
        except KilnError as exc:
            plane.events.record(
                None, EventKind.ROUTER_RESTART_FAILED, exc.message, severity=Severity.ERROR
            )
            return
        await sync_routes(plane, force=True)
        for key, memory in plane.observer.memory.items():
            if memory.routed:
                await plane.router.set_peers(key, sorted(memory.routed), memory.policy)
        plane.events.record(
            None, EventKind.ROUTER_RESTARTED, "NGINX restarted with the last routes and peers"
        )

    async def _engine_answers(self) -> bool:
        try:
            await self._plane.driver.ping()
        except KilnError:
            return False
        return True

    async def supervise_driver(self) -> None:
        """Ping the engine: an event when it stops answering, another (and a converge of every
        app) when it answers again."""
        plane = self._plane
        try:
            await plane.driver.ping()
        except DriverUnavailable as exc:
            if self._driver_ok:
                self._driver_ok = False
                plane.events.record(
                    None, EventKind.DRIVER_UNAVAILABLE, exc.message, severity=Severity.ERROR
                )
            return
        if not self._driver_ok:
            self._driver_ok = True
            plane.events.record(
                None, EventKind.DRIVER_AVAILABLE, "the container engine answers again; converging"
            )
            await wake_known_apps(plane)


async def note_engine_host(plane: ControlPlane) -> None:
    """Say at start what the engine's network needs fixed for instances to stay reachable, and
    what its host wants tuned for many instances."""
    try:
        network = await plane.driver.network_notes()
        host = await plane.driver.host_notes()
    except KilnError:
        return
    for kind, notes in ((EventKind.DRIVER_NETWORK, network), (EventKind.DRIVER_HOST, host)):
        for note in notes:
            plane.events.record(None, kind, note, severity=Severity.WARNING)


async def note_other_installations(plane: ControlPlane) -> None:
    """Say once per installation that this engine also runs another kiln's containers."""
    try:
        others = await plane.driver.other_installations()
    except KilnError:
        return
    for other in sorted(others - plane.other_installations):
        plane.other_installations.add(other)
        plane.events.record(
            None,
            EventKind.DRIVER_SHARED,
            f"this Docker engine also runs containers of another kiln installation ({other[:8]});"
            f" this kiln ({plane.driver.installation_id[:8]}) never stops, adopts or removes them",
            severity=Severity.WARNING,
        )


def recheck_exit(plane: ControlPlane, key: AppKey, container_id: str) -> None:
    """Wake ``key``'s loop unless its last round listed ``container_id`` as stopped or gone;
    the container is looked at again (the engine's list lagged behind its event)."""
    listed = plane.last_instances.get(key)
    if listed is None or any(i.container_id == container_id and i.running for i in listed):
        plane.reads.instances.changed(key, container_id)
        plane.loops.wake(key)


async def wake_known_apps(plane: ControlPlane) -> None:
    """Wake every app the store knows and every app a container is labelled with (so the
    containers of unknown apps get removed)."""
    for key in await _known_keys(plane, await _labelled_keys(plane)):
        plane.loops.wake(key)


async def wake_new_apps(plane: ControlPlane) -> None:
    """Wake the known apps that have no loop yet (an app whose loop ended, containers of an
    unknown app); the others are woken by their loops' resync ticker."""
    running = set(plane.loops.keys())
    for key in await _known_keys(plane, await _labelled_keys(plane)) - running:
        plane.loops.wake(key)


async def _labelled_keys(plane: ControlPlane) -> set[AppKey]:
    try:
        return set(await plane.reads.instances.get())
    except TemporaryFailure:
        return set()


async def _known_keys(plane: ControlPlane, labelled: set[AppKey]) -> set[AppKey]:
    return {app.key for app in await plane.store.list_apps()} | labelled
