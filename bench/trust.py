"""Trust benchmark: what a user sees when NGINX dies under load, and slow requests across a deploy.

Prints one JSON line:
  nginx_kill.master / nginx_kill.master_and_workers
      runs       each run: failed requests (both load clients), the errors they saw, outage_s (the
                 longest gap between two successful answers of one client), restarted_s (kill →
                 a new NGINX master in the pid file)
      failed_requests_median, outage_s_median, outage_s_max
  slow_requests  10 requests to /cgi-bin/slow?5 (5 GET, 5 POST) in flight when a rolling deploy
                 starts (the spec's default deploy settings: drain bounds the wait at 30 s):
                 completed_200, executed_twice (an access-log line whose upstream_addr lists two
                 peers), deploy_s (deploy call → every instance on the new release, rollout over)
  server_kill    not measured here: bench.supervision measures kill -9 of the server (when it
                 exists on this tree), else why not

The load is two clients through NGINX to the demo app (3 instances), ~200 req/s each: one keeps
its connection alive and never retries, the other opens a new connection per request. NGINX's
master is killed with SIGKILL by the pid in KILN_HOME/nginx/nginx.pid (and, in the second case,
its workers with it); kiln restarts NGINX when it sees the master exit (Router.wait_exited).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx

from bench.rollout import deploy_api
from kiln.model import AppKey
from kiln.router.nginx import NginxRouter
from tests.e2e.conftest import hello_spec
from tests.e2e.harness import KilnHarness, wait_until
from tests.e2e.load import LoadClient
from tests.harness.dockerd import PrivateDockerd
from tests.harness.images import build_hello_image

LOAD_RPS = 200.0  # per load client, as in bench.rollout
GREETING = "hello from kiln demo"  # every answer of the demo app starts with it
BAD_ANSWER = "flaky failure"  # the flaky variant's own 500s say so


def marker(version: str) -> str:
    """The text that says which version answered ("hello from kiln demo v1 (instance …)")."""
    return f"demo {version} ("


class TimedClient(LoadClient):
    """A LoadClient that also clocks its successful answers (the longest gap between two) and
    counts the bad release's own 500s apart from every other failure."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.last_ok: float | None = None
        self.longest_gap = 0.0
        self.bad_release_500s = 0

    def _note(self, body: str) -> None:
        super()._note(body)
        if BAD_ANSWER in body:
            self.bad_release_500s += 1
        elif GREETING in body:
            # Only the demo's own greeting is a success: NGINX's error pages never carry it.
            now = time.monotonic()
            if self.last_ok is not None:
                self.longest_gap = max(self.longest_gap, now - self.last_ok)
            self.last_ok = now

    @property
    def kind(self) -> str:
        return "keep_alive" if self.keep_alive else "new_connection"


def load_pair(kiln: KilnHarness, app: str, markers: tuple[str, ...]) -> list[TimedClient]:
    """The two load clients of every scenario (not started)."""
    return [
        TimedClient(
            port=kiln.http_port,
            host_header=f"{app}.test",
            keep_alive=keep_alive,
            markers=markers,
            rate=LOAD_RPS,
            max_seconds=600,
            max_requests=500_000,
        )
        for keep_alive in (True, False)
    ]


@contextlib.contextmanager
def running(clients: list[TimedClient]) -> Iterator[list[TimedClient]]:
    for client in clients:
        client.__enter__()
    try:
        yield clients
    finally:
        for client in clients:
            client.stop()


def wait_for_more(clients: list[TimedClient], count: int) -> None:
    for client in clients:
        client.wait_for_requests(client.report.requests + count, timeout=30)


