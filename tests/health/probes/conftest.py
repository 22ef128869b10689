"""Every probe test runs twice: on uvloop (the server's loop) and on asyncio's own
(``KILN_EVENT_LOOP=asyncio``). Probes use each loop's transports directly, and the two loops
differ in how they connect, read and report errors."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest
import uvloop


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {"uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}
