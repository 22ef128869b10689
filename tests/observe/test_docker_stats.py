"""The Docker driver's CPU and memory sample, from the containers' cgroups on a private dockerd:
a busy instance uses more than an idle one."""

from __future__ import annotations

import asyncio
import time

import pytest

from kiln.drivers.docker import DockerDriver
from tests.drivers.test_docker_driver import App, app, driver  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration

BUSY = ["/bin/busybox", "sh", "-c", "while :; do :; done"]
IDLE = ["/bin/busybox", "sleep", "600"]


async def test_a_busy_instance_uses_more_cpu_than_an_idle_one(
    driver: DockerDriver,  # noqa: F811
    app: App,  # noqa: F811
) -> None:
    busy = await driver.start_instance(app.spec(command=BUSY, port=None, cpus=0.5))
    idle = await driver.start_instance(app.spec(command=IDLE, port=None))
    ids = [busy.container_id, idle.container_id]
    deadline = time.monotonic() + 20
    while True:
        stats = await driver.stats(ids)
        if set(stats) == set(ids) and stats[busy.container_id].cpu_seconds > 0.2:
            break
        assert time.monotonic() < deadline, f"no CPU use seen: {stats}"
        await asyncio.sleep(0.1)
    assert stats[busy.container_id].cpu_seconds > stats[idle.container_id].cpu_seconds
    assert stats[idle.container_id].memory_bytes > 0
    await driver.stop_instance(busy.container_id, grace=0)
    await driver.remove_instance(busy.container_id)
    assert busy.container_id not in await driver.stats(ids)  # gone: left out
