"""Promotion benchmark: ``kiln promote APP --from staging --to production`` under load.

The demo app runs 3 instances in production (rolling), behind NGINX on the host
``promote.test`` (a production-only route, from the spec's ``environments:`` overrides). Each
cycle deploys the other version to staging and waits for it, then runs ``kiln promote`` (the
CLI, a new process, as a CI would) while two load clients go through NGINX to production.

Prints one JSON line:
  promote_to_all_new_s   seconds from starting `kiln promote` to the last answer of the old
                         release in production (after it, every answer comes from the promoted
                         one); per cycle and the median
  failed_requests        failed requests of both load clients over every cycle, promotions
                         and baseline deploys (target: 0)
  requests               requests sent in all
  same_digest            every production release has exactly its staging release's digest
  deploy_to_all_new_s    the baseline: the same change as a plain `kiln deploy -e production
                         --no-wait` of the same spec (same rollout), measured the same way

Load: bench.trust's pair, ~200 req/s each (one keep-alive client that never retries, one new
connection per request). Production's gates are set to no soak (KILN_SETTINGS), so each
promotion goes as soon as staging is live.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.trust import LOAD_RPS, bench_kiln, load_pair, marker, running, wait_for_more
from tests.e2e.harness import KilnHarness, wait_until

APP = "promote"
SETTINGS = "environments:\n  gates:\n    production: {min_soak: 0s}\n"


def spec(tag: str) -> str:
    return f"""\
app: {APP}
image: {tag}
port: 8080
instances: 1
health: {{http: /healthz, interval: 1s, timeout: 500ms}}
deploy: {{deadline: 60s, drain: 2s}}
stop_grace: 2s
network: bridge
environments:
  production:
    instances: 3
    routes: [{{host: {APP}.test}}]
    deploy: {{strategy: rolling, max_surge: 1, max_unavailable: 0, deadline: 60s, drain: 2s}}
"""


def status(kiln: KilnHarness, env: str) -> dict[str, Any]:
    response = kiln.api("GET", f"/v1/apps/{env}/{APP}")
    response.raise_for_status()
    return dict(response.json())


def settled(kiln: KilnHarness, env: str, count: int, timeout: float = 120) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        s = status(kiln, env)
        ok = s["rollout"] is None and s["ready"] >= count and s["state"] == "running"
        return s if ok else None

    return dict(wait_until(done, timeout=timeout, interval=0.05, what=f"{env}/{APP} settled"))


def deploy_staging(kiln: KilnHarness, tag: str) -> None:
    result = kiln.deploy(spec(tag), "-e", "staging", "--wait")
    if result.returncode != 0:
        raise SystemExit(f"deploy to staging failed: {result.stdout}{result.stderr}")
    settled(kiln, "staging", 1)


def promote(kiln: KilnHarness) -> None:
    result = kiln.cli("promote", APP, "--from", "staging", "--to", "production", "--no-wait")
    if result.returncode != 0:
        raise SystemExit(f"kiln promote failed ({result.returncode}): {result.stderr}")


def releases(kiln: KilnHarness, env: str) -> list[dict[str, Any]]:
    response = kiln.api("GET", f"/v1/apps/{env}/{APP}/releases")
    response.raise_for_status()
    return list(response.json())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cycles", type=int, default=5, help="promotions measured")
    args = parser.parse_args()
    settings = Path(tempfile.mkdtemp(prefix="kiln-bench-settings-")) / "settings.yaml"
    settings.write_text(SETTINGS)
    os.environ["KILN_SETTINGS"] = str(settings)  # the harness passes its environment on
    images = {"kiln-hello:v1": ("v1", "healthy"), "kiln-hello:v2": ("v2", "healthy")}
    times: list[float] = []
    with bench_kiln(images) as kiln:
        deploy_staging(kiln, "kiln-hello:v1")
        promote(kiln)
        settled(kiln, "production", 3)
        clients = load_pair(kiln, APP, (marker("v1"), marker("v2")))  # Host: promote.test
        with running(clients):
            wait_for_more(clients, 100)
            for cycle in range(args.cycles):
                old, new = ("v1", "v2") if cycle % 2 == 0 else ("v2", "v1")
                deploy_staging(kiln, f"kiln-hello:{new}")
                wait_for_more(clients, 50)
                started = time.monotonic()
                promote(kiln)
                settled(kiln, "production", 3)
                wait_for_more(clients, 200)
                seen = [c.report.last_seen.get(marker(old), started) for c in clients]
                times.append(round(max(0.0, max(seen) - started), 3))
            baseline: list[float] = []
            for cycle in range(args.cycles):
                old, new = ("v1", "v2") if (cycle + args.cycles) % 2 == 0 else ("v2", "v1")
                wait_for_more(clients, 50)
                started = time.monotonic()
                result = kiln.deploy(spec(f"kiln-hello:{new}"), "-e", "production", "--no-wait")
                if result.returncode != 0:
                    raise SystemExit(f"deploy to production failed: {result.stderr}")
                settled(kiln, "production", 3)
                wait_for_more(clients, 200)
                seen = [c.report.last_seen.get(marker(old), started) for c in clients]
                baseline.append(round(max(0.0, max(seen) - started), 3))
            failed = sum(c.report.failures for c in clients)
            requests = sum(c.report.requests for c in clients)
            errors = {c.kind: dict(c.report.errors) for c in clients if c.report.errors}
        staging = {r["image"]: r["digest"] for r in releases(kiln, "staging")}
        production = releases(kiln, "production")
        promoted = [r for r in production if r["origin"] == "promotion"]
        same = all(staging.get(r["image"]) == r["digest"] for r in promoted)
    print(
        json.dumps(
            {
                "benchmark": "promote",
                "instances": 3,
                "strategy": "rolling",
                "network": "bridge",
                "load": f"2 clients x {LOAD_RPS:g} req/s (one keep-alive, never retries; one"
                " new connection per request)",
                "cycles": args.cycles,
                "promote_to_all_new_s": times,
                "promote_to_all_new_s_median": statistics.median(times) if times else None,
                "deploy_to_all_new_s": baseline,
                "deploy_to_all_new_s_median": statistics.median(baseline) if baseline else None,
                "failed_requests": failed,
                "requests": requests,
                "errors": errors,
                "same_digest": same,
            }
        )
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
