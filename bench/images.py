"""Images benchmark: `kiln build` + push of the demo app, and a first pull by digest.

Prints one JSON line:
  first_build_s               `kiln build DIR -t demo:v1` of a fresh source: build, push, record
  rebuild_unchanged_s_median  the same command again, nothing changed (target < 1 s): the whole
                              CLI process, Python start-up included; median of N
  rebuild_unchanged_api_s_median  the same, measured inside one client (the API call only)
  same_digest                 every rebuild answered the first build's digest
  first_pull_s_median         a pull by digest (kiln's DockerDriver.pull_image) on a fresh
                              private dockerd that has never seen the image; median of N engines
  image_bytes                 the image's size in the registry (compressed)

    .venv/bin/python -m bench.images [--rebuilds 5] [--pulls 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from kiln.cli.commands.images import build_source
from kiln.client import KilnClient
from kiln.drivers.docker import DockerDriver
from tests.e2e.harness import KilnHarness
from tests.harness.dockerd import PrivateDockerd
from tests.harness.images import HELLO_DIR


def render_source(directory: Path) -> Path:
    subprocess.run(
        ["sh", str(HELLO_DIR / "render.sh"), "v1", "healthy", str(directory)], check=True
    )
    for args in (
        ("init", "-q"),
        ("add", "-A"),
        ("-c", "user.name=bench", "-c", "user.email=bench@kiln", "commit", "-qm", "demo"),
    ):
        subprocess.run(["git", "-C", str(directory), *args], check=True)
    return directory


def timed_cli(kiln: KilnHarness, *args: str) -> tuple[float, str]:
    began = time.perf_counter()
    result = kiln.cli(*args)
    elapsed = time.perf_counter() - began
    if result.returncode != 0:
        raise SystemExit(f"kiln {' '.join(args)} failed: {result.stderr}")
    return elapsed, result.stdout.strip()


async def first_pull(reference: str) -> float:
    with PrivateDockerd() as fresh:
        driver = DockerDriver(installation_id="bench", base_url=fresh.docker_host)
        try:
            began = time.perf_counter()
            await driver.pull_image(reference, auth=None)
            return time.perf_counter() - began
        finally:
            await driver.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rebuilds", type=int, default=5)
    parser.add_argument("--pulls", type=int, default=3)
    options = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="kiln-bench-images-"))
    try:
        with PrivateDockerd() as engine:
            kiln = KilnHarness(work / "home", engine.docker_host)
            (work / "home").mkdir()
            try:
                kiln.start()
                source = render_source(work / "src")
                first_s, reference = timed_cli(kiln, "build", str(source), "-t", "demo:v1")
                rebuilds = [
                    timed_cli(kiln, "build", str(source), "-t", "demo:v1")
                    for _ in range(options.rebuilds)
                ]
                client = KilnClient.from_settings(kiln.settings, actor="bench")
                api_times = []
                for _ in range(options.rebuilds):
                    began = time.perf_counter()
                    built = build_source(client, source, tag="demo:v1")
                    api_times.append(time.perf_counter() - began)
                client.close()
                pulls = [asyncio.run(first_pull(reference)) for _ in range(options.pulls)]
                result = {
                    "first_build_s": round(first_s, 3),
                    "rebuild_unchanged_s_median": round(
                        statistics.median(t for t, _ in rebuilds), 3
                    ),
                    "rebuild_unchanged_api_s_median": round(statistics.median(api_times), 3),
                    "same_digest": all(r == reference for _, r in rebuilds)
                    and built.reference == reference,
                    "first_pull_s_median": round(statistics.median(pulls), 3),
                    "first_pull_s": [round(p, 3) for p in pulls],
                    "image_bytes": built.size,
                }
            finally:
                kiln.teardown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
