"""The ``world`` fixture: an engine over fakes, started for the test and closed after it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.controller.world import World


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = World(tmp_path)
    await w.engine.start()
    try:
        yield w
    finally:
        await w.engine.close()
