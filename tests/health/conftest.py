"""Fixtures for the health tests: a scripted HTTP server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .support import ScriptedHttpServer


@pytest.fixture
async def server() -> AsyncIterator[ScriptedHttpServer]:
    s = ScriptedHttpServer(lambda path, n: 200)
    await s.start()
    yield s
    await s.stop()
