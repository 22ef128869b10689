"""Observability benchmark: the cost of ``GET /metrics`` and of having metrics on.

Prints one JSON line:
  fake_50x3          scrape time of GET /metrics (through the API app, in process) with 50 apps
                     x 3 instances on the FAKE driver and router (labelled so: no Docker, no
                     NGINX at that scale on a 2-core VM); median / p95 ms over N scrapes, bytes
  real               the same on a real kiln (private dockerd, NGINX, the demo app): APPS apps x
                     3 instances, scraped over the unix socket
  idle_cpu           the real kiln server's CPU while idle (no deploys, one scrape every 15 s as a
                     Prometheus would), in % of one core over WINDOW s, metrics on vs off
                     (settings file metrics.enabled: false), and the difference
Targets (issue 9): scrape < 100 ms with 50 x 3; metrics on costs < 2 % of a core more.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import docker
import httpx
import psutil

from kiln.api.app import create_app
from kiln.config import Settings
from kiln.controller.root import assemble_engine
from kiln.drivers.base import InstanceStats
from kiln.drivers.fake import FakeDriver
from kiln.model import AppKey
from kiln.router.fake import FakeRouter
from kiln.store.sqlite import SqliteStore
from tests.e2e.conftest import hello_spec
from tests.e2e.harness import KilnHarness, wait_until
from tests.harness.dockerd import PrivateDockerd
from tests.harness.images import build_hello_image

TOKEN = "bench-token"


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 2),
    }


async def fake_scale(apps: int, scrapes: int, workdir: Path) -> dict[str, object]:
    settings = Settings(home=workdir, resync_seconds=5.0)
    driver, router = FakeDriver(), FakeRouter()
    engine = assemble_engine(
        settings=settings, store=SqliteStore(workdir / "kiln.db"), driver=driver, router=router
    )
    await engine.start()
    try:
        for n in range(apps):
            driver.add_image(f"app{n}:v1")
            spec = f'app: app{n}\nimage: app{n}:v1\ninstances: 3\nhealth: {{command: ["true"]}}\n'
            await engine.deploy(spec, message="bench", who="bench")
        deadline = time.monotonic() + 120

        async def rolling() -> bool:
            for n in range(apps):
                if await engine.plane.store.active_rollout(AppKey("dev", f"app{n}")):
                    return True
            return False

        while sum(1 for i in driver.running if i.running) < apps * 3 or await rolling():
            if time.monotonic() > deadline:
                raise RuntimeError("the fake apps did not settle in 120 s")
            await asyncio.sleep(0.1)
        for n, instance in enumerate(driver.running):
            driver.usage[instance.id] = InstanceStats(cpu_seconds=n * 0.5, memory_bytes=n << 20)
            router.add_traffic(instance.key, instance.release, requests=100, errors=1)
        assert engine.plane.sampler is not None
        await engine.plane.sampler.sample()
        app = create_app(engine, token=TOKEN)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://kiln") as client:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            times: list[float] = []
            cpu: list[float] = []
            size = 0
            for _ in range(scrapes):
                started, started_cpu = time.perf_counter(), time.process_time()
                response = await client.get("/metrics", headers=headers)
                times.append(time.perf_counter() - started)
                cpu.append(time.process_time() - started_cpu)
                response.raise_for_status()
                size = len(response.content)
        return {
            "driver": "fake",
            "router": "fake",
            "apps": apps,
            "instances": apps * 3,
            "scrapes": scrapes,
            **_ms(times),
            # CPU time of the scrape: what it costs without waiting for a busy machine's cores
            "cpu_median_ms": round(statistics.median(cpu) * 1000, 2),
            "bytes": size,
            "samples": sum(
                1 for line in response.text.splitlines() if line and not line.startswith("#")
            ),
        }
    finally:
        await engine.close()


def _scrape(kiln: KilnHarness) -> float:
    started = time.perf_counter()
    response = kiln.api("GET", "/metrics")
    response.raise_for_status()
    return time.perf_counter() - started


def _server_cpu(kiln: KilnHarness, seconds: float) -> float:
    """% of one core the server process used over ``seconds``, scraped every 15 s."""
    assert kiln.process is not None
    proc = psutil.Process(kiln.process.pid)
    before = proc.cpu_times()
    started = time.monotonic()
    next_scrape = started
    while (now := time.monotonic()) < started + seconds:
        if now >= next_scrape:
            _scrape(kiln)
            next_scrape += 15
        time.sleep(0.5)
    after = proc.cpu_times()
    used = (after.user - before.user) + (after.system - before.system)
    return round(used / (time.monotonic() - started) * 100, 2)


def real(apps: int, scrapes: int, window: float, workdir: Path) -> dict[str, object]:
    with PrivateDockerd() as engine:
        client = docker.DockerClient(base_url=engine.docker_host)
        build_hello_image(client, version="v1", variant="healthy", tag="kiln-hello:v1")
        client.close()
        home = workdir / "real"
        home.mkdir()
        kiln = KilnHarness(home, engine.docker_host)
        try:
            kiln.start()
            for n in range(apps):
                result = kiln.deploy(hello_spec(f"obs{n}", "kiln-hello:v1"), "--wait")
                if result.returncode != 0:
                    raise RuntimeError(result.stdout + result.stderr)
            for n in range(apps):
                kiln.wait_ready(f"obs{n}", 3, release=1, timeout=60)
                for _ in range(20):
                    kiln.get(f"obs{n}.test")
            wait_until(
                lambda: b"kiln_instance_memory_bytes{" in kiln.api("GET", "/metrics").content,
                timeout=20,
                what="a CPU/memory sample",
            )
            times = [_scrape(kiln) for _ in range(scrapes)]
            scrape = {"apps": apps, "instances": apps * 3, "scrapes": scrapes, **_ms(times)}
            time.sleep(5)  # let the deploys' tail settle before measuring idle
            on = _server_cpu(kiln, window)
            kiln.stop()
            (home / "settings.yaml").write_text("metrics:\n  enabled: false\n")
            kiln.start()
            for n in range(apps):
                kiln.wait_ready(f"obs{n}", 3, release=1, timeout=60)
            time.sleep(5)
            assert kiln.api("GET", "/metrics").status_code == 404
            assert kiln.process is not None
            proc = psutil.Process(kiln.process.pid)
            before = proc.cpu_times()
            started = time.monotonic()
            time.sleep(window)
            after = proc.cpu_times()
            used = (after.user - before.user) + (after.system - before.system)
            off = round(used / (time.monotonic() - started) * 100, 2)
        finally:
            kiln.teardown()
    return {
        "real": scrape,
        "idle_cpu": {
            "window_s": window,
            "apps": apps,
            "instances": apps * 3,
            "metrics_on_pct_core": on,
            "metrics_off_pct_core": off,
            "extra_pct_core": round(on - off, 2),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--apps", type=int, default=50, help="apps of the fake run (x 3)")
    parser.add_argument("--real-apps", type=int, default=5, help="apps of the real run (x 3)")
    parser.add_argument("--scrapes", type=int, default=30)
    parser.add_argument("--window", type=float, default=30.0, help="idle CPU window, seconds")
    parser.add_argument("--no-real", action="store_true", help="only the fake run")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="kiln-bench-observe-"))
    result: dict[str, object] = {
        "benchmark": "observe",
        "load_average_1m": round(psutil.getloadavg()[0], 1),  # the machine is shared
    }
    try:
        fake_dir = workdir / "fake"
        fake_dir.mkdir()
        result["fake_50x3"] = asyncio.run(fake_scale(args.apps, args.scrapes, fake_dir))
        if not args.no_real:
            result.update(real(args.real_apps, args.scrapes, args.window, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
