"""Docker driver benchmark: what kiln's DockerDriver costs at ~100 apps (issue 10).

Starts a private dockerd, builds the demo image, runs N containers labelled as kiln instances of
one installation (100 apps x 3 instances by default, no network: only the engine's API is
measured), then drives ``kiln.drivers.docker.DockerDriver`` — whichever library it is built on
at this commit — and prints one JSON line:

  list_all_ms            p50/p99 of ``list_instances()`` (all N containers), 30 rounds
  round_100_apps_ms      p50/p99 of one controller round: ``list_instances(key)`` for every
                         app at once, 10 rounds
  follow_logs            following the logs of all N containers (what LogKeeper does):
                         threads and RSS added, CPU of this process while idle (idle_s
                         seconds, no line arriving) as % of one core, lines (>= N: every
                         stream opened and read its history)
  exec_ms                p50 of ``exec(["true"])``, 20 runs
  exec_timeout_s         a hung command (sleep 30) with timeout 1 s: seconds to TimeoutError,
                         threads still busy with it afterwards
  start_ms / stop_ms     p50 of start_instance / stop_instance of a fresh instance, 10 runs
  watch_event_ms         p50 from calling start_instance to its "start" event out of watch()
  raw_round_ms           the 100-app round again, straight on each library (no kiln code):
                         the SDK on a 32-thread pool (as the driver calls it) vs aiodocker

With ``--baseline REV`` the driver of that commit is measured too, right after, on the same
containers (one process, one engine: the two see the same load). Everything after the set-up
runs while the logs of all N containers are being followed, as in
a kiln server. Run from the repository root:

    .venv/bin/python -m bench.driver_eval                 # 300 containers, 30 s idle
    .venv/bin/python -m bench.driver_eval --apps 20 --idle 5   # quicker
    .venv/bin/python -m bench.driver_eval --baseline 7d800e1   # and the driver of that commit
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import psutil

import kiln.drivers.docker
from kiln.drivers.docker import DockerDriver
from kiln.model import (
    LABEL_APP,
    LABEL_ENV,
    LABEL_INSTALLATION,
    LABEL_INSTANCE,
    LABEL_MANAGED,
    LABEL_RELEASE,
    AppKey,
    InstanceSpec,
)
from tests.harness.dockerd import PrivateDockerd
from tests.harness.images import build_hello_image

INSTALLATION = "bench-driver-eval"
IMAGE = "kiln-hello:v1"


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return round(ordered[index], 2)


def plant(engine: PrivateDockerd, apps: int, per_app: int) -> list[AppKey]:
    """``apps`` x ``per_app`` running containers labelled as this installation's instances."""
    client = docker.DockerClient(base_url=engine.docker_host, max_pool_size=8)
    try:
        build_hello_image(client, version="v1", variant="healthy", tag=IMAGE)
        keys = [AppKey("bench", f"app{n:03d}") for n in range(apps)]

        def one(key: AppKey, index: int) -> None:
            instance = f"{key.app}-{index}"
            client.containers.run(
                IMAGE,
                name=f"kiln-bench-{instance}",
                detach=True,
                init=True,
                network_mode="none",
                labels={
                    LABEL_MANAGED: "true",
                    LABEL_INSTALLATION: INSTALLATION,
                    LABEL_ENV: key.environment,
                    LABEL_APP: key.app,
                    LABEL_RELEASE: "1",
                    LABEL_INSTANCE: instance,
                },
            )

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda job: one(*job), [(k, i) for k in keys for i in range(per_app)]))
        return keys
    finally:
        client.close()


async def timed(samples: list[float], call: Callable[[], Awaitable[Any]]) -> Any:
    started = time.perf_counter()
    result = await call()
    samples.append((time.perf_counter() - started) * 1000)
    return result


def spec(n: int) -> InstanceSpec:
    return InstanceSpec(
        id=f"probe-{n}",
        key=AppKey("bench", "probe"),
        release=1,
        name=f"bench-probe-{n}",
        image=IMAGE,
        command=None,
        env={},
        port=8080,
        labels={},
        stop_grace=2,
    )


