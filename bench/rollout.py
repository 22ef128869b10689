"""Rollout benchmark on the demo app with 3 instances under a keep-alive load.

Prints one JSON line:
  deploy_to_all_new_s      seconds from the deploy API call to the last answer of the old release
                           (after it, every answer comes from the new one); median of N deploys
  failed_requests          failed requests (errors or non-2xx) over all deploys, both load clients
  kill_to_serving_s        seconds from `kill -9` of an instance to its replacement in the router
                           and answering; median of N kills
  nginx_rps / direct_rps   wrk requests/s through NGINX (3 instances) and straight to one container
  nginx_p99_ms / direct_p99_ms
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import docker

from kiln.planning.backoff import FORGIVE_AFTER_SECONDS
from tests.e2e.conftest import hello_spec
from tests.e2e.harness import KilnHarness, wait_until
from tests.e2e.load import LoadClient
from tests.harness.dockerd import PrivateDockerd
from tests.harness.images import build_hello_image

LOAD_RPS = 200.0  # per load client; unbounded clients would starve dockerd of the 2 cores


def deploy_api(kiln: KilnHarness, spec: str) -> None:
    response = kiln.api("POST", "/v1/deploy", json={"spec": spec, "message": "bench"})
    response.raise_for_status()


def wait_rollout_done(
    kiln: KilnHarness, app: str, release: int, *, instances: int = 3, timeout: float = 60
) -> None:
    kiln.wait_ready(app, instances, release=release, timeout=timeout)


def measure_deploys(
    kiln: KilnHarness,
    app: str,
    network: str,
    count: int,
    *,
    instances: int = 3,
    release: int = 1,
    timeout: float = 60,
    deploy_calls: list[tuple[float, float]] | None = None,
) -> tuple[list[float], int, int]:
    """``count`` rolling deploys of ``app`` (at ``release``, running kiln-hello:v1) alternating
    v2 and v1 under the two load clients: deploy → 100 % new for each, failures, requests.
    ``deploy_calls`` gets each deploy call's (wall-clock start, seconds until it answered)."""
    durations: list[float] = []
    failures = 0
    requests = 0
    tags = ["v2", "v1"]
    fresh = LoadClient(
        port=kiln.http_port,
        host_header=f"{app}.test",
        keep_alive=False,
        markers=("v1", "v2"),
        max_seconds=600,
        max_requests=2_000_000,
        rate=LOAD_RPS,
    )
    kept = LoadClient(
        port=kiln.http_port,
        host_header=f"{app}.test",
        keep_alive=True,
        markers=("v1", "v2"),
        max_seconds=600,
        max_requests=2_000_000,
        rate=LOAD_RPS,
    )
    with fresh, kept:
        kept.wait_for_requests(50)
        for n in range(count):
            new, old = tags[n % 2], tags[(n + 1) % 2]
            started, wall = time.monotonic(), time.time()
            deploy_api(
                kiln, hello_spec(app, f"kiln-hello:{new}", instances=instances, network=network)
            )
            if deploy_calls is not None:
                deploy_calls.append((wall, time.monotonic() - started))
            release += 1
            wait_rollout_done(kiln, app, release, instances=instances, timeout=timeout)
            kept.wait_for_requests(kept.report.requests + 20)
            last_old = kept.report.last_seen.get(old, started)
            durations.append(max(0.0, last_old - started))
    for client in (fresh, kept):
        failures += client.report.failures
        requests += client.report.requests
        if client.report.errors:
            kind = "keep-alive" if client.keep_alive else "new connection per request"
            print(f"{network}, {kind} client: {dict(client.report.errors)}", file=sys.stderr)
    if failures:
        error_log = kiln.settings.nginx_dir / "logs" / "error.log"
        if error_log.exists():
            print(error_log.read_text()[-3000:], file=sys.stderr)
    return durations, failures, requests


