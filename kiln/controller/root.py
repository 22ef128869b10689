"""The composition root: which store, driver and router kiln runs on, and how the controller
is wired over them. Nothing else in kiln picks an implementation.

    Settings ─▶ build_store     SQLite at KILN_HOME/kiln.db
             ─▶ build_driver    "docker": the Docker engine at DOCKER_HOST
             ─▶ build_router    NGINX under KILN_HOME/nginx
             ─▶ build_registry  the embedded registry under KILN_HOME/registry, or registry.url
                      │
                      ▼
    assemble_engine: ControlPlane ◀─ ReconcileRound ◀─ AppLoops     (the loops run rounds)
                                  ◀─ Executor                      (the round acts through it)
                                  ─▶ Engine (lifecycle + Service for the API)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime

from kiln.config import Settings, read_or_create_installation_id
from kiln.controller.engine import Engine
from kiln.controller.events import EventBus
from kiln.controller.executor import Executor
from kiln.controller.images import Puller
from kiln.controller.logkeeper import LogKeeper
from kiln.controller.memory import MemoryTrimmer, glibc_trim
from kiln.controller.observability import attach_metrics
from kiln.controller.observe import Observer
from kiln.controller.reconciler import AppLoops
from kiln.controller.round import ReconcileRound, track_instance
from kiln.controller.runtime import ControlPlane, utc_now
from kiln.controller.shared import SharedReads
from kiln.controller.webhooks import Receiver, Webhooks, failure_reason, skipped_reason
from kiln.drivers.base import Driver
from kiln.errors import InvalidInput
from kiln.health.monitor import HealthMonitor
from kiln.logs import LogArchive
from kiln.model import AppKey, Event
from kiln.registry.base import Credentials, Registry
from kiln.router.base import Router
from kiln.store.aio import AsyncStore, guard_from_env
from kiln.store.base import Store
from kiln.store.vault import SecretVault

# The container engines kiln can run on. Docker is the only one today; a new driver is one
# more entry here (and a ``Settings`` field naming it), nothing else changes.
DRIVERS = ("docker",)


async def open_engine(settings: Settings, *, driver: str = "docker") -> Engine:
    """The engine on kiln's embedded defaults: SQLite, the local Docker engine, NGINX."""
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    settings.run_dir.chmod(0o700)
    return assemble_engine(
        settings=settings,
        store=build_store(settings),
        driver=build_driver(settings, kind=driver),
        router=build_router(settings),
        registry=build_registry(settings),
        clock=utc_now,
    )


def build_store(settings: Settings) -> Store:
    from kiln.store.sqlite import SqliteStore

    return SqliteStore(settings.db_path)


def build_driver(settings: Settings, *, kind: str = "docker") -> Driver:
    # Imported on use: only the chosen driver's SDK is loaded.
    if kind == "docker":
        from kiln.drivers.docker import DockerDriver

        return DockerDriver(
            base_url=settings.docker_host,
            installation_id=read_or_create_installation_id(settings),
            bridge_path=settings.bridge_path,
        )
    raise InvalidInput(f"unknown driver {kind!r}; kiln runs on: {', '.join(DRIVERS)}")


def build_router(settings: Settings) -> Router:
    from kiln.router.nginx import NginxRouter

    return NginxRouter(
        prefix=settings.nginx_dir,
        listen_host=settings.http_host,
        listen_port=settings.http_port,
        run_dir=settings.run_dir,
        nginx_binary=settings.nginx_binary,
    )


def build_registry(settings: Settings) -> Registry:
    section = settings.file.registry
    if section.url is None:
        from kiln.registry.embedded import EmbeddedRegistry

        return EmbeddedRegistry(settings.home / "registry", port=section.port)
    from kiln.registry.client import RemoteRegistry

    credentials = None
    if section.username is not None and section.password_file is not None:
        try:
            password = section.password_file.read_text().strip()
        except OSError as exc:
            raise InvalidInput(
                f"registry.password_file {section.password_file} cannot be read: {exc.strerror}"
            ) from exc
        credentials = Credentials(section.username, password)
    return RemoteRegistry(section.url, credentials=credentials)


def assemble_engine(
    *,
    settings: Settings,
    store: Store,
    driver: Driver,
    router: Router,
    clock: Callable[[], datetime] = utc_now,
    health: HealthMonitor | None = None,
    registry: Registry | None = None,
    vault: SecretVault | None = None,
    guard_store: bool | None = None,
) -> Engine:
    """The controller over these ports (tests pass fakes). ``store`` is wrapped in the async
    facade (its own thread); ``guard_store`` (default: ``KILN_STORE_GUARD=1`` in the
    environment, which the test suite sets) makes a store call on the event loop's thread
    raise instead of blocking the loop."""
    if guard_store is None:
        guard_store = guard_from_env()
    facade = AsyncStore(store, guard=guard_store)

    # The wiring has one cycle: the loops run rounds and health flips wake loops, and both
    # belong to the plane. These two functions close it once the plane and round exist.
    async def reconcile(key: AppKey) -> datetime | None:
        if plane.metrics is None:
            return await reconcile_round.sync(key)
        with plane.metrics.reconcile_round.time():
            return await reconcile_round.sync(key)

    def on_health_change(instance_id: str) -> None:
        plane.wake_app_of(instance_id)

    plane = ControlPlane(
        settings=settings,
        store=facade,
        driver=driver,
        router=router,
        clock=clock,
        health=health or HealthMonitor(on_change=on_health_change, clock=clock),
        events=EventBus(facade, clock),
        loops=AppLoops(reconcile, resync_seconds=settings.resync_seconds, clock=clock),
        observer=Observer(),
        reads=SharedReads(driver, router),
        registry=registry,
        vault=vault or SecretVault(store, home=settings.home),
        memory=MemoryTrimmer(trim=glibc_trim()),
    )
    plane.loops.on_forget = plane.forget_app
    plane.loops.on_resync = functools.partial(plane.reads.instances.changed, None)
    executor = Executor(
        store=facade,
        driver=driver,
        router=router,
        health=plane.health,
        events=plane.events,
        clock=clock,
        track=functools.partial(track_instance, plane),
        wake=plane.loops.wake,
        changed=plane.reads.instances.changed,
        pull=Puller(plane).ensure,
        reveal=plane.vault.reveal,
    )
    reconcile_round = ReconcileRound(plane, executor)
    _wire_webhooks(plane)
    attach_metrics(plane)
    section = settings.file.logs
    plane.logs = LogKeeper(
        driver=driver,
        router=router,
        archive=LogArchive(
            settings.home / "logs",
            max_bytes_per_app=section.max_bytes_per_app,
            max_file_bytes=section.max_file_bytes,
            max_age=section.max_age,
        ),
        settings=section,
    )
    return Engine(plane, executor=executor)


def _wire_webhooks(plane: ControlPlane) -> None:
    receivers = [Receiver.from_settings(s) for s in plane.settings.file.events.webhooks]
    if not receivers:
        return

    def on_failure(url: str, event: Event, error: str) -> None:
        kind, reason, severity = failure_reason(url, event, error)
        plane.events.record(event.key, kind, reason, severity=severity, release=event.release)

    def on_skipped(url: str, why: str) -> None:
        kind, reason, severity = skipped_reason(url, why)
        plane.events.record(None, kind, reason, severity=severity)

    plane.webhooks = Webhooks(
        receivers,
        store=plane.store,
        clock=plane.clock,
        on_failure=on_failure,
        on_skipped=on_skipped,
    )
    plane.events.add_listener(plane.webhooks.listener)
