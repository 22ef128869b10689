"""Release-groups benchmark: blue-green promote and rollback, a canary aborted by analysis, and
the rolling numbers of bench.rollout, on the demo app with 3 instances under continuous load.

Prints one JSON line:
  blue_green.runs          each cycle: v2 deployed blue-green beside v1 (green_start), promoted,
                           rolled back inside the rollback window
    promote_s              seconds from the promote API call to the last answer of the old
                           release (after it, every answer comes from the new one)
    rollback_s             seconds from the rollback API call (a router switch back to the warm
                           release) to the last answer of the release rolled back from
    *_failed               failed requests of both load clients in each phase
  canary_abort.abort_s     seconds from the first answer of the bad canary (kiln-hello:flaky,
                           ~10% 500s) to its last answer, compared with interval x failure_limit
  canary_abort.other_failed  failed requests other than the bad release's own 500s
  rolling.NETWORK          bench.rollout's deploy measurement (deploy → 100% new, failed
                           requests), and on bridge also NGINX vs one container straight (wrk)

The load is two clients through NGINX, ~200 req/s each: one keeps its connection alive and
never retries, the other opens a new connection per request (bench.trust's TimedClient).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

from bench.rollout import deploy_api, measure_deploys, wait_rollout_done, wrk
from bench.trust import (
    LOAD_RPS,
    ErrorLog,
    TimedClient,
    bench_kiln,
    error_summary,
    load_pair,
    marker,
    running,
    wait_for_more,
)
from tests.e2e.conftest import hello_spec
from tests.e2e.harness import KilnHarness, wait_until

CANARY_INTERVAL_S = 2
CANARY_FAILURE_LIMIT = 2


def group_spec(app: str, tag: str, *, network: str, deploy: str) -> str:
    """The demo app with 3 instances and the given ``deploy:`` keys (already indented)."""
    return f"""\
app: {app}
image: {tag}
port: 8080
instances: 3
health:
  http: /healthz
  interval: 1s
  timeout: 500ms
routes:
  - host: {app}.test
