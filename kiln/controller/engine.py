"""The engine: kiln's running control plane. Implements ``Service`` for the API.

    API write ─▶ store (desired) ─▶ wake(key) ─┐
    driver events / health flips / timers ─────┼─▶ AppLoops ─▶ sync(key):
                                               │      observe (driver.list, health, router memory)
                                               │      plan    (kiln.planning.plan, pure)
                                               │      act     (Executor: router, driver, store)
    supervisor: NGINX alive? engine reachable? resync every app

On start the engine adopts what runs: NGINX by its pid file, the peer lists NGINX holds, and
every container labelled ``io.kiln.managed``; containers of unknown apps or releases are
removed by the same loops that converge everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

from kiln.config import Settings
from kiln.controller.events import EventBus
from kiln.controller.executor import Executor
from kiln.controller.observe import Observer
from kiln.controller.reconciler import AppLoops
from kiln.controller.views import AppStatus, DeployResult, InstanceView, ReleaseView
from kiln.drivers.base import Driver, LogLine
from kiln.errors import (
    Conflict,
    DriverUnavailable,
    KilnError,
    NotFound,
    RouterConfigRejected,
    TemporaryFailure,
)
from kiln.health.monitor import HealthMonitor
from kiln.model import (
    AppKey,
    AppRecord,
    Event,
    Instance,
    Release,
    ReleaseOrigin,
    RolloutState,
    RouteEntry,
    Severity,
)
from kiln.planning import DesiredApp, Plan, plan, route_table
from kiln.router.base import Router
from kiln.spec import AppSpec, parse_spec, spec_hash
from kiln.store.base import Store

log = logging.getLogger("kiln.engine")

_SUPERVISE_SECONDS = 1.0
_EXIT_ACTIONS = frozenset({"die", "kill", "oom"})
_EXIT_RECHECK_SECONDS = (0.05, 0.15, 0.4)
_DESTROY_TIMEOUT = 60.0


def utc_now() -> datetime:
    return datetime.now(UTC)


class Engine:
    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        driver: Driver,
        router: Router,
        clock: Callable[[], datetime] = utc_now,
        health: HealthMonitor | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.driver = driver
        self.router = router
        self.clock = clock
        self.health = health or HealthMonitor(on_change=self._on_health_change, clock=clock)
        self.event_bus = EventBus(store, clock)
        self.loops = AppLoops(self._sync, resync_seconds=settings.resync_seconds, clock=clock)
        self.observer = Observer()
        self.executor = Executor(
            store=store,
            driver=driver,
            router=router,
            health=self.health,
            events=self.event_bus,
            clock=clock,
            track=self._track,
            wake=self.loops.wake,
        )
        self.shutdown_requested = asyncio.Event()
        self._instance_keys: dict[str, AppKey] = {}
        self._last_plan: dict[AppKey, Plan] = {}
        self._last_instances: dict[AppKey, list[Instance]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._driver_ok = True
        self._routes_lock = asyncio.Lock()

    @classmethod
    async def open(cls, settings: Settings) -> Engine:
        """The engine on kiln's embedded defaults: SQLite, the local Docker engine, NGINX."""
        from kiln.drivers.docker import DockerDriver
        from kiln.router.nginx import NginxRouter
        from kiln.store.sqlite import SqliteStore

        settings.home.mkdir(parents=True, exist_ok=True)
        settings.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        settings.run_dir.chmod(0o700)
        return cls(
            settings=settings,
            store=SqliteStore(settings.db_path),
            driver=DockerDriver(base_url=settings.docker_host),
            router=NginxRouter(
                prefix=settings.nginx_dir,
                listen_host=settings.http_host,
                listen_port=settings.http_port,
                run_dir=settings.run_dir,
                nginx_binary=settings.nginx_binary,
            ),
            clock=utc_now,
        )

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        await self.router.start()
        for key, peers in (await self.router.get_peers()).items():
            self.observer.memory[key].routed = frozenset(peers)
        # A rejected config is an event; NGINX keeps serving the last good one.
        with contextlib.suppress(RouterConfigRejected):
            await self._apply_routes()
        try:
            await self.driver.ping()
        except DriverUnavailable as exc:
            self._driver_ok = False
            self.event_bus.record(None, "driver.unavailable", exc.message, severity=Severity.ERROR)
        self.event_bus.record(None, "kiln.started", "kiln started; adopting what runs")
        for key in self._known_keys(await self._list_instances_or_empty()):
            self.loops.wake(key)
        self._tasks = [
            asyncio.create_task(self._watch_driver(), name="watch driver"),
            asyncio.create_task(self._supervise(), name="supervise"),
        ]

    async def close(self) -> None:
        """Stop the control plane (not NGINX, not the apps: they keep serving)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.loops.close()
        await self.executor.drain_background()
        await self.health.close()
        with contextlib.suppress(Exception):
            self.event_bus.record(
                None, "kiln.stopped", "kiln stopped; NGINX and the apps keep serving"
            )
        await self.driver.close()
        self.store.close()

    async def request_shutdown(self) -> None:
        self.shutdown_requested.set()

    # --- the reconcile round ------------------------------------------------------------

    async def _sync(self, key: AppKey) -> datetime | None:
        now = self.clock()
        log.debug("reconcile %s", key)
        desired = self._desired(key)
        instances = await self.driver.list_instances(key)
        self._last_instances[key] = instances
        running = {i.id for i in instances if i.running}
        tracked = self.health.tracked_ids()
        for instance in instances:
            if instance.running and instance.id not in tracked:
                self._track(instance)
        for instance_id in tracked - running:
            if self._instance_keys.get(instance_id) == key:
                self.health.untrack(instance_id)
                del self._instance_keys[instance_id]
        observed, crashed = self.observer.observe(key, instances, self.health.status, now=now)
        for instance in crashed:
            if instance.running:  # liveness failure: the plan retires and replaces it
                self.event_bus.record(
                    key,
                    "instance.unhealthy",
                    f"{instance.id} of release {instance.release} failed its liveness check "
                    f"({self.health.status(instance.id).last_error or 'unhealthy'}); replacing it",
                    severity=Severity.WARNING,
                    release=instance.release,
                    instance=instance.id,
                )
        result = plan(desired, observed, now)
        if result.actions:
            log.debug("plan %s: %s", key, ", ".join(type(a).__name__ for a in result.actions))
        self._last_plan[key] = result
        self._announce_backoff(key, result, observed.crashes.consecutive)
        await self.executor.execute(key, result, self.observer.memory[key])
        if (
            desired.target is None
            and desired.stopped
            and not instances
            and self.store.get_app(key) is None
        ):
            await self.loops.forget(key)
            return None
        waits = [w.until for w in result.waits if w.until is not None]
        return min(waits) if waits else None

    def _announce_backoff(self, key: AppKey, result: Plan, crashes: int) -> None:
        """A crash-loop wait is an event once per crash, so `kiln events` says why nothing starts."""
        memory = self.observer.memory[key]
        if crashes < memory.backoff_reported:
            memory.backoff_reported = 0
        for wait in result.waits:
            if wait.kind == "backoff" and crashes > memory.backoff_reported:
                memory.backoff_reported = crashes
                self.event_bus.record(
                    key, "instance.backoff", wait.reason, severity=Severity.WARNING
                )

    def _desired(self, key: AppKey) -> DesiredApp:
        app = self.store.get_app(key)
        if app is None:
            return DesiredApp.absent(key)
        target = self.store.get_release(key, app.target_release) if app.target_release else None
        stable = self.store.get_release(key, app.stable_release) if app.stable_release else None
        rollout = self.store.active_rollout(key)
        return DesiredApp(
            key=key,
            scale=app.scale,
            stopped=app.stopped,
            target=target,
            stable=stable,
            rollout=rollout,
        )

    def _track(self, instance: Instance) -> None:
        self._instance_keys[instance.id] = instance.key
        release = self._release_or_none(instance.key, instance.release)
        if release is None:
            return  # an orphan: no probes, it is never ready and will be removed
        health = release.spec.effective_health()
        if health is None:
            return
        address = instance.address
        routed = {p.instance_id for p in self.observer.memory[instance.key].routed}
        self.health.track(
            instance.id,
            readiness=health.readiness_probe(),
            liveness=health.liveness_probe(),
            host=address.host if address else None,
            port=address.port if address else None,
            started_at=instance.started_at or self.clock(),
            exec_fn=self._exec_fn(instance.container_id),
            assume_ready=instance.id in routed,
        )

    def _exec_fn(self, container_id: str) -> Callable[[Sequence[str], float], Awaitable[int]]:
        driver = self.driver

        async def run(command: Sequence[str], timeout: float) -> int:
            return await driver.exec(container_id, command, timeout=timeout)

        return run

    def _release_or_none(self, key: AppKey, number: int) -> Release | None:
        try:
            return self.store.get_release(key, number)
        except NotFound:
            return None

    def _on_health_change(self, instance_id: str) -> None:
        key = self._instance_keys.get(instance_id)
        if key is not None:
            self.loops.wake(key)

    # --- background watchers ------------------------------------------------------------

    async def _watch_driver(self) -> None:
        delay = 0.2
        while True:
            try:
                async for event in self.driver.watch():
                    delay = 0.2
                    log.debug(
                        "driver event %s %s of %s", event.action, event.instance_id, event.key
                    )
                    self.loops.wake(event.key)
                    if event.action in _EXIT_ACTIONS:
                        # Docker announces a death a moment before its container list shows
                        # the container as exited: look again shortly after.
                        loop = asyncio.get_running_loop()
                        for delay in _EXIT_RECHECK_SECONDS:
                            loop.call_later(delay, self.loops.wake, event.key)
            except asyncio.CancelledError:
                raise
            except KilnError as exc:
                log.debug("driver watch ended: %s", exc.message)
            except Exception:
                log.exception("driver watch failed")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _supervise(self) -> None:
        """Keep NGINX up, notice the engine coming and going, resync every app."""
        last_resync = self.clock()
        while True:
            await asyncio.sleep(_SUPERVISE_SECONDS)
            try:
                await self._supervise_router()
                await self._supervise_driver()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("supervisor round failed")
            if self.clock() - last_resync >= timedelta(seconds=self.settings.resync_seconds):
                last_resync = self.clock()
                for key in self._known_keys(await self._list_instances_or_empty()):
                    self.loops.wake(key)

    async def _supervise_router(self) -> None:
        if await self.router.is_running():
            return
        self.event_bus.record(
            None, "router.down", "NGINX is not running; restarting it", severity=Severity.WARNING
        )
        try:
            await self.router.start()
        except KilnError as exc:
            self.event_bus.record(
                None, "router.restart_failed", exc.message, severity=Severity.ERROR
            )
            return
        await self._apply_routes()
        for key, memory in self.observer.memory.items():
            if memory.routed:
                await self.router.set_peers(key, sorted(memory.routed))
        self.event_bus.record(
            None, "router.restarted", "NGINX restarted with the last routes and peers"
        )

    async def _supervise_driver(self) -> None:
        try:
            await self.driver.ping()
        except DriverUnavailable as exc:
            if self._driver_ok:
                self._driver_ok = False
                self.event_bus.record(
                    None, "driver.unavailable", exc.message, severity=Severity.ERROR
                )
            return
        if not self._driver_ok:
            self._driver_ok = True
            self.event_bus.record(
                None, "driver.available", "the container engine answers again; converging"
            )
            for key in self._known_keys(await self._list_instances_or_empty()):
                self.loops.wake(key)

    async def _list_instances_or_empty(self) -> list[Instance]:
        try:
            return await self.driver.list_instances()
        except TemporaryFailure:
            return []

    def _known_keys(self, instances: list[Instance]) -> set[AppKey]:
        keys = {app.key for app in self.store.list_apps()}
        keys.update(i.key for i in instances)
        return keys

    async def _apply_routes(self) -> None:
        async with self._routes_lock:
            try:
                await self.router.apply_routes(self._route_table())
            except RouterConfigRejected as exc:
                self.event_bus.record(
                    None, "router.config_rejected", exc.message, severity=Severity.ERROR
                )
                raise

    def _route_table(self, *, with_release: Release | None = None) -> list[RouteEntry]:
        """Every app's current routes (``with_release`` standing in for its app's); a clash
        between two apps raises ``Conflict``."""
        releases: dict[AppKey, Release] = {}
        for app in self.store.list_apps():
            number = app.target_release or app.stable_release
            if number is not None:
                releases[app.key] = self.store.get_release(app.key, number)
        if with_release is not None:
            releases[with_release.key] = with_release
        return route_table(releases.values())

    # --- Service: writes ----------------------------------------------------------------

    async def deploy(self, spec_text: str, *, message: str, who: str) -> DeployResult:
        spec = parse_spec(spec_text)
        digest = await self.driver.resolve_image(spec.image)
        return await self._release(
            spec,
            image=spec.image,
            digest=digest,
            message=message,
            who=who,
            origin=ReleaseOrigin.DEPLOY,
            rollback_of=None,
        )

    async def rollback(
        self, key: AppKey, *, to: int | None, message: str, who: str
    ) -> DeployResult:
        app = self._app(key)
        releases = self.store.list_releases(key)
        current = app.target_release
        if to is None:
            succeeded = {
                r.to_release
                for r in self.store.list_rollouts(key)
                if r.state is RolloutState.SUCCEEDED
            }
            earlier = [r for r in releases if current is None or r.number < current]
            good = [r for r in earlier if r.number in succeeded]
            choice = (good or earlier)[-1] if (good or earlier) else None
            if choice is None:
                raise Conflict(f"{key} has no release before {current} to roll back to")
        else:
            choice = self.store.get_release(key, to)
        current_release = self.store.get_release(key, current) if current else None
        if (
            current_release is not None
            and not app.stopped
            and current_release.digest == choice.digest
            and current_release.spec_hash == choice.spec_hash
        ):
            raise Conflict(
                f"{key} already runs release {current}, identical to release {choice.number}"
            )
        digest = await self.driver.resolve_image(choice.digest)
        spec = choice.spec.model_copy(update={"instances": app.scale})
        return await self._release(
            spec,
            image=choice.image,
            digest=digest,
            message=message or f"rollback to release {choice.number}",
            who=who,
            origin=ReleaseOrigin.ROLLBACK,
            rollback_of=choice.number,
        )

    async def _release(
        self,
        spec: AppSpec,
        *,
        image: str,
        digest: str,
        message: str,
        who: str,
        origin: ReleaseOrigin,
        rollback_of: int | None,
    ) -> DeployResult:
        key = AppKey(spec.environment, spec.app)
        hashed = spec_hash(spec)
        app = self.store.get_app(key)
        if app is not None and app.target_release is not None and not app.stopped:
            current = self.store.get_release(key, app.target_release)
            if (
                current.digest == digest
                and current.spec_hash == hashed
                and origin is ReleaseOrigin.DEPLOY
            ):
                if app.scale != spec.instances:
                    self.store.set_scale(key, spec.instances, now=self.clock())
                    self.event_bus.record(
                        key, "app.scaled", f"{who} scaled to {spec.instances} (spec unchanged)"
                    )
                    self.loops.wake(key)
                return DeployResult(
                    release=current,
                    rollout=self.store.active_rollout(key),
                    changed=False,
                    message=f"release {current.number} already runs this image and spec",
                )
        # A route clash is an input error: check it before anything is written.
        self._route_table(with_release=_probe_release(key, spec, digest, hashed))
        release, rollout = self.store.create_release(
            key,
            spec=spec,
            image=image,
            digest=digest,
            spec_hash=hashed,
            created_by=who,
            message=message,
            origin=origin,
            rollback_of=rollback_of,
            scale=spec.instances,
            deadline_seconds=spec.deploy.deadline,
            now=self.clock(),
        )
        what = f"rollback to release {rollback_of}" if rollback_of else f"image {image}"
        self.event_bus.record(
            key,
            "release.created",
            f"release {release.number} created by {who}: {what}"
            + (f" — {message}" if message else ""),
            release=release.number,
        )
        self.event_bus.record(
            key,
            "rollout.started",
            f"{spec.deploy.strategy.value} rollout "
            + (f"from release {rollout.from_release} " if rollout.from_release else "")
            + f"to release {release.number}, {spec.instances} instance(s), "
            f"deadline {spec.deploy.deadline:g}s",
            release=release.number,
        )
        # A rejected config is recorded as an event; peers still move, the old routes keep serving.
        with contextlib.suppress(RouterConfigRejected):
            await self._apply_routes()
        self.loops.wake(key)
        return DeployResult(release=release, rollout=rollout, changed=True)

    async def scale(self, key: AppKey, instances: int, *, who: str) -> AppStatus:
        if instances < 0:
            raise KilnError(f"instances must be ≥ 0, got {instances}")
        app = self._app(key)
        self.store.set_scale(key, instances, now=self.clock())
        if app.stopped and instances > 0:
            self.store.set_stopped(key, False, now=self.clock())
        self.event_bus.record(
            key, "app.scaled", f"{who} scaled {key} from {app.scale} to {instances}"
        )
        self.loops.wake(key)
        return await self.status(key)

    async def stop(self, key: AppKey, *, who: str) -> AppStatus:
        self._app(key)
        self.store.set_stopped(key, True, now=self.clock())
        self.event_bus.record(key, "app.stopped", f"{who} stopped {key}; its history is kept")
        self.loops.wake(key)
        return await self.status(key)

    async def destroy(self, key: AppKey, *, who: str) -> None:
        self._app(key)
        self.store.delete_app(key)
        self.event_bus.record(key, "app.destroyed", f"{who} destroyed {key}")
        self.loops.wake(key)
        deadline = self.clock() + timedelta(seconds=_DESTROY_TIMEOUT)
        while self.clock() < deadline:
            remaining = await self.driver.list_instances(key)
            if not remaining:
                break
            await asyncio.sleep(0.1)
        await self.router.forget_peers(key)
        self.observer.memory.pop(key, None)
        await self._apply_routes()

    # --- Service: reads -----------------------------------------------------------------

    def _app(self, key: AppKey) -> AppRecord:
        app = self.store.get_app(key)
        if app is None:
            raise NotFound(f"no app {key}; `kiln status` lists the apps")
        return app

    async def status(self, key: AppKey) -> AppStatus:
        app = self._app(key)
        return self._status(app)

    async def list_status(self) -> list[AppStatus]:
        return [self._status(app) for app in self.store.list_apps()]

    def _status(self, app: AppRecord) -> AppStatus:
        key = app.key
        memory = self.observer.memory.get(key)
        routed = {p.instance_id for p in memory.routed} if memory else set()
        retiring = memory.retiring_since if memory else {}
        views = []
        for instance in self._last_instances.get(key, []):
            health = self.health.status(instance.id)
            views.append(
                InstanceView(
                    id=instance.id,
                    release=instance.release,
                    container_id=instance.container_id,
                    status=instance.status.value,
                    ready=health.ready and instance.running,
                    in_router=instance.id in routed,
                    draining=instance.id in retiring and instance.running,
                    address=str(instance.address) if instance.address else None,
                    started_at=instance.started_at,
                    exit_code=instance.exit_code,
                    last_error=health.last_error,
                )
            )
        rollout = self.store.active_rollout(key)
        last_plan = self._last_plan.get(key)
        ready = last_plan.ready if last_plan else 0
        if app.stopped:
            state = "stopped"
        elif app.target_release is None:
            state = "failed" if app.stable_release is None else "empty"
        elif rollout is not None:
            state = "deploying"
        elif ready < app.scale:
            state = "degraded"
        else:
            state = "running"
        message = last_plan.summary if last_plan else ""
        if error := self.loops.last_error.get(key):
            message = f"{message} — last error: {error}" if message else error
        urls = []
        number = app.target_release or app.stable_release
        if number is not None:
            release = self._release_or_none(key, number)
            if release is not None:
                for route in release.spec.effective_routes():
                    host = route.host or self.settings.http_host
                    urls.append(f"http://{host}:{self.settings.http_port}{route.path}")
        return AppStatus(
            key=key,
            state=state,
            scale=app.scale,
            stopped=app.stopped,
            target_release=app.target_release,
            stable_release=app.stable_release,
            ready=ready,
            instances=sorted(views, key=lambda v: (v.release, v.id)),
            rollout=rollout,
            urls=urls,
            message=message,
        )

    async def releases(self, key: AppKey) -> list[ReleaseView]:
        app = self._app(key)
        # Oldest first, so the latest rollout to each release wins.
        latest = {rollout.to_release: rollout for rollout in self.store.list_rollouts(key)}
        views = []
        for release in self.store.list_releases(key):
            outcome = latest.get(release.number)
            if outcome is None:
                result, reason = "", ""
            else:
                result, reason = outcome.state.value, outcome.reason
            if release.number == app.target_release and result == "succeeded" and not app.stopped:
                result = "current"
            views.append(ReleaseView(release=release, result=result, result_reason=reason))
        return views

    async def events(
        self, *, key: AppKey | None, after_id: int = 0, limit: int = 100
    ) -> list[Event]:
        return self.store.list_events(key=key, after_id=after_id, limit=limit)

    async def follow_events(self, *, key: AppKey | None, after_id: int) -> AsyncIterator[Event]:
        async for event in self.event_bus.follow(key=key, after_id=after_id):
            yield event

    async def logs(
        self, key: AppKey, *, instance: str | None, follow: bool, tail: int | None
    ) -> AsyncIterator[LogLine]:
        self._app(key)
        instances = await self.driver.list_instances(key)
        if instance is not None:
            instances = [
                i for i in instances if i.id == instance or i.container_id.startswith(instance)
            ]
            if not instances:
                raise NotFound(f"no instance {instance} in {key}; `kiln ps {key.app}` lists them")
        async for line in self.driver.logs(
            [i.container_id for i in instances], follow=follow, tail=tail
        ):
            yield line


def _probe_release(key: AppKey, spec: AppSpec, digest: str, hashed: str) -> Release:
    """A throwaway release used only to check the route table before anything is written."""
    return Release(
        key=key,
        number=1,
        image=spec.image,
        digest=digest,
        spec=spec,
        spec_hash=hashed,
        created_at=utc_now(),
        created_by="",
        message="",
    )
