"""The engine with an artifact repository (FakeRegistry), over fakes: the registry is started
and kept running, and releases pin images to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kiln.controller.engine import Engine
from kiln.controller.root import assemble_engine
from kiln.registry.fake import FakeRegistry
from tests.controller.test_engine import World, eventually


class RegistryWorld(World):
    def __init__(self, tmp_path: Path) -> None:
        self.registry = FakeRegistry()
        super().__init__(tmp_path)

    def new_engine(self) -> Engine:
        engine = assemble_engine(
            settings=self.settings,
            store=self.store,
            driver=self.driver,
            router=self.router,
            health=self.health,  # type: ignore[arg-type]
            registry=self.registry,
        )
        self.health.bind(engine.plane.wake_app_of)
        return engine

    def event_kinds(self) -> list[str]:
        return [e.kind for e in self.store.list_events(key=None, after_id=0, limit=1000)]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[RegistryWorld]:
    w = RegistryWorld(tmp_path)
    await w.engine.start()
    try:
        yield w
    finally:
        await w.engine.close()


async def test_the_registry_starts_with_kiln_and_is_restarted_when_it_exits(
    world: RegistryWorld,
) -> None:
    assert world.registry.running and world.registry.starts == 1
    world.registry.exit()
    await eventually(lambda: world.registry.running)
    assert world.registry.starts == 2
    await eventually(lambda: "registry.restarted" in world.event_kinds())
