"""How NGINX reaches bridge instances: straight at the container's address, or through
docker-proxy on a published loopback port. Prints one JSON line.

For each path (``KILN_BRIDGE_PATH``), one kiln on one private dockerd runs the demo app with 3
instances on a bridge network and:

- ``deploys`` rolling deploys under continuous load (two clients through NGINX, ~200 req/s
  each: one keeps its connection alive and never retries, the other opens a new connection per
  request): failed requests, what NGINX's error log said, and how often a new instance got an
  address an earlier instance had (the case that used to end in connect timeouts, see
  kiln/drivers/README.md);
- ``wrk`` through NGINX and straight at one instance's address, alternated, medians kept:
  ``nginx_vs_direct`` is NGINX's requests/s over the instance's own.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.release_groups import first_release
from bench.rollout import LOAD_RPS, deploy_api, wait_rollout_done, wrk
from bench.trust import ErrorLog, TimedClient, bench_kiln, error_summary, load_pair, running
from tests.e2e.conftest import hello_spec
from tests.e2e.harness import KilnHarness


def addresses(kiln: KilnHarness, app: str) -> dict[str, str]:
    status = kiln.api("GET", f"/v1/apps/dev/{app}").json()
    return {i["id"]: i["address"] for i in status["instances"] if i.get("address")}


def measure_deploys(kiln: KilnHarness, app: str, count: int) -> dict[str, Any]:
    errors = ErrorLog(kiln)
    seen: dict[str, str] = addresses(kiln, app)  # address → the first instance that had it
    by_address = {address: instance for instance, address in seen.items()}
    reused = 0
    durations = []
    clients: list[TimedClient] = load_pair(kiln, app, ("v1", "v2"))
    with running(clients):
        release = 1
        for n in range(count):
            new = ("v2", "v1")[n % 2]
            started = time.monotonic()
            deploy_api(kiln, hello_spec(app, f"kiln-hello:{new}", network="bridge"))
            release += 1
            wait_rollout_done(kiln, app, release)
            durations.append(time.monotonic() - started)
            for instance, address in addresses(kiln, app).items():
                owner = by_address.setdefault(address, instance)
                if owner != instance:
                    reused += 1
                    by_address[address] = instance
    failed = sum(c.report.failures for c in clients)
    result: dict[str, Any] = {
        "deploys": count,
        "requests": sum(c.report.requests for c in clients),
        "failed_requests": failed,
        "addresses_reused": reused,
        "deploy_ready_s_median": round(statistics.median(durations), 3),
    }
    logged = error_summary(errors.since())
    if logged:
        result["nginx_error_log"] = logged
    client_errors = {
        ("keep-alive" if c.keep_alive else "new-connection"): dict(c.report.errors)
        for c in clients
        if c.report.errors
    }
    if client_errors:
        result["client_errors"] = client_errors
    return result


def measure_path(path: str, args: argparse.Namespace) -> dict[str, Any]:
    images = {"kiln-hello:v1": ("v1", "healthy"), "kiln-hello:v2": ("v2", "healthy")}
    with bench_kiln(images, env={"KILN_BRIDGE_PATH": path}) as kiln:
        app = f"bp-{path}"
        first_release(kiln, app, "bridge")
        result = measure_deploys(kiln, app, args.deploys)
        if args.wrk_rounds:
            status = kiln.wait_ready(app, 3)
            straight = status["instances"][0]["address"]
            nginx_runs, straight_runs = [], []
            for _ in range(args.wrk_rounds):
                nginx_runs.append(
                    wrk(f"http://127.0.0.1:{kiln.http_port}/", f"{app}.test", args.wrk_seconds)
                )
                straight_runs.append(wrk(f"http://{straight}/", f"{app}.test", args.wrk_seconds))
            nginx_rps = statistics.median(r[0] for r in nginx_runs)
            straight_rps = statistics.median(r[0] for r in straight_runs)
            result.update(
                instance_address=straight,
                nginx_rps=round(nginx_rps),
                instance_rps=round(straight_rps),
                nginx_vs_direct=round(nginx_rps / straight_rps, 2),
                nginx_p99_ms=round(statistics.median(r[1] for r in nginx_runs), 2),
            )
        if args.keep_logs:
            kept = Path(args.keep_logs) / path
            kept.mkdir(parents=True, exist_ok=True)
            for name in ("error.log", "access.log"):
                source = kiln.settings.nginx_dir / "logs" / name
                if source.exists():
                    shutil.copy(source, kept / name)
            events = kiln.api("GET", "/v1/events", params={"limit": 1000}).json()
            (kept / "events.json").write_text(json.dumps(events, indent=1))
            shutil.copy(kiln.home / "server.log", kept / "server.log")
        kiln.api("DELETE", f"/v1/apps/dev/{app}").raise_for_status()
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--paths", default="direct,published")
    parser.add_argument("--deploys", type=int, default=20)
    parser.add_argument("--wrk-seconds", type=int, default=5)
    parser.add_argument("--wrk-rounds", type=int, default=3, help="0: no throughput measurement")
    parser.add_argument("--keep-logs", help="copy NGINX's logs and kiln's events here")
    args = parser.parse_args()
    result: dict[str, Any] = {
        "benchmark": "bridge_path",
        "instances": 3,
        "load": f"2 clients x {LOAD_RPS:g} req/s through NGINX during deploys",
    }
    for path in args.paths.split(","):
        result[path] = measure_path(path, args)
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
