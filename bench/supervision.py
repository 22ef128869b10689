"""Supervision benchmark: how long kiln is blind after `kill -9` of its server, on the demo app
with 3 instances under a keep-alive load; one instance is killed at the same moment.

Prints one JSON line:
  kill_to_api_s            seconds from `kill -9` of the server to its successor answering the API
                           (the supervisor's first restart delay, 0.5 s, included); median of N
  kill_to_replaced_s       seconds from the same `kill -9` to a replacement of the instance killed
                           with it being ready, in NGINX's peers and answering; median of N
  restart_delay_s          the supervisor's backoff before that restart (each round starts a fresh
                           supervisor: `kiln down` + `kiln up`, so every kill is a first crash)
  failed_requests          failed requests of the load through NGINX over all rounds
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import docker
import httpx

from kiln.planning.backoff import FORGIVE_AFTER_SECONDS
from kiln.supervisor.parent import Backoff
from tests.e2e.conftest import hello_spec
from tests.e2e.harness import KilnHarness, wait_until
from tests.e2e.load import LoadClient
from tests.harness.dockerd import PrivateDockerd
from tests.harness.images import build_hello_image

LOAD_RPS = 100.0
APP = "bench-supervision"


def answers(kiln: KilnHarness, old_server: int) -> bool:
    pid = kiln.server_pid()
    return pid is not None and pid != old_server and kiln.healthy()


def replacement_serving(kiln: KilnHarness, before: set[str]) -> bool:
    try:
        now = kiln.status(APP)
    except httpx.HTTPError:
        return False
    fresh = [i for i in now["instances"] if i["id"] not in before and i["ready"] and i["in_router"]]
    return bool(fresh) and kiln.get(f"{APP}.test").status_code == 200


def measure_round(kiln: KilnHarness) -> tuple[float, float]:
    status = kiln.wait_ready(APP, 3, timeout=60)
    # An instance that ran for a while: one killed right after its start counts as a crash
    # loop, and kiln would back off before replacing it (not what this measures).
    victim = min(status["instances"], key=lambda i: i["started_at"])
    age = time.time() - datetime.fromisoformat(victim["started_at"]).timestamp()
    time.sleep(max(0.0, FORGIVE_AFTER_SECONDS + 0.5 - age))
    before = {i["id"] for i in status["instances"]}
    server = kiln.server_pid()
    assert server is not None
    container = kiln.docker.containers.get(victim["container_id"])

    started = time.monotonic()
    os.kill(server, signal.SIGKILL)
    container.kill(signal="SIGKILL")
    wait_until(lambda: answers(kiln, server), timeout=60, interval=0.01, what="kiln back")
    api = time.monotonic() - started
    wait_until(
        lambda: replacement_serving(kiln, before), timeout=60, interval=0.01, what="replacement"
    )
    return api, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--network", default="host", help="the instances' network (host: the demo's)"
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="kiln-bench-"))
    result: dict[str, object] = {
        "benchmark": "supervision",
        "instances": 3,
        "rounds": args.rounds,
        "network": args.network,
        "restart_delay_s": Backoff().first,
        "load": f"1 keep-alive client x {LOAD_RPS:g} req/s through NGINX",
    }
    try:
        with PrivateDockerd() as engine:
            client = docker.DockerClient(base_url=engine.docker_host)
            build_hello_image(client, version="v1", variant="healthy", tag="kiln-hello:v1")
            client.close()
            home = workdir / "home"
            home.mkdir()
            kiln = KilnHarness(home, engine.docker_host)
            try:
                kiln.up()
                spec = hello_spec(APP, "kiln-hello:v1", network=args.network)
                kiln.api("POST", "/v1/deploy", json={"spec": spec}).raise_for_status()
                kiln.wait_ready(APP, 3, release=1, timeout=60)
                api_times, replaced_times = [], []
                load = LoadClient(
                    port=kiln.http_port,
                    host_header=f"{APP}.test",
                    keep_alive=True,
                    max_seconds=900,
                    max_requests=1_000_000,
                    rate=LOAD_RPS,
                )
                with load:
                    for n in range(args.rounds):
                        if n:  # a fresh supervisor: this kill is its first crash again
                            assert kiln.cli("down").returncode == 0
                            kiln.up()
                        api, replaced = measure_round(kiln)
                        api_times.append(api)
                        replaced_times.append(replaced)
                if load.report.errors:
                    print(f"load errors: {dict(load.report.errors)}", file=sys.stderr)
                result.update(
                    {
                        "kill_to_api_s_median": round(statistics.median(api_times), 3),
                        "kill_to_api_s_max": round(max(api_times), 3),
                        "kill_to_replaced_s_median": round(statistics.median(replaced_times), 3),
                        "kill_to_replaced_s_max": round(max(replaced_times), 3),
                        "failed_requests": load.report.failures,
                        "requests": load.report.requests,
                    }
                )
            finally:
                kiln.teardown()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