deploy:
  deadline: 60s
  drain: 2s
{deploy}
stop_grace: 2s
network: {network}
"""


BLUE_GREEN = "  strategy: blue-green\n  rollback_window: 5m"
CANARY_FLAKY = f"""\
  strategy: canary
  steps: [{{weight: 50, pause: 60s}}]
  analysis:
    interval: {CANARY_INTERVAL_S}s
    max_error_rate: 1%
    min_requests: 20
    failure_limit: {CANARY_FAILURE_LIMIT}"""


def first_release(kiln: KilnHarness, app: str, network: str) -> None:
    deploy_api(kiln, hello_spec(app, "kiln-hello:v1", network=network))
    wait_rollout_done(kiln, app, 1)


def settled(kiln: KilnHarness, app: str, target: int, timeout: float = 120) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        status = kiln.status(app)
        return status if status["rollout"] is None and status["target_release"] == target else None

    return dict(
        wait_until(done, timeout=timeout, interval=0.05, what=f"{app}'s rollout to {target}")
    )


def failures(clients: list[TimedClient]) -> int:
    return sum(c.report.failures for c in clients)


def errors_of(clients: list[TimedClient]) -> dict[str, dict[str, int]]:
    return {c.kind: dict(c.report.errors) for c in clients if c.report.errors}


def last_answer(clients: list[TimedClient], version: str, since: float) -> float:
    """Seconds from ``since`` to the last answer any client got from ``version``."""
    seen = [c.report.last_seen.get(marker(version), since) for c in clients]
    return max(0.0, max(seen) - since)


def post(kiln: KilnHarness, path: str, body: dict[str, Any]) -> None:
    response = kiln.api("POST", path, json=body)
    if response.status_code == 404 and "Not Found" in response.text:
        raise SystemExit(
            f"POST {path}: this kiln has no such endpoint (the rollout API is not on this tree)"
        )
    response.raise_for_status()


# --- blue-green -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Tally:
    """The load clients' counters at one moment, to tell a phase's failures apart."""

    failed: int
    closed: int
    green: int

    @classmethod
    def of(cls, clients: list[TimedClient]) -> Tally:
        return cls(
            failed=failures(clients),
            closed=sum(c.report.closed_by_server for c in clients),
            green=sum(c.report.bodies[marker("v2")] for c in clients),
        )

    def __sub__(self, other: Tally) -> Tally:
        return Tally(
            self.failed - other.failed, self.closed - other.closed, self.green - other.green
        )


def blue_green_cycle(
    kiln: KilnHarness, app: str, network: str, clients: list[TimedClient]
) -> dict[str, Any]:
    """Deploy v2 blue-green beside v1, promote it, roll back inside the window."""
    old = kiln.status(app)["target_release"]
    start = Tally.of(clients)
    deploy_api(kiln, group_spec(app, "kiln-hello:v2", network=network, deploy=BLUE_GREEN))
    new = kiln.status(app)["target_release"]

    def green_ready() -> bool:
        status = kiln.status(app)
        green = [i for i in status["instances"] if i["release"] == new and i["ready"]]
        return len(green) == 3 and status["rollout"] is not None

    wait_until(green_ready, timeout=60, interval=0.05, what="the green release ready")
    wait_for_more(clients, 100)
    instances_before = {c.id for c in kiln.containers(app)}
    ready = Tally.of(clients)

    promoted_at = time.monotonic()
    post(kiln, f"/v1/apps/dev/{app}/rollout/promote", {"full": False})
    settled(kiln, app, new)
    wait_for_more(clients, 200)
    promote_s = last_answer(clients, "v1", promoted_at)
    promoted = Tally.of(clients)

    rolled_back_at = time.monotonic()
    post(kiln, f"/v1/apps/dev/{app}/rollback", {})
    # Inside the window a rollback makes no release: the old one is warm, the router switches.
    settled(kiln, app, old)
    wait_for_more(clients, 200)
    rollback_s = last_answer(clients, "v2", rolled_back_at)
    rolled_back = Tally.of(clients)
    instances_after = {c.id for c in kiln.containers(app)}
    deploy, promote, rollback = ready - start, promoted - ready, rolled_back - promoted
    return {
        "promote_s": round(promote_s, 3),
        "promote_failed": promote.failed,
        "rollback_s": round(rollback_s, 3),
        "rollback_failed": rollback.failed,
        "green_start_failed": deploy.failed,
        "answers_from_green_before_promote": deploy.green,
        "keep_alive_closed_by_server": {
            "green_start": deploy.closed,
            "promote": promote.closed,
            "rollback": rollback.closed,
        },
        "new_instances_on_rollback": len(instances_after - instances_before),
    }


def measure_blue_green(kiln: KilnHarness, network: str, cycles: int) -> dict[str, Any]:
    app = "rg-bluegreen"
    first_release(kiln, app, network)
    errors = ErrorLog(kiln)
    clients = load_pair(kiln, app, (marker("v1"), marker("v2")))
    with running(clients):
        wait_for_more(clients, 50)
        runs = [blue_green_cycle(kiln, app, network, clients) for _ in range(cycles)]
    result: dict[str, Any] = {"runs": runs}
    for key in ("promote_s", "rollback_s"):
        result[f"{key}_median"] = round(statistics.median(r[key] for r in runs), 3)
        result[f"{key}_max"] = max(r[key] for r in runs)
    for key in ("promote_failed", "rollback_failed", "green_start_failed"):
        result[key] = sum(r[key] for r in runs)
    result["requests"] = sum(c.report.requests for c in clients)
    if failures(clients):
        result["errors"] = errors_of(clients)
        logged = error_summary(errors.since())
        if logged:
            result["nginx_error_log"] = logged
    kiln.api("DELETE", f"/v1/apps/dev/{app}").raise_for_status()
    return result


# --- canary aborted by analysis -------------------------------------------------------------


def failure_reason(kiln: KilnHarness, app: str) -> str:
    response = kiln.api("GET", "/v1/events", params={"env": "dev", "app": app, "limit": 200})
    response.raise_for_status()
    failed = [e for e in response.json() if e["kind"] == "rollout.failed"]
    return str(failed[-1]["reason"]) if failed else "(no rollout.failed event)"


def measure_canary_abort(kiln: KilnHarness, network: str) -> dict[str, Any]:
    app = "rg-canary"
    first_release(kiln, app, network)
    bad = "v5-flaky"
    errors = ErrorLog(kiln)
    clients = load_pair(kiln, app, (marker("v1"), marker(bad)))
    with running(clients):
        wait_for_more(clients, 50)
        deployed_at = time.monotonic()
        deploy_api(kiln, group_spec(app, "kiln-hello:flaky", network=network, deploy=CANARY_FLAKY))
        status = settled(kiln, app, 1)
        wait_for_more(clients, 200)
    first_bad = min(
        (c.report.first_seen[marker(bad)] for c in clients if marker(bad) in c.report.first_seen),
        default=None,
    )
    if first_bad is None:
        raise SystemExit(
            f"the canary never answered; the rollout ended: {failure_reason(kiln, app)}"
        )
    last_bad = max(
        c.report.last_seen[marker(bad)] for c in clients if marker(bad) in c.report.last_seen
    )
    bad_500s = sum(c.bad_release_500s for c in clients)
    other = failures(clients) - bad_500s
    result: dict[str, Any] = {
        "abort_s": round(last_bad - first_bad, 3),
        "interval_x_failure_limit_s": CANARY_INTERVAL_S * CANARY_FAILURE_LIMIT,
        "deploy_to_first_bad_answer_s": round(first_bad - deployed_at, 3),
        "bad_release_answers": sum(c.report.bodies[marker(bad)] for c in clients),
        "bad_release_500s": bad_500s,
        "other_failed": other,
        "serving_release_after": status["target_release"],
        "reason": failure_reason(kiln, app),
        "requests": sum(c.report.requests for c in clients),
    }
    if other:
        result["errors"] = errors_of(clients)
        logged = error_summary(errors.since())
        if logged:
            result["nginx_error_log"] = logged
    kiln.api("DELETE", f"/v1/apps/dev/{app}").raise_for_status()
    return result


# --- rolling: bench.rollout's measurement, unchanged ----------------------------------------


def measure_rolling(kiln: KilnHarness, network: str, args: argparse.Namespace) -> dict[str, Any]:
    app = f"rg-rolling-{network}"
    first_release(kiln, app, network)
    durations, failed, requests = measure_deploys(kiln, app, network, args.deploys)
    result: dict[str, Any] = {
        "deploy_to_all_new_s_median": round(statistics.median(durations), 3),
        "deploy_to_all_new_s_max": round(max(durations), 3),
        "failed_requests": failed,
        "requests_during_deploys": requests,
    }
    if network == "bridge" and args.wrk_rounds > 0:
        status = kiln.wait_ready(app, 3)
        direct = status["instances"][0]["address"]
        # Alternated and medians kept, as bench.rollout does: one run is noisy on 2 shared cores.
        nginx_runs, direct_runs = [], []
        for _ in range(args.wrk_rounds):
            nginx_runs.append(
                wrk(f"http://127.0.0.1:{kiln.http_port}/", f"{app}.test", args.wrk_seconds)
            )
            direct_runs.append(wrk(f"http://{direct}/", f"{app}.test", args.wrk_seconds))
        nginx_rps = statistics.median(r[0] for r in nginx_runs)
        direct_rps = statistics.median(r[0] for r in direct_runs)
        result.update(
            nginx_rps=round(nginx_rps),
            direct_rps=round(direct_rps),
            nginx_vs_direct=round(nginx_rps / direct_rps, 2),
            nginx_p99_ms=round(statistics.median(r[1] for r in nginx_runs), 2),
            direct_p99_ms=round(statistics.median(r[1] for r in direct_runs), 2),
        )
    kiln.api("DELETE", f"/v1/apps/dev/{app}").raise_for_status()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--network", default="bridge", help="network of the blue-green and canary app"
    )
    parser.add_argument("--cycles", type=int, default=3, help="blue-green promote + rollback")
    parser.add_argument("--rolling-networks", default="host,bridge")
    parser.add_argument("--deploys", type=int, default=10, help="rolling deploys per network")
    parser.add_argument("--wrk-seconds", type=int, default=5)
    parser.add_argument("--wrk-rounds", type=int, default=3, help="0: no throughput measurement")
    args = parser.parse_args()
    result: dict[str, Any] = {
        "benchmark": "release_groups",
        "instances": 3,
        "network": args.network,
        "load": f"2 clients x {LOAD_RPS:g} req/s (one keep-alive, never retries; one new"
        " connection per request)",
    }
    images = {
        "kiln-hello:v1": ("v1", "healthy"),
        "kiln-hello:v2": ("v2", "healthy"),
        "kiln-hello:flaky": ("v5-flaky", "flaky"),
    }
    with bench_kiln(images) as kiln:
        result["blue_green"] = measure_blue_green(kiln, args.network, args.cycles)
        result["canary_abort"] = measure_canary_abort(kiln, args.network)
        result["rolling"] = {
            network: measure_rolling(kiln, network, args)
            for network in args.rolling_networks.split(",")
            if network
        }
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
