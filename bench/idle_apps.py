"""What an idle engine of many apps costs, on the fakes (no Docker, no NGINX): rounds per
second, engine lists and router reads per second, and kiln's CPU (one process, so what the
event loop spends on rounds, supervision and the store); then how long one app's rolling
deploy takes with the others idle, against the same deploy alone (median of 9).

    .venv/bin/python -m bench.idle_apps                 # 100 apps, 3 instances each, 10 s idle
    .venv/bin/python -m bench.idle_apps --apps 20 --seconds 5

Prints one JSON line. The fakes answer instantly, so the numbers are the control plane's own
cost; on Docker each engine list is a request to dockerd on top (bench/scale.py measures that).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kiln.config import Settings
from kiln.drivers.fake import FakeDriver
from kiln.model import AppKey, Instance
from kiln.router.fake import FakeRouter
from kiln.store.sqlite import SqliteStore
from tests.controller.fake_health import FakeHealth
from tests.controller.world import engine_over_fakes

DEPLOYS = 9  # rolling deploys of one app, the median kept
PROFILE = bool(os.environ.get("KILN_BENCH_PROFILE"))  # the idle window's profile to stderr


def _spec(app: str, image: str) -> str:
    return (
        f"app: {app}\nimage: {image}\nport: 8080\ninstances: 3\n"
        "deploy: {strategy: rolling, deadline: 60s, drain: 0s}\nstop_grace: 0s\n"
    )


class CountingDriver(FakeDriver):
    lists = 0

    async def list_instances(self, key: AppKey | None = None) -> list[Instance]:
        self.lists += 1
        return await super().list_instances(key)


class CountingRouter(FakeRouter):
    reads = 0

    async def in_flight(self) -> Any:
        self.reads += 1
        return await super().in_flight()

    async def traffic(self) -> Any:
        self.reads += 1
        return await super().traffic()


async def _until(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the engine did not converge in time")
        await asyncio.sleep(0.02)


async def _run(home: Path, apps: int, seconds: float, resync: float | None) -> dict[str, Any]:
    settings = Settings(home=home) if resync is None else Settings(home=home, resync_seconds=resync)
    driver, router, health = CountingDriver(), CountingRouter(), FakeHealth()
    health.healthy_releases = set(range(1, 2 + DEPLOYS))
    for n in range(1, 2 + DEPLOYS):
        driver.add_image(f"demo:v{n}")
    engine = engine_over_fakes(settings, driver, router, health)
    rounds = 0
    loops = engine.plane.loops
    sync = loops._sync  # the bench counts rounds without a hook in the engine

    async def counted(key: AppKey) -> Any:
        nonlocal rounds
        rounds += 1
        return await sync(key)

    loops._sync = counted
    await engine.start()
    # The bench's own connection for its polls: the engine's store is awaited off the loop.
    store = SqliteStore(home / "kiln.db")
    try:
        names = [f"app{n:03d}" for n in range(apps)]
        for name in names:
            await engine.deploy(_spec(name, "demo:v1"), message="", who="bench")

        def converged() -> bool:
            return len(driver.running) == 3 * apps and not any(
                store.active_rollout(AppKey("dev", n)) for n in names
            )

        await _until(converged, 120)
        await asyncio.sleep(min(3.0, seconds))  # let the deploys' last wakes settle
        rounds, driver.lists, router.reads = 0, 0, 0
        profile = cProfile.Profile() if PROFILE else None
        if profile is not None:
            profile.enable()
        cpu, wall = time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        if profile is not None:
            profile.disable()
            pstats.Stats(profile, stream=sys.stderr).sort_stats("tottime").print_stats(25)
        idle = {
            "rounds_per_s": round(rounds / wall, 1),
            "engine_lists_per_s": round(driver.lists / wall, 1),
            "router_reads_per_s": round(router.reads / wall, 1),
            "cpu_percent_of_a_core": round(100 * cpu / wall, 1),
        }
        key = AppKey("dev", names[0])
        took = []
        for release in range(2, 2 + DEPLOYS):
            started = time.monotonic()
            await engine.deploy(_spec(names[0], f"demo:v{release}"), message="", who="bench")

            def rolled(release: int = release) -> bool:
                running = {i.release for i in driver.running if i.key == key}
                return store.active_rollout(key) is None and running == {release}

            await _until(rolled, 120)
            took.append(time.monotonic() - started)
        return {**idle, "rolling_deploy_s": round(statistics.median(took), 3)}
    finally:
        await engine.close()
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apps", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--resync", type=float, default=None, help="KILN_RESYNC_SECONDS")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as many, tempfile.TemporaryDirectory() as one:
        result = asyncio.run(_run(Path(many), args.apps, args.seconds, args.resync))
        alone = asyncio.run(_run(Path(one), 1, 2.0, args.resync))
    result["apps"] = args.apps
    result["rolling_deploy_alone_s"] = alone["rolling_deploy_s"]
    result["deploy_vs_alone"] = round(result["rolling_deploy_s"] / alone["rolling_deploy_s"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
