"""Fuzz targets: the real kiln API served by uvicorn on a loopback port, with a tally of every
answer it sent.

``engine_target``: over the real engine (SQLite store, reconcile loops) with a FakeDriver and
FakeRouter, started and stopped by the server's lifespan. ``fake_target``: over the in-memory
FakeService, whose rollouts advance only when read, so a sequence of calls from a fresh state
always gets the same answers (what a stateful fuzzer replaying a sequence needs)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from kiln.api import create_app
from kiln.config import Settings
from kiln.controller.engine import Engine
from kiln.controller.root import assemble_engine
from kiln.drivers.fake import FakeDriver
from kiln.router.fake import FakeRouter
from kiln.store.access import FakeAccessStore
from kiln.store.sqlite import SqliteStore
from tests.api.fake_service import FakeService
from tests.api.live_server import running_server
from tests.controller.fake_health import FakeHealth

TOKEN = "fuzz-token-0123456789abcdef"
INSTALLATION_ID = "00112233445566778899aabbccddeeff"
IMAGES = ("example/web:1", "example/web:2", "web:v1")


@dataclass
class Tally:
    """Every answer the server sent, by status."""

    statuses: list[int] = field(default_factory=list)

    @property
    def server_errors(self) -> int:
        return sum(1 for s in self.statuses if s >= 500)


class Served:
    """ASGI wrapper: starts the engine (if any) on the server's own loop and tallies answers."""

    def __init__(self, app: FastAPI, engine: Engine | None, tally: Tally) -> None:
        self.app, self.engine, self.tally = app, engine, tally

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.tally.statuses.append(int(message["status"]))
            await send(message)

        await self.app(scope, receive, counting_send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.engine is not None:
                    await self.engine.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.engine is not None:
                    await self.engine.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


@contextmanager
def engine_target(home: Path) -> Iterator[tuple[str, FastAPI, Tally]]:
    """A running kiln API over the engine; yields its base URL, the app and the tally."""
    driver = FakeDriver()
    for image in IMAGES:
        driver.add_image(image)
    health = FakeHealth()
    health.healthy_releases = set(range(1, 10_000))
    engine = assemble_engine(
        settings=Settings(home=home),
        store=SqliteStore(home / "kiln.db"),
        driver=driver,
        router=FakeRouter(),
        health=health,  # type: ignore[arg-type]
    )
    health.bind(engine.plane.wake_app_of)
    app = create_app(engine, token=TOKEN, installation_id=INSTALLATION_ID)
    tally = Tally()
    with running_server(Served(app, engine, tally)) as url:  # type: ignore[arg-type]
        yield url, app, tally


@contextmanager
def fake_target() -> Iterator[tuple[str, FakeService, Tally, FakeAccessStore]]:
    """A running kiln API over a FakeService; yields its base URL, the service, the tally and
    the access store (tokens and audit log, in memory)."""
    service = FakeService()
    access = FakeAccessStore()
    app = create_app(service, token=TOKEN, installation_id=INSTALLATION_ID, access=access)
    tally = Tally()
    with running_server(Served(app, None, tally)) as url:  # type: ignore[arg-type]
        yield url, service, tally, access
