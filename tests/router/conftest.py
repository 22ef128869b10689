"""Fixtures for the router scenarios: a private NGINX per test, named Python backends."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from kiln.router.nginx import NginxRouter

from .backends import Backend, free_port, serve_backend


@pytest.fixture
def run_dir() -> Iterator[Path]:
    # Short on purpose: a unix socket path must fit in 107 bytes, pytest's tmp_path may not.
    base = Path(tempfile.mkdtemp(prefix="kiln-rt-"))
    yield base / "run"
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
async def make_router(tmp_path: Path, run_dir: Path) -> AsyncIterator[Callable[[], NginxRouter]]:
    """A factory of NginxRouters that all manage the same private NGINX (prefix, port, socket);
    each one's admin connection is closed after the test."""
    port = free_port()
    made: list[NginxRouter] = []

    def make() -> NginxRouter:
        router = NginxRouter(
            prefix=tmp_path / "nginx", listen_host="127.0.0.1", listen_port=port, run_dir=run_dir
        )
        made.append(router)
        return router

    yield make
    for router in made:
        await router.close()


@pytest.fixture
async def router(make_router: Callable[[], NginxRouter]) -> AsyncIterator[NginxRouter]:
    """A started private NGINX; stopped (with any orphaned workers) after the test."""
    nginx = make_router()
    await nginx.start()
    try:
        yield nginx
    finally:
        await make_router().stop()


class Backends:
    """Named backends started by a test, all stopped after it."""

    def __init__(self) -> None:
        self._started: dict[str, Backend] = {}

    def start(self, name: str) -> int:
        backend = serve_backend(name)
        self._started[name] = backend
        return backend.port

    def __getitem__(self, name: str) -> Backend:
        return self._started[name]

    def stop(self, name: str) -> None:
        self._started.pop(name).stop()

    def stop_all(self) -> None:
        for backend in self._started.values():
            backend.stop()
        self._started.clear()


@pytest.fixture
def backends() -> Iterator[Backends]:
    started = Backends()
    try:
        yield started
    finally:
        started.stop_all()
