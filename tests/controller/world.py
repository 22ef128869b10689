"""The engine over fakes (FakeDriver, FakeRouter, FakeHealth) and a real SQLite store, for
the controller's tests: ``World`` holds the fakes and the engine; the ``world`` fixture
(tests/conftest.py) starts it and closes it after the test."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

from kiln.config import Settings
from kiln.config.file import FileSettings
from kiln.controller.engine import Engine
from kiln.controller.root import assemble_engine
from kiln.drivers.base import Driver
from kiln.drivers.fake import FakeDriver
from kiln.model import AppKey, Instance, InstanceSpec, ReleaseOrigin
from kiln.registry.base import Registry
from kiln.router.base import Router
from kiln.router.fake import FakeRouter
from kiln.spec import parse_spec, spec_hash
from kiln.store.sqlite import SqliteStore
from tests.controller.fake_health import FakeHealth

WEB = AppKey("dev", "web")


def spec(
    image: str = "web:v1", *, instances: int = 3, deadline: str = "30s", extra: str = ""
) -> str:
    return (
        f"app: web\nimage: {image}\nport: 8080\ninstances: {instances}\n"
        f"deploy: {{deadline: {deadline}, drain: 0s}}\nstop_grace: 0s\n{extra}"
    )


def instance_spec(key: AppKey, instance_id: str, *, release: int = 1) -> InstanceSpec:
    """A plain instance of ``key`` (image web:v1, port 8080), for a fake driver to start."""
    return InstanceSpec(
        id=instance_id,
        key=key,
        release=release,
        name=f"{key.app}-{instance_id}",
        image="web:v1",
        command=None,
        env={},
        port=8080,
        labels={},
    )


def engine_over_fakes(
    settings: Settings,
    driver: Driver,
    router: Router,
    health: FakeHealth,
    registry: Registry | None = None,
) -> Engine:
    """An engine over the given fakes, its health flips waking its loops. The store is its own
    connection to ``settings.db_path``: the engine's is guarded against the test's (loop)
    thread, so a test reads the file through another one, as a second process would."""
    engine = assemble_engine(
        settings=settings,
        store=SqliteStore(settings.db_path),
        driver=driver,
        router=router,
        health=health,  # type: ignore[arg-type]
        registry=registry,
    )
    health.bind(engine.plane.wake_app_of)
    return engine


class World:
    def __init__(
        self, tmp_path: Path, *, file: FileSettings | None = None, resync_seconds: float = 0.2
    ) -> None:
        self.settings = Settings(home=tmp_path, resync_seconds=resync_seconds, file=file)
        self.store = SqliteStore(tmp_path / "kiln.db")
        self.driver = FakeDriver()
        self.router = FakeRouter()
        self.health = FakeHealth()
        for tag in ("web:v1", "web:v2", "web:broken", "api:v1"):
            self.driver.add_image(tag)
        self.health.healthy_releases = {1, 2, 3, 4, 5}
        self.engine = self.new_engine()

    def new_engine(self) -> Engine:
        return engine_over_fakes(self.settings, self.driver, self.router, self.health)

    def running(self, key: AppKey = WEB) -> list[Instance]:
        return [i for i in self.driver.running if i.key == key]

    def routed_releases(self, key: AppKey = WEB) -> set[int]:
        release_of = {i.id: i.release for i in self.driver.running}
        return {release_of.get(p.instance_id, -1) for p in self.router.peers.get(key, [])}


W = TypeVar("W", bound=World)


@contextlib.asynccontextmanager
async def running(world: W) -> AsyncIterator[W]:
    """``world`` with its engine started, and closed again after the block."""
    await world.engine.start()
    try:
        yield world
    finally:
        await world.engine.close()


async def store_release(world: World, key: AppKey, spec_text: str) -> None:
    """A release of ``key`` with ``spec_text`` in the engine's store, as a deploy writes it, but
    nothing wakes its loop: only the test moves what the app plans."""
    plane = world.engine.plane
    spec = parse_spec(spec_text)
    await plane.store.create_release(
        key,
        spec=spec,
        image=spec.image,
        digest=world.driver.images[spec.image],
        spec_hash=spec_hash(spec),
        created_by="t",
        message="",
        origin=ReleaseOrigin.DEPLOY,
        rollback_of=None,
        scale=spec.instances,
        deadline_seconds=spec.deploy.deadline,
        now=plane.clock(),
    )


async def settled(world: World, key: AppKey = WEB, count: int = 3) -> None:
    """No rollout of ``key`` in progress, and ``count`` of its instances running and routed."""
    await eventually(
        lambda: (
            world.store.active_rollout(key) is None
            and len(world.running(key)) == count
            and len(world.router.peers.get(key, [])) == count
        )
    )


async def eventually(condition: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)