@contextlib.contextmanager
def bench_kiln(
    images: dict[str, tuple[str, str]], env: dict[str, str] | None = None
) -> Iterator[KilnHarness]:
    """A private dockerd with the demo images built (tag → (version, variant)) and a kiln server
    on it (``env``: its KILN_* overrides); everything removed afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="kiln-bench-"))
    try:
        with PrivateDockerd() as engine:
            client = docker.DockerClient(base_url=engine.docker_host)
            for tag, (version, variant) in images.items():
                build_hello_image(client, version=version, variant=variant, tag=tag)
            client.close()
            home = workdir / "home"
            home.mkdir()
            kiln = KilnHarness(home, engine.docker_host, env=env)
            try:
                kiln.start()
                yield kiln
            finally:
                kiln.teardown()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def router_of(kiln: KilnHarness) -> NginxRouter:
    """A handle on the NGINX kiln runs (pids and the admin socket; it starts nothing)."""
    return NginxRouter(
        prefix=kiln.settings.nginx_dir,
        listen_host=kiln.settings.http_host,
        listen_port=kiln.settings.http_port,
        run_dir=kiln.settings.run_dir,
    )


class ErrorLog:
    """NGINX's error log from a point on: what it said about a run's failures."""

    def __init__(self, kiln: KilnHarness) -> None:
        self.path = kiln.settings.nginx_dir / "logs" / "error.log"
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def since(self) -> list[str]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as log:
            log.seek(self.offset)
            return log.read().decode(errors="replace").splitlines()


_LOUD = ("warn", "error", "crit", "alert", "emerg")


def error_summary(lines: list[str], limit: int = 5) -> dict[str, int]:
    """The most frequent messages above notice level, without time, pids and connection ids."""
    counts: Counter[str] = Counter()
    for line in lines:
        parts = line.split(" ", 3)
        if len(parts) < 4 or parts[2].strip("[]") not in _LOUD:
            continue
        message = parts[3].split(": ", 1)[-1]  # drop "PID#TID: *CONN"
        counts[message.split(", client:")[0][:160]] += 1
    return dict(counts.most_common(limit))


# --- NGINX killed under load --------------------------------------------------------------


def kill_nginx_once(kiln: KilnHarness, app: str, *, workers_too: bool) -> dict[str, Any]:
    router = router_of(kiln)
    master = wait_until(router.master_pid, timeout=30, interval=0.01, what="an NGINX master")
    errors = ErrorLog(kiln)
    clients = load_pair(kiln, app, (marker("v1"),))
    with running(clients):
        wait_for_more(clients, 100)
        victims = [master, *sorted(router.worker_pids())] if workers_too else [master]
        killed_at = time.monotonic()
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

        def restarted() -> int | None:
            pid = router.master_pid()
            return pid if pid is not None and pid != master else None

        wait_until(restarted, timeout=30, interval=0.005, what="NGINX restarted by kiln")
        restarted_s = time.monotonic() - killed_at
        # Two more seconds of load: answers after the restart close every gap the kill opened.
        wait_for_more(clients, int(2 * LOAD_RPS))
    failed = sum(c.report.failures for c in clients)
    run: dict[str, Any] = {
        "failed_requests": failed,
        "requests": sum(c.report.requests for c in clients),
        "outage_s": round(max(c.longest_gap for c in clients), 3),
        "outage_s_by_client": {c.kind: round(c.longest_gap, 3) for c in clients},
        "restarted_s": round(restarted_s, 3),
        "workers_killed": len(victims) - 1,
    }
    if failed:
        run["errors"] = {c.kind: dict(c.report.errors) for c in clients if c.report.errors}
        run["closed_by_server"] = sum(c.report.closed_by_server for c in clients)
        logged = error_summary(errors.since())
        if logged:
            run["nginx_error_log"] = logged
    return run


def measure_nginx_kills(kiln: KilnHarness, network: str, repeats: int) -> dict[str, Any]:
    app = "trust-nginx"
    deploy_api(kiln, hello_spec(app, "kiln-hello:v1", network=network))
    kiln.wait_ready(app, 3, release=1, timeout=60)
    result: dict[str, Any] = {}
    for name, workers_too in (("master", False), ("master_and_workers", True)):
        runs = []
        for _ in range(repeats):
            kiln.wait_ready(app, 3, timeout=60)
            runs.append(kill_nginx_once(kiln, app, workers_too=workers_too))
        result[name] = {
            "runs": runs,
            "failed_requests_median": statistics.median(r["failed_requests"] for r in runs),
            "outage_s_median": round(statistics.median(r["outage_s"] for r in runs), 3),
            "outage_s_max": max(r["outage_s"] for r in runs),
            "restarted_s_median": round(statistics.median(r["restarted_s"] for r in runs), 3),
        }
    kiln.api("DELETE", f"/v1/apps/dev/{app}").raise_for_status()
    return result


# --- slow requests across a rolling deploy ------------------------------------------------

SLOW_SPEC = """\
app: {app}
image: {tag}
port: 8080
instances: 3
health: {{http: /healthz, interval: 500ms, timeout: 500ms}}
routes: [{{host: {app}.test}}]
network: {network}
"""  # the default deploy settings: rolling, drain 30 s


def in_flight(kiln: KilnHarness, app: str) -> int:
    async def ask() -> int:
        router = router_of(kiln)
        try:
            counts = await router.in_flight()
        finally:
            await router.close()
        return sum(counts.get(AppKey("dev", app), {}).values())

    return asyncio.run(ask())


def slow_log_lines(kiln: KilnHarness, app: str) -> list[dict[str, Any]]:
    log = kiln.settings.nginx_dir / "logs" / "access.log"
    entries = []
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("host") == f"{app}.test" and str(entry.get("uri", "")).endswith(
                "/cgi-bin/slow"
            ):
                entries.append(entry)
    return entries


def measure_slow_requests(kiln: KilnHarness, network: str, seconds: int) -> dict[str, Any]:
    app = "trust-slow"
    deploy_api(kiln, SLOW_SPEC.format(app=app, tag="kiln-hello:v1", network=network))
    kiln.wait_ready(app, 3, release=1, timeout=60)
    url = f"http://127.0.0.1:{kiln.http_port}/cgi-bin/slow?{seconds}"
    outcomes: dict[str, httpx.Response | BaseException] = {}

    def call(name: str, method: str) -> None:
        try:
            outcomes[name] = httpx.request(
                method,
                url,
                headers={"Host": f"{app}.test"},
                content=b"order=1" if method == "POST" else None,
                timeout=seconds + 60,
            )
        except httpx.HTTPError as exc:
            outcomes[name] = exc

    threads = [
        threading.Thread(target=call, args=(f"{method}-{n}", method), daemon=True)
        for method in ("GET", "POST")
        for n in range(5)
    ]
    for thread in threads:
        thread.start()
    wait_until(
        lambda: in_flight(kiln, app) >= len(threads),
        timeout=10,
        interval=0.02,
        what="every slow request in flight at an instance",
    )
    started = time.monotonic()
    deploy_api(kiln, SLOW_SPEC.format(app=app, tag="kiln-hello:v2", network=network))
    kiln.wait_ready(app, 3, release=2, timeout=120)
    deploy_s = time.monotonic() - started
    for thread in threads:
        thread.join(timeout=seconds + 70)
    answers = [o for o in outcomes.values() if isinstance(o, httpx.Response)]
    # The access log is buffered (flushed every second): wait for all ten lines.
    entries = wait_until(
        lambda: len(e := slow_log_lines(kiln, app)) >= len(threads) and e,
        timeout=10,
        what="the slow requests in the access log",
    )
    result: dict[str, Any] = {
        "requests": len(threads),
        "completed_200": sum(1 for r in answers if r.status_code == 200),
        "answered_by_old_release": sum(1 for r in answers if marker("v1") in r.text),
        "executed_twice": sum(1 for e in entries if "," in str(e.get("upstream_addr", ""))),
        "access_log_lines": len(entries),
        "deploy_s": round(deploy_s, 3),
        "drain_s_default": 30,
    }
    failures = {
        name: (f"{o.status_code}: {o.text[:80]}" if isinstance(o, httpx.Response) else repr(o))
        for name, o in sorted(outcomes.items())
        if not isinstance(o, httpx.Response) or o.status_code != 200
    }
    if failures:
        result["failures"] = failures
    kiln.api("DELETE", f"/v1/apps/dev/{app}").raise_for_status()
    return result


def server_kill_note() -> str:
    if importlib.util.find_spec("bench.supervision") is not None:
        return "measured by bench.supervision (python -m bench.supervision)"
    return (
        "not measured: this tree has no supervisor (kiln up starts the server unsupervised, so"
        " nothing restarts it after kill -9)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3, help="kills of each kind")
    parser.add_argument("--network", default="bridge", help="the instances' network")
    parser.add_argument("--slow-seconds", type=int, default=5)
    args = parser.parse_args()
    result: dict[str, Any] = {
        "benchmark": "trust",
        "instances": 3,
        "network": args.network,
        "load": f"2 clients x {LOAD_RPS:g} req/s (one keep-alive, never retries; one new"
        " connection per request)",
    }
    images = {"kiln-hello:v1": ("v1", "healthy"), "kiln-hello:v2": ("v2", "healthy")}
    with bench_kiln(images) as kiln:
        result["nginx_kill"] = measure_nginx_kills(kiln, args.network, args.repeats)
        result["slow_requests"] = measure_slow_requests(kiln, args.network, args.slow_seconds)
    result["server_kill"] = server_kill_note()
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
