"""NGINX's access log rotated (rename + reopen, no reload) while requests flow: no line is
lost, no worker is replaced, and an app's lines are read back across the rotated files."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from kiln.config.file import LogsSettings
from kiln.controller.logkeeper import LogKeeper
from kiln.drivers.fake import FakeDriver
from kiln.logs import LogArchive, LogQuery, access_history, rotated
from kiln.model import AppKey, RouteEntry
from kiln.router.nginx import NginxRouter

from .conftest import Backends
from .support import fetch, peer

pytestmark = pytest.mark.integration

WEB = AppKey("dev", "web")
REQUESTS = 2000
KEEP = 20


def _lines_of(router: NginxRouter) -> int:
    access = router.log_files()["access"]
    return len(access_history(access, WEB, LogQuery(), keep=KEEP))


async def test_rotation_under_load_loses_no_access_line_and_reloads_nothing(
    router: NginxRouter, backends: Backends, tmp_path: Path
) -> None:
    await router.apply_routes([RouteEntry(None, "/", WEB)])
    await router.set_peers(WEB, [peer("blue", backends.start("blue"), 1, release=1)])
    keeper = LogKeeper(
        driver=FakeDriver(),
        router=router,
        archive=LogArchive(tmp_path / "logs"),
        settings=LogsSettings(router_max_bytes=4096, router_keep=KEEP),
    )
    workers = router.worker_pids()
    generation = (await router.status()).generation
    answered: list[int] = []

    def load() -> None:  # bounded: REQUESTS requests, one after another
        for n in range(REQUESTS):
            answered.append(fetch(router.listen_port, f"/?n={n}").status)

    client = threading.Thread(target=load)
    client.start()
    rotations = 0
    deadline = time.monotonic() + 120
    while client.is_alive():
        assert time.monotonic() < deadline, "the load did not finish"
        rotations += len(await keeper.rotate_router_logs())
        await asyncio.sleep(0.05)
    client.join()
    assert answered == [200] * REQUESTS
    assert rotations >= 2, "the test should have rotated while requests flowed"

    # The access log is buffered (flush=1s): wait for the last lines, never for more.
    deadline = time.monotonic() + 10
    while _lines_of(router) < REQUESTS:
        assert time.monotonic() < deadline, f"{_lines_of(router)} of {REQUESTS} lines"
        await asyncio.sleep(0.1)
    assert _lines_of(router) == REQUESTS
    lines = access_history(router.log_files()["access"], WEB, LogQuery(), keep=KEEP)
    assert {line.instance for line in lines} == {"blue"} and lines[0].release == 1
    assert len(rotated(router.log_files()["access"], KEEP)) > 1
    # Reopened, not reloaded: the same workers, the same config generation.
    assert router.worker_pids() == workers
    assert (await router.status()).generation == generation
