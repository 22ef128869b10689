"""Route table applies of many apps at once, on a real private NGINX (the fake driver and fake
health checks around it, no Docker): how long each of APPS destroys made at the same moment
waits for its routes to leave NGINX (PARALLEL at a time, as bench.scale's API clients), and how
many NGINX reloads they cost; before that, APPS deploys at once that each move their app to
another host (until every app serves on its new host only).

    .venv/bin/python -m bench.route_applies               # 100 apps, 1 instance each
    .venv/bin/python -m bench.route_applies --apps 30 --parallel 8

Prints one JSON line. Before the group commit (kiln/controller/groupcommit.py) each destroy
made its own apply (render, ``nginx -t``, reload, wait for the new workers) one behind the
other; now the ones that ask while an apply runs share the next.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kiln.config import Settings
from kiln.drivers.fake import FakeDriver
from kiln.model import AppKey, RouteEntry
from kiln.router.nginx import NginxRouter
from kiln.store.sqlite import SqliteStore
from tests.controller.fake_health import FakeHealth
from tests.controller.world import engine_over_fakes
from tests.router.backends import free_port


class CountingRouter(NginxRouter):
    applies = 0  # apply_routes calls that changed the config
    reloads = 0

    async def apply_routes(self, routes: Sequence[RouteEntry]) -> bool:
        reloaded = await super().apply_routes(routes)
        self.applies += 1
        self.reloads += reloaded
        return reloaded


def _spec(app: str, host: str) -> str:
    return (
        f"app: {app}\nimage: demo:v1\nport: 8080\ninstances: 1\n"
        "deploy: {strategy: rolling, deadline: 120s, drain: 0s}\nstop_grace: 0s\n"
        f"routes: [{{host: {host}}}]\n"
    )


async def _until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not in {timeout:g}s")
        await asyncio.sleep(0.05)


async def _run(home: Path, apps: int, parallel: int) -> dict[str, Any]:
    driver, health = FakeDriver(), FakeHealth()
    health.healthy_releases = {1, 2}
    driver.add_image("demo:v1")
    router = CountingRouter(
        prefix=home / "nginx", listen_host="127.0.0.1", listen_port=free_port(), run_dir=home / "r"
    )
    engine = engine_over_fakes(Settings(home=home), driver, router, health)
    await engine.start()
    store = SqliteStore(home / "kiln.db")
    names = [f"app{n:03d}" for n in range(apps)]
    keys = [AppKey("dev", n) for n in names]

    def routed(host_of: dict[str, str]) -> bool:
        applied = engine.plane.applied_routes or {}
        hosts = {(r.key.app, r.host) for routes in applied.values() for r in routes}
        return all((n, host_of[n]) in hosts for n in names) and not any(
            store.active_rollout(k) for k in keys
        )

    out: dict[str, Any] = {"apps": apps, "parallel_destroys": parallel}
    try:
        for name in names:
            await engine.deploy(_spec(name, f"{name}.a.test"), message="", who="bench")
        await _until(lambda: routed({n: f"{n}.a.test" for n in names}), 300, "first deploys")

        applies, reloads, started = router.applies, router.reloads, time.monotonic()
        await asyncio.gather(
            *(engine.deploy(_spec(n, f"{n}.b.test"), message="", who="bench") for n in names)
        )
        await _until(lambda: routed({n: f"{n}.b.test" for n in names}), 300, "route churn")
        out["route_churn"] = {
            "all_new_s": round(time.monotonic() - started, 3),
            "applies": router.applies - applies,
            "nginx_reloads": router.reloads - reloads,
        }

        applies, reloads, calls = router.applies, router.reloads, []

        slots = asyncio.Semaphore(parallel)

        async def destroy(key: AppKey) -> None:
            async with slots:  # as bench.scale's clients: PARALLEL calls at a time
                began = time.monotonic()
                await engine.destroy(key, who="bench")
                calls.append(time.monotonic() - began)

        started = time.monotonic()
        await asyncio.gather(*(destroy(k) for k in keys))
        out["destroy_all"] = {
            "calls_done_s": round(time.monotonic() - started, 3),
            "call_s_median": round(statistics.median(calls), 3),
            "call_s_max": round(max(calls), 3),
            "applies": router.applies - applies,
            "nginx_reloads": router.reloads - reloads,
        }
    finally:
        await engine.close()
        await router.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apps", type=int, default=100)
    parser.add_argument("--parallel", type=int, default=32, help="destroys at a time")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="kiln-ra-"))  # short: the admin socket path
    try:
        print(json.dumps(asyncio.run(_run(home, args.apps, args.parallel))))
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
