"""Does kiln give back what it kept for apps that are gone? On the fakes (no Docker, no NGINX):
each cycle deploys N apps (3 instances each), deploys each again with other routes (route
churn), scrapes /metrics, destroys them all and waits until their loops are gone; then it
measures. Memory kept for the destroyed apps shows as growth from cycle to cycle.

    .venv/bin/python -m bench.memory                    # 100 apps, 4 cycles
    .venv/bin/python -m bench.memory --apps 20 --cycles 3

Prints one JSON line: per cycle the RSS (Python's allocator may keep freed memory, so judge by
the rest), tracemalloc's total and its top growth since the previous cycle (by line), the
object counts by type that grew, and what the control plane still holds per app / instance.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

from kiln.config import Settings
from kiln.controller.engine import Engine
from kiln.drivers.fake import FakeDriver
from kiln.model import AppKey
from kiln.router.fake import FakeRouter
from tests.controller.fake_health import FakeHealth
from tests.controller.world import engine_over_fakes

TOP = 8  # growth lines and object types reported per cycle


def _spec(app: str, image: str, host: str) -> str:
    return (
        f"app: {app}\nimage: {image}\nport: 8080\ninstances: 3\n"
        f"routes: [{{host: {host}}}]\n"
        "deploy: {strategy: rolling, deadline: 60s, drain: 0s}\nstop_grace: 0s\n"
    )


async def _until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not in {timeout:g}s")
        await asyncio.sleep(0.02)


def held(engine: Engine) -> dict[str, int]:
    """What the control plane keeps that is per app, per instance or per release."""
    plane = engine.plane
    sizes: dict[str, int] = {
        "loops": len(plane.loops.keys()),
        "loops.last_error": len(plane.loops.last_error),
        "observer.memory": len(plane.observer.memory),
        "last_plans": len(plane.last_plans),
        "last_instances": len(plane.last_instances),
        "instance_keys": len(plane.instance_keys),
        "known_instances": len(plane.known_instances),
        "drift_reported": len(plane.drift_reported),
        "drifted": len(plane.drifted),
        "removed_by_kiln": len(plane.removed_by_kiln),
        "drift_records": sum(len(records) for records in plane.drift_records.values()),
        "drift_replacing": len(plane.drift_replacing),
        "quiet_apps": len(plane.quiet_apps),
        "reported_foreign": len(plane.reported_foreign),
        "applied_routes": len(plane.applied_routes or {}),
        "release_cache": len(plane.store._releases),
        "health.tracked": len(plane.health.tracked_ids()),
    }
    if plane.logs is not None:
        sizes["logs.seen"] = len(plane.logs._seen)
        sizes["logs.tasks"] = len(plane.logs._tasks)
    if plane.metrics is not None:
        sizes["metrics.children"] = sum(
            len(getattr(m, "_metrics", {})) for m in (plane.metrics.restarts, plane.metrics.drift)
        )
    return {k: v for k, v in sizes.items() if v}


async def _cycle(
    engine: Engine,
    driver: FakeDriver,
    router: FakeRouter,
    health: FakeHealth,
    apps: int,
    cycle: int,
) -> None:
    names = [f"c{cycle}app{n:03d}" for n in range(apps)]
    for version, host in ((1, "a"), (2, "b")):
        for name in names:
            await engine.deploy(
                _spec(name, f"demo:v{version}", f"{host}.{name}.test"), message="", who="bench"
            )

        def converged(version: int = version) -> bool:
            running = [i for i in driver.running if i.key.app in names]
            return len(running) == 3 * apps and all(i.release == version for i in running)

        await _until(converged, 120, f"cycle {cycle} release {version}")
    await engine.metrics()
    for name in names:
        await engine.destroy(AppKey("dev", name), who="bench")
    await _until(lambda: not engine.plane.loops.keys(), 120, f"cycle {cycle} destroy")
    await engine.plane.events.flush()
    await engine.metrics()
    # No drift check here: the rounds drop the per-container drift records of containers they
    # no longer list, and forget_app an app's (the check used to be what pruned them).
    # The fakes' own records for tests (every start, push ...) are not kiln's memory.
    driver.started.clear()
    driver.stopped.clear()
    driver.removed.clear()
    driver.secrets_of.clear()
    router.peer_pushes.clear()
    router.policy_pushes.clear()
    health.release_of.clear()


async def _run(home: Path, apps: int, cycles: int) -> dict[str, Any]:
    driver, router, health = FakeDriver(), FakeRouter(), FakeHealth()
    health.healthy_releases = {1, 2}
    for version in (1, 2):
        driver.add_image(f"demo:v{version}")
    engine = engine_over_fakes(Settings(home=home), driver, router, health)
    process = psutil.Process()
    await engine.start()
    tracemalloc.start()  # one frame: growth is reported by line
    gc.collect()
    before = tracemalloc.take_snapshot()
    types = Counter(type(o).__name__ for o in gc.get_objects())
    start = {"rss_mb": round(process.memory_info().rss / 2**20, 1)}
    results = []
    try:
        for cycle in range(cycles):
            await _cycle(engine, driver, router, health, apps, cycle)
            gc.collect()
            after = tracemalloc.take_snapshot()
            now = Counter(type(o).__name__ for o in gc.get_objects())
            growth = after.compare_to(before, "lineno")
            grew = {t: n - types.get(t, 0) for t, n in now.items() if n > types.get(t, 0)}
            results.append(
                {
                    "cycle": cycle + 1,
                    "rss_mb": round(process.memory_info().rss / 2**20, 1),
                    "traced_mb": round(
                        sum(s.size for s in after.statistics("filename")) / 2**20, 2
                    ),
                    "traced_growth_kb": round(sum(d.size_diff for d in growth) / 1024, 1),
                    "top_growth": [
                        f"{d.traceback[0].filename.split('/site-packages/')[-1].split('/wt/memory/')[-1]}"
                        f":{d.traceback[0].lineno} {d.size_diff / 1024:+.1f} KiB ({d.count_diff:+d})"
                        for d in growth[:TOP]
                    ],
                    "objects_grew": dict(sorted(grew.items(), key=lambda kv: -kv[1])[:TOP]),
                    "held": held(engine),
                }
            )
            before, types = after, now
    finally:
        tracemalloc.stop()
        await engine.close()
    return {"apps": apps, "cycles": cycles, "start": start, "per_cycle": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apps", type=int, default=100)
    parser.add_argument("--cycles", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        print(json.dumps(asyncio.run(_run(Path(home), args.apps, args.cycles))))


if __name__ == "__main__":
    main()
