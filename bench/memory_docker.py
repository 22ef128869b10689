"""Does the kiln server's memory come back after its apps are destroyed, on Docker and NGINX?
A private dockerd, kiln's server (a process, as a user runs it) and its NGINX; each cycle
deploys N apps of the demo app through the API, deploys each again with another host (route
churn), destroys them all and waits until no container is left; then it reads the server's
memory: RSS, its anonymous part (/proc smaps_rollup) and its threads.

    .venv/bin/python -m bench.memory_docker                          # 20 apps x 1, 3 cycles
    .venv/bin/python -m bench.memory_docker --malloc-arena-max 2     # glibc arenas capped

Prints one JSON line. bench/memory.py measures what kiln itself keeps (tracemalloc, on the
fakes); this one says what a user's `ps` shows, allocator and threads included.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import psutil

from bench.scale import (
    DEFAULT_RESYNC_SECONDS,
    containers_of_installation,
    deploy_retrying,
    settled,
    spec_of,
    wait_all,
)
from tests.e2e.harness import KilnHarness
from tests.harness.dockerd import PrivateDockerd
from tests.harness.images import build_hello_image

PARALLEL = 8  # API calls at once


def memory_of(process: psutil.Process) -> dict[str, Any]:
    rollup: dict[str, int] = {}
    for line in Path(f"/proc/{process.pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        rollup[name] = int(rest.split()[0])  # kB
    return {
        "rss_mb": round(process.memory_info().rss / 2**20, 1),
        "anonymous_mb": round(rollup.get("Anonymous", 0) / 1024, 1),
        "threads": process.num_threads(),
    }


def cycle(kiln: KilnHarness, args: argparse.Namespace, apps: list[str]) -> None:
    deadline = time.monotonic() + 600
    out: dict[str, Any] = {}
    lock = threading.Lock()
    with ThreadPoolExecutor(PARALLEL) as pool:
        for alt in (False, True):
            list(
                pool.map(
                    lambda app, alt=alt: deploy_retrying(
                        kiln, spec_of(app, "kiln-hello:v1", args, "host", alt=alt), out, lock
                    ),
                    apps,
                )
            )
            wait_all(kiln, apps, lambda s: settled(s, args.instances), deadline, "serving")
        list(pool.map(lambda app: kiln.api("DELETE", f"/v1/apps/dev/{app}", timeout=300), apps))
    while containers_of_installation(kiln):
        if time.monotonic() > deadline:
            raise TimeoutError("containers left after the destroys")
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apps", type=int, default=20)
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--settle", type=float, default=15.0, help="s after each cycle")
    parser.add_argument("--malloc-arena-max", type=int, default=0, help="0: glibc's default")
    args = parser.parse_args()
    env = {"KILN_RESYNC_SECONDS": f"{DEFAULT_RESYNC_SECONDS:g}"}
    if args.malloc_arena_max:
        env["MALLOC_ARENA_MAX"] = str(args.malloc_arena_max)
    result: dict[str, Any] = {"apps": args.apps, "instances": args.instances, "env": env}
    with tempfile.TemporaryDirectory() as home, PrivateDockerd() as engine:
        client = docker.DockerClient(base_url=engine.docker_host)
        build_hello_image(client, version="v1", variant="healthy", tag="kiln-hello:v1")
        client.close()
        kiln = KilnHarness(Path(home), engine.docker_host, env=env)
        try:
            kiln.start()
            assert kiln.process is not None
            server = psutil.Process(kiln.process.pid)
            result["start"] = memory_of(server)
            result["per_cycle"] = []
            for n in range(args.cycles):
                cycle(kiln, args, [f"m{n}x{a:03d}" for a in range(args.apps)])
                time.sleep(args.settle)  # the loops' last rounds, the drift ticker
                result["per_cycle"].append({"cycle": n + 1, **memory_of(server)})
        finally:
            kiln.teardown()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