async def measure(
    driver_class: Any, host: str, keys: list[AppKey], containers: int, idle: float
) -> dict[str, Any]:
    process = psutil.Process()
    result: dict[str, Any] = {}
    driver = driver_class(installation_id=INSTALLATION, base_url=host)
    try:
        listed = await driver.list_instances()
        assert len(listed) == containers, f"listed {len(listed)} of {containers}"
        ids = [i.container_id for i in listed]

        # --- follow the logs of every container, one iterator each (as LogKeeper does) ---
        threads_before = threading.active_count()
        rss_before = process.memory_info().rss
        lines = 0
        all_read = asyncio.Event()

        async def follow(container_id: str) -> None:
            nonlocal lines
            async for _ in driver.logs([container_id], follow=True, tail=None):
                lines += 1
                if lines >= containers:
                    all_read.set()

        followers = [asyncio.create_task(follow(cid)) for cid in ids]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_read.wait(), 120)
        await asyncio.sleep(1)  # let every stream settle into waiting
        cpu_before = sum(process.cpu_times()[:2])
        await asyncio.sleep(idle)
        cpu = sum(process.cpu_times()[:2]) - cpu_before
        result["follow_logs"] = {
            "streams": containers,
            "lines": lines,
            "threads_added": threading.active_count() - threads_before,
            "rss_added_mb": round((process.memory_info().rss - rss_before) / 2**20, 1),
            "idle_s": idle,
            "idle_cpu_pct": round(100 * cpu / idle, 2),
        }

        # --- listing: all at once, and one round of 100 apps each listing its own ---
        samples: list[float] = []
        for _ in range(30):
            await timed(samples, driver.list_instances)
        result["list_all_ms"] = {"p50": percentile(samples, 0.5), "p99": percentile(samples, 0.99)}
        rounds: list[float] = []
        for _ in range(10):
            await timed(rounds, lambda: asyncio.gather(*(driver.list_instances(k) for k in keys)))
        result["round_100_apps_ms"] = {
            "apps": len(keys),
            "p50": percentile(rounds, 0.5),
            "p99": percentile(rounds, 0.99),
        }

        # --- exec ---
        samples = []
        for _ in range(20):
            code = await timed(
                samples, lambda: driver.exec(ids[0], ["/bin/busybox", "true"], timeout=5)
            )
            assert code == 0
        result["exec_ms"] = {"p50": percentile(samples, 0.5)}
        threads = threading.active_count()
        started = time.perf_counter()
        with contextlib.suppress(TimeoutError):
            await driver.exec(ids[1], ["/bin/busybox", "sleep", "30"], timeout=1)
        result["exec_timeout_s"] = {
            "to_timeout_error": round(time.perf_counter() - started, 2),
            "threads_left_busy": threading.active_count() - threads,
        }

        # --- start / stop, with watch() open ---
        events: asyncio.Queue[tuple[str, str, float]] = asyncio.Queue()

        async def watch() -> None:
            async for event in driver.watch():
                await events.put((event.instance_id, event.action, time.perf_counter()))

        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0.5)
        starts: list[float] = []
        stops: list[float] = []
        lags: list[float] = []
        for n in range(10):
            begun = time.perf_counter()
            instance = await timed(starts, lambda n=n: driver.start_instance(spec(n)))
            while True:
                instance_id, action, at = await asyncio.wait_for(events.get(), 30)
                if instance_id == instance.id and action == "start":
                    lags.append((at - begun) * 1000)
                    break
            await timed(stops, lambda cid=instance.container_id: driver.stop_instance(cid, grace=2))
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        result["start_ms"] = {"p50": percentile(starts, 0.5)}
        result["stop_ms"] = {"p50": percentile(stops, 0.5)}
        result["watch_event_ms"] = {"p50_from_start_call": percentile(lags, 0.5)}

        for task in followers:
            task.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
        await asyncio.sleep(1)
        result["threads_after_closing_logs"] = threading.active_count() - threads_before
    finally:
        await driver.close()
    return result


async def raw_round(host: str, keys: list[AppKey]) -> dict[str, Any]:
    """One ``GET /containers/json`` per app, all at once, on each library alone."""
    import aiodocker

    def labels(key: AppKey) -> list[str]:
        return [f"{LABEL_MANAGED}=true", f"{LABEL_ENV}={key.environment}", f"{LABEL_APP}={key.app}"]

    sdk = docker.DockerClient(base_url=host, version="1.41", max_pool_size=64)
    loop = asyncio.get_running_loop()
    found: dict[str, Any] = {}
    with ThreadPoolExecutor(32) as pool:
        rounds: list[float] = []
        for _ in range(10):
            await timed(
                rounds,
                lambda: asyncio.gather(
                    *(
                        loop.run_in_executor(
                            pool,
                            lambda k=k: sdk.api.containers(all=True, filters={"label": labels(k)}),
                        )
                        for k in keys
                    )
                ),
            )
        found["sdk_pool_32"] = {"p50": percentile(rounds, 0.5), "p99": percentile(rounds, 0.99)}
    sdk.close()
    async with aiodocker.Docker(url=host, api_version="v1.41") as client:
        rounds = []
        for _ in range(10):
            await timed(
                rounds,
                lambda: asyncio.gather(
                    *(client.containers.list(all=True, filters={"label": labels(k)}) for k in keys)
                ),
            )
        found["aiodocker"] = {"p50": percentile(rounds, 0.5), "p99": percentile(rounds, 0.99)}
    return found


def baseline_driver(revision: str) -> tuple[Any, int]:
    """``DockerDriver`` as kiln/drivers/docker.py was at ``revision`` (git), and its lines."""
    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(
        ["git", "-C", str(root), "show", f"{revision}:kiln/drivers/docker.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="kiln-bench-")) / "baseline_docker.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("kiln_baseline_docker_driver", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.DockerDriver, len(source.splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--apps", type=int, default=100)
    parser.add_argument("--per-app", type=int, default=3)
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle log following")
    parser.add_argument(
        "--baseline",
        metavar="GIT_REVISION",
        help="also measure the driver of this revision, on the same containers (after this one)",
    )
    args = parser.parse_args()
    containers = args.apps * args.per_app
    drivers: dict[str, tuple[Any, int]] = {
        "current": (
            DockerDriver,
            len(Path(kiln.drivers.docker.__file__).read_text().splitlines()),
        )
    }
    if args.baseline:
        drivers[f"baseline {args.baseline}"] = baseline_driver(args.baseline)
    result: dict[str, Any] = {"benchmark": "driver_eval", "containers": containers}
    with PrivateDockerd() as engine:
        started = time.monotonic()
        keys = plant(engine, args.apps, args.per_app)
        result["setup_s"] = round(time.monotonic() - started, 1)
        for name, (driver_class, lines) in drivers.items():
            measured = asyncio.run(
                measure(driver_class, engine.docker_host, keys, containers, args.idle)
            )
            result[name] = {"driver_module_lines": lines, **measured}
        result["raw_round_ms"] = asyncio.run(raw_round(engine.docker_host, keys))
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