def measure_kills(kiln: KilnHarness, app: str, count: int) -> list[float]:
    durations = []
    for _ in range(count):
        status = kiln.wait_ready(app, 3)
        # The oldest instance, and one that ran for a while: a crash right after a start is
        # a crash loop to kiln, which then backs off (not what this measures).
        victim = min(status["instances"], key=lambda i: i["started_at"])
        age = time.time() - datetime.fromisoformat(victim["started_at"]).timestamp()
        time.sleep(max(0.0, FORGIVE_AFTER_SECONDS + 0.5 - age))
        before = {i["id"] for i in status["instances"]}
        started = time.monotonic()
        kiln.docker.containers.get(victim["container_id"]).kill(signal="SIGKILL")

        def replacement_serving(before: set[str] = before) -> bool:
            now = kiln.status(app)
            fresh = [
                i
                for i in now["instances"]
                if i["id"] not in before and i["ready"] and i["in_router"]
            ]
            return bool(fresh)

        wait_until(replacement_serving, timeout=30, interval=0.01, what="replacement")
        durations.append(time.monotonic() - started)
    return durations


def wrk(url: str, host: str, seconds: int) -> tuple[float, float]:
    output = subprocess.run(
        ["wrk", "-t1", "-c4", f"-d{seconds}s", "--latency", "-H", f"Host: {host}", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p99_match = re.search(r"99%\s+([\d.]+)(us|ms|s)", output)
    assert p99_match, output
    value, unit = float(p99_match.group(1)), p99_match.group(2)
    p99_ms = value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    return rps, p99_ms


def measure_network(kiln: KilnHarness, network: str, args: argparse.Namespace) -> dict[str, object]:
    app = f"bench-{network}"
    deploy_api(kiln, hello_spec(app, "kiln-hello:v1", network=network))
    wait_rollout_done(kiln, app, 1)
    durations, failures, requests = measure_deploys(kiln, app, network, args.deploys)
    kills = measure_kills(kiln, app, args.kills)
    status = kiln.wait_ready(app, 3)
    direct = status["instances"][0]["address"]
    # Alternate the two paths a few times and keep medians: on 2 shared cores one 5 s run is noisy.
    nginx_runs, direct_runs = [], []
    for _ in range(args.wrk_rounds):
        nginx_runs.append(
            wrk(f"http://127.0.0.1:{kiln.http_port}/", f"{app}.test", args.wrk_seconds)
        )
        direct_runs.append(wrk(f"http://{direct}/", f"{app}.test", args.wrk_seconds))
    nginx_rps = statistics.median(r[0] for r in nginx_runs)
    nginx_p99 = statistics.median(r[1] for r in nginx_runs)
    direct_rps = statistics.median(r[0] for r in direct_runs)
    direct_p99 = statistics.median(r[1] for r in direct_runs)
    kiln.api("DELETE", f"/v1/apps/dev/{app}").raise_for_status()
    return {
        "deploy_to_all_new_s_median": round(statistics.median(durations), 3),
        "deploy_to_all_new_s_max": round(max(durations), 3),
        "failed_requests": failures,
        "requests_during_deploys": requests,
        "kill_to_serving_s_median": round(statistics.median(kills), 3),
        "kill_to_serving_s_max": round(max(kills), 3),
        "nginx_rps": round(nginx_rps),
        "direct_rps": round(direct_rps),
        "nginx_vs_direct": round(nginx_rps / direct_rps, 2),
        "nginx_p99_ms": round(nginx_p99, 2),
        "direct_p99_ms": round(direct_p99, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deploys", type=int, default=10)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--wrk-seconds", type=int, default=5)
    parser.add_argument("--wrk-rounds", type=int, default=3)
    parser.add_argument(
        "--networks", default="host,bridge", help="instance networks to measure (host: the demo's)"
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="kiln-bench-"))
    result: dict[str, object] = {
        "benchmark": "rollout",
        "instances": 3,
        "deploys": args.deploys,
        "kills": args.kills,
        "load": f"2 clients x {LOAD_RPS:g} req/s (one keep-alive, one new connection per request)",
    }
    try:
        with PrivateDockerd() as engine:
            client = docker.DockerClient(base_url=engine.docker_host)
            for version in ("v1", "v2"):
                build_hello_image(
                    client, version=version, variant="healthy", tag=f"kiln-hello:{version}"
                )
            client.close()
            home = workdir / "home"
            home.mkdir()
            kiln = KilnHarness(home, engine.docker_host)
            try:
                kiln.start()
                for network in args.networks.split(","):
                    result[network] = measure_network(kiln, network, args)
            finally:
                kiln.teardown()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
