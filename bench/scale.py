"""Scale benchmark (issue 10): many apps of the demo app on one kiln, per instance network.

For each network (``--networks host,bridge``), on a fresh private dockerd, kiln and NGINX:

  rolling_alone             deploy → 100 % new of one app (bench.rollout's measure_deploys, its
                            two load clients) with no other app
  deploy_all_api            the other APPS-1 apps in parallel through the API (32 calls at a
                            time): time until every instance is ready and in NGINX; loop lag
  idle                      kiln's CPU over IDLE s (% of one core; /proc via psutil), NGINX's
                            (master + workers) and dockerd's (+ containerd) for context; loop
                            lag; instances restarted and events meanwhile; apps quiet (no
                            request lately: checked every idle_interval; ``--quiet-after 0``
                            checks every app at its interval) and health checks per second
  api                       GET /v1/apps p50/p99 ms, ``kiln status --json`` wall time
  rolling_with_others       the same app's deploys again, with the APPS-1 others idle; ratio
  rolling_alone_again       the others destroyed, the same deploys alone again (the engine has
                            run their containers meanwhile): ratio of with-others to this, and
                            to the alone deploys before and after together (A-B-A: what drifts
                            on the machine between the phases weighs on both sides); then the
                            others again. Each rolling phase first waits (≤ 90 s) for a quiet
                            machine: < 10 % CPU, < 64 MB not yet written to disk (``machine``)
  kill                      ``kill -9`` of one instance in each of 10 apps at once → all replaced
  route_churn               a deploy of every app that changes its routes (another host; kiln
                            reloads NGINX when the route table changes: both hosts while both
                            releases serve, then the new one), through the API, 8 at a time;
                            NGINX reloads counted from kiln_nginx_reloads_total
  destroy_all               DELETE of every app, in parallel through the API
  deploy_all_cli            every app again by ``kiln deploy --no-wait``, one command after the
                            other from a script (stopped at --cli-seconds: ``capped``); time
                            until the last command returned and until every instance serves;
                            then destroy_all_again
  rss_mb                    kiln's and NGINX's RSS at: start, deployed, before and after the
                            route churn, 30 s later, after the destroys

Every wait has a deadline; a phase that fails or times out is reported with ``error`` and what it
measured so far, and the next phase runs. Everything is cleaned up (containers, dockerd, NGINX),
also on failure or SIGTERM. ``--py-spy BIN`` profiles the server at idle (after the
CPU window) and during both deploy-alls (raw stacks into ``--profile-dir``, top functions into the JSON line).

Prints one JSON line; exits 0. Run small while changing it: ``--apps 10 --idle-seconds 10``.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from bench.rollout import deploy_api, measure_deploys
from kiln.config import Settings
from kiln.planning.backoff import FORGIVE_AFTER_SECONDS
from tests.e2e.conftest import hello_spec
from tests.e2e.harness import KilnHarness
from tests.harness.dockerd import PrivateDockerd
from tests.harness.images import build_hello_image

Json = dict[str, Any]
SOLO = "s000"  # the app of the rolling deploys; the others are s001 ...
PARALLEL = 32  # API calls in flight at once for "in parallel through the API"
CHURN_PARALLEL = 8  # route-changing deploys at once: most of them get reloads of their own
PY_SPY_RATE = 50  # samples/s
CLI_ATTEMPTS = 3


DEFAULT_RESYNC_SECONDS = dataclasses.fields(Settings)[
    [f.name for f in dataclasses.fields(Settings)].index("resync_seconds")
].default


class PhaseTimeout(Exception):
    pass


def app_names(count: int) -> list[str]:
    return [f"s{n:03d}" for n in range(count)]


def spec_of(app: str, tag: str, args: argparse.Namespace, network: str, alt: bool = False) -> str:
    spec = hello_spec(app, tag, instances=args.instances, network=network)
    if not args.probe_interval:  # no probes at all: what the rest of kiln costs
        spec = spec.replace("health:\n  http: /healthz\n  interval: 1s\n  timeout: 500ms\n", "")
    elif args.probe_interval != 1.0:  # the demo app probes every second
        spec = spec.replace("  interval: 1s\n", f"  interval: {args.probe_interval:g}s\n")
    if alt:
        # Another host: two route changes (old and new hosts while both releases serve, then
        # the new one alone), each an NGINX reload.
        spec = spec.replace(f"  - host: {app}.test\n", f"  - host: {app}-alt.test\n")
    return spec


def round3(value: float) -> float:
    return round(value, 3)


def quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


# --- what kiln says -------------------------------------------------------------------------


def list_apps(kiln: KilnHarness) -> list[Json]:
    response = kiln.api("GET", "/v1/apps", timeout=120)
    response.raise_for_status()
    return list(response.json())


def settled(status: Json, instances: int) -> bool:
    """Its rollout is over and exactly ``instances`` of its target release serve."""
    rows = status["instances"]
    return (
        status["rollout"] is None
        and len(rows) == instances
        and all(
            i["ready"] and i["in_router"] and i["release"] == status["target_release"] for i in rows
        )
    )


def wait_all(
    kiln: KilnHarness,
    apps: list[str],
    condition: Callable[[Json], bool],
    deadline: float,
    what: str,
    out: Json | None = None,
) -> float:
    """Poll GET /v1/apps until ``condition`` holds for every app in ``apps``; the time it did."""
    wanted = set(apps)
    done: set[str] = set()
    while True:
        try:
            rows = {s["app"]: s for s in list_apps(kiln)}
        except Exception as exc:  # a slow or restarting API: try again until the deadline
            print(f"GET /v1/apps: {exc}", file=sys.stderr)
            rows = {}
        done = {a for a in wanted if a in rows and condition(rows[a])}
        if out is not None:
            out["apps_done"] = len(done)
        if done == wanted:
            return time.monotonic()
        if time.monotonic() > deadline:
            missing = sorted(wanted - done)
            raise PhaseTimeout(f"{what}: {len(done)}/{len(wanted)} apps; e.g. not {missing[:5]}")
        time.sleep(1.0)  # each poll costs kiln a full status of every app: not too often


def deploy_retrying(kiln: KilnHarness, spec: str, out: Json, lock: threading.Lock) -> None:
    """POST /v1/deploy, tried again (as a script would) when kiln does not answer in time or
    answers 5xx; a deploy that landed anyway answers unchanged the second time. Counted."""
    for attempt in range(CLI_ATTEMPTS):
        try:
            response = kiln.api(
                "POST", "/v1/deploy", json={"spec": spec, "message": "bench"}, timeout=120
            )
            if response.status_code < 500:
                response.raise_for_status()
                return
            problem = f"{response.status_code}: {response.text[:200]}"
        except httpx.TransportError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        with lock:
            out["api_failures"] = out.get("api_failures", 0) + 1
            out.setdefault("api_first_failure", problem)
        if attempt == CLI_ATTEMPTS - 1:
            raise RuntimeError(f"POST /v1/deploy: {problem}")


def metrics(kiln: KilnHarness) -> str:
    response = kiln.api("GET", "/metrics", timeout=30)
    response.raise_for_status()
    return response.text


def lag_buckets(text: str) -> dict[float, float]:
    """kiln_event_loop_lag_seconds's cumulative buckets (le → count); empty on an older kiln."""
    found: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "kiln_event_loop_lag_seconds":
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    found[float(sample.labels["le"])] = sample.value
    return found


def lag_between(before: dict[float, float], after: dict[float, float]) -> Json:
    """p99 and max of the loop lag between two scrapes, as the histogram's bucket bounds (the
    lag was at most that)."""
    if not after:
        return {"lag": "no kiln_event_loop_lag_seconds on this kiln"}
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1]
    if total <= 0:
        return {"lag_samples": 0}
    p99 = next(b for b, c in zip(bounds, counts, strict=True) if c >= 0.99 * total)
    worst = next(b for b, c in zip(bounds, counts, strict=True) if c >= total)
    return {"lag_samples": int(total), "lag_p99_le_s": p99, "lag_max_le_s": worst}


def counter(text: str, family_name: str, **labels: str) -> float:
    """The sum of a counter's samples with ``labels`` (0 when the family is missing)."""
    for family in text_string_to_metric_families(text):
        if family.name == family_name:
            return sum(
                s.value
                for s in family.samples
                if s.name.endswith("_total") and labels.items() <= s.labels.items()
            )
    return 0.0


def reloads(text: str) -> float:
    return counter(text, "kiln_nginx_reloads", result="ok")


# --- the machine ----------------------------------------------------------------------------

QUIET_BUSY_PCT = 10.0
"""The machine counts as quiet below this CPU use (% of all its cores, over QUIET_WINDOW s) ..."""
QUIET_DIRTY_MB = 64.0
"""... with this little written data still waiting for the disk (Dirty + Writeback)."""
QUIET_WINDOW = 2.0
QUIET_WAIT_UP_TO = 90.0


def unwritten_mb() -> float:
    """Dirty + Writeback of /proc/meminfo, MB: what the page cache still owes the disk."""
    fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return sum(int(fields[name].split()[0]) for name in ("Dirty", "Writeback")) / 1024


def wait_for_quiet_machine() -> Json:
    """Until the machine is quiet (CPU and the disk's backlog), at most QUIET_WAIT_UP_TO s.

    A deploy or destroy of 99 apps leaves the machine busy for a while after its last call:
    the engine's clean-up, and the page cache flushing the containers' files ~30 s after they
    were written (vm.dirty_expire_centisecs). A rolling deploy measured then weighs that, not
    the other apps idling, so each rolling phase begins on a quiet machine (and says what it
    waited for)."""
    started = time.monotonic()
    while True:
        busy = psutil.cpu_percent(interval=QUIET_WINDOW)
        unwritten = unwritten_mb()
        waited = time.monotonic() - started
        quiet = busy < QUIET_BUSY_PCT and unwritten < QUIET_DIRTY_MB
        if quiet or waited >= QUIET_WAIT_UP_TO:
            return {
                "waited_s": round(waited, 1),
                "busy_pct": round(busy, 1),
                "unwritten_mb": round(unwritten, 1),
                "quiet": quiet,
            }


# --- processes ------------------------------------------------------------------------------


class Processes:
    """kiln's server, NGINX (master + workers), dockerd (+ its containerd)."""

    def __init__(self, kiln: KilnHarness, dockerd_pid: int | None) -> None:
        assert kiln.process is not None
        self.server = psutil.Process(kiln.process.pid)
        self.nginx_pid_file = kiln.settings.nginx_dir / "nginx.pid"
        self.dockerd = psutil.Process(dockerd_pid) if dockerd_pid else None

    def nginx(self) -> list[psutil.Process]:
        try:
            master = psutil.Process(int(self.nginx_pid_file.read_text().strip()))
            return [master, *master.children()]
        except (OSError, ValueError, psutil.Error):
            return []

    def engine(self) -> list[psutil.Process]:
        if self.dockerd is None:
            return []
        try:
            # containerd is dockerd's child; the shims (one per container) are not counted
            return [self.dockerd, *(c for c in self.dockerd.children() if "shim" not in c.name())]
        except psutil.Error:
            return []

    @staticmethod
    def _cpu(procs: list[psutil.Process]) -> dict[int, float]:
        times = {}
        for proc in procs:
            try:
                t = proc.cpu_times()
                times[proc.pid] = t.user + t.system
            except psutil.Error:
                pass
        return times

    @staticmethod
    def _rss(procs: list[psutil.Process]) -> float:
        total = 0
        for proc in procs:
            with suppress(psutil.Error):
                total += proc.memory_info().rss
        return round(total / 2**20, 1)

    @staticmethod
    def _pss(procs: list[psutil.Process]) -> float:
        """Proportional set size: a page shared by NGINX's workers (its shared-memory zones,
        the master's copy-on-write pages) counts once across them, not once per worker."""
        total = 0
        for proc in procs:
            with suppress(psutil.Error):
                total += proc.memory_full_info().pss
        return round(total / 2**20, 1)

    def rss(self) -> Json:
        nginx = self.nginx()
        return {
            "kiln": self._rss([self.server]),
            "nginx": self._rss(nginx),
            "kiln_pss": self._pss([self.server]),
            "nginx_pss": self._pss(nginx),
        }

    def cpu_over(self, seconds: float) -> Json:
        """% of one core each used over ``seconds`` (processes present at both ends)."""
        groups = {"kiln": lambda: [self.server], "nginx": self.nginx, "dockerd": self.engine}
        before = {name: self._cpu(get()) for name, get in groups.items()}
        started = time.monotonic()
        time.sleep(seconds)
        after = {name: self._cpu(get()) for name, get in groups.items()}
        elapsed = time.monotonic() - started
        result: Json = {"window_s": round(elapsed, 1)}
        for name in groups:
            used = sum(
                after[name][pid] - before[name][pid] for pid in after[name] if pid in before[name]
            )
            result[f"{name}_pct_core"] = round(used / elapsed * 100, 2)
        return result


# --- py-spy ---------------------------------------------------------------------------------


@contextmanager
def profiled(args: argparse.Namespace, pid: int, name: str, out: Json) -> Iterator[None]:
    """py-spy on the server for the block's duration (when --py-spy is given)."""
    if not args.py_spy:
        yield
        return
    path = Path(args.profile_dir) / f"{name}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            args.py_spy,
            "record",
            "-p",
            str(pid),
            "-r",
            str(PY_SPY_RATE),
            "-f",
            "raw",
            "-o",
            str(path),
            "--nonblocking",
            "--gil",  # only samples holding the GIL: where the CPU goes, not waits
            "-d",
            "3600",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started = time.monotonic()
    try:
        yield
    finally:
        elapsed = time.monotonic() - started
        proc.send_signal(signal.SIGINT)  # py-spy writes what it has on Ctrl-C
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if path.exists():
            top = top_frames(path)
            # samples are taken 50 times a second, only while a thread holds the GIL
            top["gil_held_pct"] = round(100 * top["samples"] / (elapsed * PY_SPY_RATE), 1)
            out[f"profile_{name}"] = top


def top_frames(path: Path, count: int = 10) -> Json:
    """From py-spy's raw (collapsed) stacks (GIL holders only): the functions most often on
    top of the stack (self), and kiln's functions most often anywhere on it (inclusive; not
    the ones on nearly every stack, like the server's main)."""
    leaf: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        samples = int(n)
        total += samples
        frames = stack.split(";")
        leaf[frames[-1]] += samples
        for frame in set(frames):
            if "kiln/" in frame:
                inclusive[frame] += samples
    if not total:
        return {"samples": 0}

    inclusive = collections.Counter(
        {frame: n for frame, n in inclusive.items() if n < 0.95 * total}
    )

    def pct(counter: collections.Counter[str]) -> list[list[object]]:
        return [[frame, round(100 * n / total, 1)] for frame, n in counter.most_common(count)]

    return {"samples": total, "self_pct": pct(leaf), "kiln_inclusive_pct": pct(inclusive)}


@contextmanager
def workers(count: int) -> Iterator[ThreadPoolExecutor]:
    """A thread pool that, when the block fails (a phase timeout, or SIGTERM's KeyboardInterrupt),
    drops its queued calls and does not wait for the running ones: the teardown that follows
    stops kiln, and those calls then fail at once. (``with ThreadPoolExecutor`` would wait for
    every call first, up to the phase's deadline.)"""
    pool = ThreadPoolExecutor(count)
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


# --- phases ---------------------------------------------------------------------------------


class Run:
    def __init__(
        self, kiln: KilnHarness, procs: Processes, args: argparse.Namespace, network: str, out: Json
    ) -> None:
        self.kiln, self.procs, self.args, self.network = kiln, procs, args, network
        self.result = out
        out["rss_mb"] = {}
        self.apps = app_names(args.apps)
        self.others = self.apps[1:]
        self.solo_release = 1
        self.rolling_alone: list[float] = []
        self.rolling_with: list[float] = []

    def run_phase(self, name: str, body: Callable[[Json, float], None]) -> None:
        out: Json = {"load": round(psutil.getloadavg()[0], 1)}  # the machine's, 1 min average
        self.result[name] = out
        started = time.monotonic()
        print(f"[scale {self.network}] {name} ...", file=sys.stderr, flush=True)
        try:
            body(out, started + self.args.phase_timeout)
        except Exception as exc:
            out["error"] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc(file=sys.stderr)
        out.setdefault("phase_s", round3(time.monotonic() - started))
        print(f"[scale {self.network}] {name}: {json.dumps(out)}", file=sys.stderr, flush=True)

    def rss(self, when: str) -> None:
        self.result["rss_mb"][when] = self.procs.rss()

    def settled(self, status: Json) -> bool:
        return settled(status, self.args.instances)

    # rolling deploys of one app: alone, then with the others idle
    def rolling(self, out: Json, deadline: float) -> None:
        out["machine"] = wait_for_quiet_machine()
        calls: list[tuple[float, float]] = []
        durations, failures, requests = measure_deploys(
            self.kiln,
            SOLO,
            self.network,
            self.args.rolling_deploys,
            instances=self.args.instances,
            release=self.solo_release,
            timeout=max(10.0, deadline - time.monotonic()),
            deploy_calls=calls,
        )
        self.solo_release += len(durations)
        out["last_rollout"] = self.last_rollout_timeline(requested_at=calls[-1][0])
        out["rollout_split_ms"] = self.rollout_split(since=calls[0][0])
        out.update(
            {
                "deploy_to_all_new_s": [round3(d) for d in durations],
                "deploy_to_all_new_s_median": round3(statistics.median(durations)),
                "deploy_call_s_median": round3(statistics.median(c for _, c in calls)),
                "failed_requests": failures,
                "requests": requests,
            }
        )

    def last_rollout_timeline(self, *, requested_at: float) -> list[list[object]]:
        """The solo app's events since its last rollout started: [s after it, kind, instance]
        (where a slower rollout spends its time: starts, readiness, router, drains), and first
        when the bench sent the deploy (``requested_at``, wall clock: kiln runs on this machine)."""
        response = self.kiln.api("GET", "/v1/events", params={"app": SOLO, "limit": 200})
        response.raise_for_status()
        events = response.json()
        starts = [i for i, e in enumerate(events) if e["kind"] == "rollout.started"]
        if not starts:
            return []
        since = events[starts[-1] :]
        began = datetime.fromisoformat(since[0]["at"])
        requested = [round(requested_at - began.timestamp(), 3), "deploy requested", ""]
        return [
            requested,
            *[
                [
                    round((datetime.fromisoformat(e["at"]) - began).total_seconds(), 3),
                    e["kind"],
                    e["instance"] or "",
                ]
                for e in since
            ],
        ]

    def rollout_split(self, *, since: float) -> Json:
        """Where the solo app's rollouts since ``since`` (wall clock) spent their time, medians
        over the rollouts, ms: ``starting`` from each step's router change (or the rollout's
        start) to the next ``instance.started`` (the engine's create and start: the round that
        plans the start has just changed the routes), ``ready_and_routed`` from there to the
        next router change (the instance's readiness, kiln's round, NGINX's peers)."""
        response = self.kiln.api(
            "GET", "/v1/events", params={"app": SOLO, "limit": 1000, "after": 0}
        )
        response.raise_for_status()
        starting: list[float] = []
        routed: list[float] = []
        mark: float | None = None  # the last step marker of the rollout under way
        kind_of = {"instance.started": starting, "router.peers": routed}
        sums: dict[str, float] = {}
        for event in response.json():
            at = datetime.fromisoformat(event["at"]).timestamp()
            if at < since:
                continue
            kind = event["kind"]
            if kind == "rollout.started":
                mark, sums = at, {"instance.started": 0.0, "router.peers": 0.0}
            elif mark is not None and kind in kind_of:
                sums[kind] += at - mark
                mark = at
            elif mark is not None and kind == "rollout.succeeded":
                for name, spent in sums.items():
                    kind_of[name].append(1000 * spent)
                mark = None
        if not starting:
            return {}
        return {
            "rollouts": len(starting),
            "starting": round(statistics.median(starting), 1),
            "ready_and_routed": round(statistics.median(routed), 1),
        }

    def solo_first(self, out: Json, deadline: float) -> None:
        deploy_api(self.kiln, spec_of(SOLO, "kiln-hello:v1", self.args, self.network))
        wait_all(self.kiln, [SOLO], self.settled, deadline, "the first app")
        self.rolling(out, deadline)
        self.rolling_alone = out["deploy_to_all_new_s"]

    def deploy_all_cli(self, out: Json, deadline: float) -> None:
        """Every app by ``kiln deploy --no-wait``, one command after the other; commands stop
        at --cli-seconds (then the apps deployed so far are waited for, and ``capped`` says so)."""
        before = lag_buckets(metrics(self.kiln))
        specs = self.kiln.home / "specs"
        specs.mkdir(exist_ok=True)
        started = time.monotonic()
        stop_commands = started + (self.args.cli_seconds or self.args.phase_timeout)
        deployed: list[str] = []
        commands: list[float] = []
        with profiled(self.args, self.procs.server.pid, f"{self.network}-deploy-all-cli", out):
            for app in self.apps:
                if time.monotonic() > stop_commands:
                    out["capped"] = True
                    break
                path = specs / f"{app}.yaml"
                path.write_text(spec_of(app, "kiln-hello:v1", self.args, self.network))
                began = time.monotonic()
                for _attempt in range(CLI_ATTEMPTS):
                    result = self.kiln.cli("deploy", "-f", str(path), "--no-wait", timeout=120)
                    if result.returncode == 0:
                        break
                    # as a script would: try again (a deploy that did land answers unchanged)
                    out["cli_failures"] = out.get("cli_failures", 0) + 1
                    out.setdefault("cli_first_failure", (result.stdout + result.stderr)[-300:])
                else:
                    raise RuntimeError(f"kiln deploy {app}: {result.stdout}{result.stderr}")
                commands.append(time.monotonic() - began)
                deployed.append(app)
                out["commands_done"] = len(deployed)
            out["commands_s"] = round3(time.monotonic() - started)
            out["command_s_median"] = round3(statistics.median(commands))
            done = wait_all(self.kiln, deployed, self.settled, deadline, "all serving", out)
        out["all_serving_s"] = round3(done - started)
        out.update(lag_between(before, lag_buckets(metrics(self.kiln))))

    def idle(self, out: Json, deadline: float) -> None:
        time.sleep(5)  # the deploys' tail (last probes, events) settles first
        text = metrics(self.kiln)
        before = lag_buckets(text)
        restarts, events = counter(text, "kiln_restarts"), counter(text, "kiln_events")
        checks = counter(text, "kiln_instance_health_checks")
        # Apps with no request lately are checked every idle_interval (README "Idle apps").
        out["quiet_apps"] = sum(1 for app in list_apps(self.kiln) if app.get("quiet"))
        out.update(self.procs.cpu_over(self.args.idle_seconds))
        text = metrics(self.kiln)
        out.update(lag_between(before, lag_buckets(text)))
        checks = counter(text, "kiln_instance_health_checks") - checks
        out["health_checks_per_s"] = round(checks / self.args.idle_seconds, 1)
        # not idle after all when instances were replaced meanwhile (e.g. probes timing out)
        out["restarts"] = int(counter(text, "kiln_restarts") - restarts)
        out["events"] = int(counter(text, "kiln_events") - events)
        # profiled after the measure: py-spy's own sampling is not on the machine meanwhile
        if self.args.py_spy:
            with profiled(self.args, self.procs.server.pid, f"{self.network}-idle", out):
                time.sleep(min(30.0, self.args.idle_seconds))

    def api(self, out: Json, deadline: float) -> None:
        times = []
        for _ in range(self.args.api_requests):
            started = time.perf_counter()
            list_apps(self.kiln)
            times.append(time.perf_counter() - started)
            if time.monotonic() > deadline:
                break
        out["apps_get_p50_ms"] = round(quantile(times, 0.5) * 1000, 1)
        out["apps_get_p99_ms"] = round(quantile(times, 0.99) * 1000, 1)
        out["apps_get_requests"] = len(times)
        walls = []
        for _ in range(self.args.status_runs):
            started = time.perf_counter()
            result = self.kiln.cli("status", "--json", timeout=120)
            walls.append(time.perf_counter() - started)
            if result.returncode != 0:
                raise RuntimeError(f"kiln status --json: {result.stderr}")
        out["status_json_wall_s_median"] = round3(statistics.median(walls))
        out["status_json_wall_s_max"] = round3(max(walls))

    def rolling_with_others(self, out: Json, deadline: float) -> None:
        self.rolling(out, deadline)
        self.rolling_with = out["deploy_to_all_new_s"]
        if self.rolling_alone:
            out["vs_alone"] = round(
                out["deploy_to_all_new_s_median"] / statistics.median(self.rolling_alone), 2
            )

    def rolling_alone_again(self, out: Json, deadline: float) -> None:
        """The others destroyed, the same deploys alone again: on the same engine, that has now
        run their containers, and the same kiln. Then the others again for the later phases."""
        gone: Json = {}
        self.destroy(self.others, gone, deadline)
        out["others_destroyed_s"] = gone["no_container_left_s"]
        self.rolling(out, deadline)
        if self.rolling_with:
            with_others = statistics.median(self.rolling_with)
            out["with_others_vs_this"] = round(with_others / out["deploy_to_all_new_s_median"], 2)
            if self.rolling_alone:
                # Alone before and after (A-B-A): what the machine and the engine drift between
                # the first phase and this one weighs on both sides alike.
                both = statistics.median(self.rolling_alone + out["deploy_to_all_new_s"])
                out["with_others_vs_alone_before_and_after"] = round(with_others / both, 2)
        back: Json = {}
        self.deploy_all_api(back, deadline)
        out["others_back_s"] = back["all_serving_s"]

    def kill(self, out: Json, deadline: float) -> None:
        rows = {s["app"]: s for s in list_apps(self.kiln)}
        # apps that serve (one the load kept from settling has nothing old enough to kill)
        victims = [a for a in self.others if a in rows and self.settled(rows[a])]
        victims = victims[: self.args.kills]
        killed: dict[str, str] = {}  # app → instance id
        containers = []
        youngest = 0.0
        for app in victims:
            instance = min(rows[app]["instances"], key=lambda i: i["started_at"] or "")
            killed[app] = instance["id"]
            containers.append(instance["container_id"])
            if instance["started_at"]:
                youngest = max(youngest, datetime.fromisoformat(instance["started_at"]).timestamp())
        # A crash soon after a start is a crash loop to kiln, which then backs off before the
        # next start (rolling_alone_again has just started the others again): not what this
        # measures. Kill instances that ran long enough to be forgiven.
        time.sleep(max(0.0, youngest + FORGIVE_AFTER_SECONDS + 0.5 - time.time()))
        started = time.monotonic()
        with workers(len(containers) or 1) as pool:
            list(pool.map(lambda c: self.kiln.docker.api.kill(c, "SIGKILL"), containers))
        out["killed"] = len(containers)

        def replaced(status: Json) -> bool:
            gone = killed[status["app"]]
            return self.settled(status) and all(i["id"] != gone for i in status["instances"])

        done = wait_all(self.kiln, victims, replaced, deadline, "replacements", out)
        out["all_replaced_s"] = round3(done - started)

    def route_churn(self, out: Json, deadline: float) -> None:
        before = reloads(metrics(self.kiln))
        started = time.monotonic()
        lock = threading.Lock()

        def one(app: str) -> None:
            spec = spec_of(app, "kiln-hello:v1", self.args, self.network, alt=True)
            deploy_retrying(self.kiln, spec, out, lock)
            wait_all(self.kiln, [app], self.settled, deadline, f"{app}'s new routes")

        with workers(CHURN_PARALLEL) as pool:
            list(pool.map(one, self.apps))
        out["deploys"] = len(self.apps)
        out["all_new_s"] = round3(time.monotonic() - started)
        out["nginx_reloads"] = int(reloads(metrics(self.kiln)) - before)

    def destroy_all(self, out: Json, deadline: float) -> None:
        self.destroy(self.apps, out, deadline)

    def destroy(self, apps: list[str], out: Json, deadline: float) -> None:
        started = time.monotonic()
        calls: list[float] = []

        def one(app: str) -> None:
            began = time.monotonic()
            response = self.kiln.api("DELETE", f"/v1/apps/dev/{app}", timeout=300)
            if response.status_code != 404:  # an app the capped CLI phase never deployed
                response.raise_for_status()
            calls.append(time.monotonic() - began)

        with workers(PARALLEL) as pool:
            list(pool.map(one, apps))
        out["calls_done_s"] = round3(time.monotonic() - started)
        out["call_s_median"] = round3(statistics.median(calls))
        keep = len(self.apps) - len(apps)  # the solo app's, when only the others go
        while len(containers_of_installation(self.kiln)) > keep * self.args.instances:
            if time.monotonic() > deadline:
                raise PhaseTimeout("containers left after the destroy")
            # A deploy this bench gave up waiting for may still run in kiln after the destroy
            # (an overloaded kiln answers minutes late): that app came back; destroy it again.
            back = [s["app"] for s in list_apps(self.kiln) if s["instances"] and s["app"] in apps]
            if back:
                out["came_back"] = sorted(set(out.get("came_back", [])) | set(back))
                for app in back:
                    one(app)
            time.sleep(1.0)
        out["no_container_left_s"] = round3(time.monotonic() - started)

    def deploy_all_api(self, out: Json, deadline: float) -> None:
        before = lag_buckets(metrics(self.kiln))
        started = time.monotonic()
        with profiled(self.args, self.procs.server.pid, f"{self.network}-deploy-all-api", out):
            with workers(PARALLEL) as pool:
                lock = threading.Lock()
                list(
                    pool.map(
                        lambda app: deploy_retrying(
                            self.kiln,
                            spec_of(app, "kiln-hello:v1", self.args, self.network),
                            out,
                            lock,
                        ),
                        # the solo app too when rolling_alone did not deploy it
                        self.others if self.wanted("rolling_alone") else self.apps,
                    )
                )
            out["calls_done_s"] = round3(time.monotonic() - started)
            done = wait_all(self.kiln, self.apps, self.settled, deadline, "all serving", out)
        out["all_serving_s"] = round3(done - started)
        out.update(lag_between(before, lag_buckets(metrics(self.kiln))))

    def wanted(self, name: str) -> bool:
        return not self.args.phases or name in self.args.phases

    def phase(self, name: str, body: Callable[[Json, float], None]) -> None:
        if self.wanted(name):
            self.run_phase(name, body)

    def run(self) -> None:
        self.rss("start")
        self.phase("rolling_alone", self.solo_first)
        # the quick way first, so every later phase has all the apps even when the CLI is slow
        self.phase("deploy_all_api", self.deploy_all_api)
        self.rss("deployed")
        self.phase("idle", self.idle)
        self.phase("api", self.api)
        self.phase("rolling_with_others", self.rolling_with_others)
        self.phase("rolling_alone_again", self.rolling_alone_again)
        self.phase("kill", self.kill)
        self.rss("before_route_churn")
        self.phase("route_churn", self.route_churn)
        self.rss("after_route_churn")
        if self.wanted("route_churn"):
            time.sleep(30)
            self.rss("30s_later")
        self.phase("destroy_all", self.destroy_all)
        self.rss("destroyed")
        if not self.args.skip_cli_deploy:
            self.phase("deploy_all_cli", self.deploy_all_cli)
            self.phase("destroy_all_again", self.destroy_all)
            self.rss("destroyed_again")


def containers_of_installation(kiln: KilnHarness) -> list[str]:
    rows = kiln.docker.api.containers(
        all=True, filters={"label": f"io.kiln.installation={kiln.installation_id}"}
    )
    return [row["Id"] for row in rows]


def measure_network(network: str, args: argparse.Namespace, workdir: Path, out: Json) -> None:
    """Fills ``out`` phase by phase: what was measured stays there if a later step fails."""
    # A /24 bridge holds 253 containers; a rolling deploy needs room for old and new.
    need = args.apps * args.instances + 2 * CHURN_PARALLEL * args.instances + 16
    prefix = 24
    while network == "bridge" and 2 ** (32 - prefix) - 3 < need:
        prefix -= 1
    with PrivateDockerd(subnet_prefix=prefix, default_runtime=args.runtime) as engine:
        client = docker.DockerClient(base_url=engine.docker_host)
        for version in ("v1", "v2"):
            build_hello_image(
                client, version=version, variant="healthy", tag=f"kiln-hello:{version}"
            )
        client.close()
        home = workdir / network
        home.mkdir()
        # kiln's default resync period (the harness's 1 s is for quick tests): idle as a user sees it
        kiln = KilnHarness(
            home,
            engine.docker_host,
            env={"KILN_RESYNC_SECONDS": f"{DEFAULT_RESYNC_SECONDS:g}"},
        )
        if args.quiet_after is not None:
            (home / "settings.yaml").write_text(f"health:\n  quiet_after: {args.quiet_after:g}\n")
        try:
            kiln.start()
            Run(kiln, Processes(kiln, engine.pid), args, network, out).run()
        finally:
            if args.log_tail:
                out["server_log_tail"] = kiln.server_log()[-600:]
            kiln.teardown()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--apps", type=int, default=100)
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--networks", default="bridge,host")
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument(
        "--probe-interval",
        type=float,
        default=1.0,
        help="s between health checks of a running instance (the demo app's: 1; 0: no health "
        "checks, to see what the rest of kiln costs)",
    )
    parser.add_argument(
        "--quiet-after",
        type=float,
        default=None,
        help="kiln's health.quiet_after setting (s; default kiln's: 60; 0: every app's instances"
        " checked at the interval even without requests, as before kiln had quiet apps)",
    )
    parser.add_argument(
        "--runtime",
        default=None,
        help="the engine's OCI runtime for every container (e.g. crun, installed; default: the"
        " engine's own, runc). On a host with cgroup v1 hierarchies crun also needs the hugetlb"
        " one mounted (shared/ENVIRONMENT.md)",
    )
    parser.add_argument("--rolling-deploys", type=int, default=4, help="even: v2, v1, ...")
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--api-requests", type=int, default=200)
    parser.add_argument("--status-runs", type=int, default=5)
    parser.add_argument("--phase-timeout", type=float, default=0.0, help="s; 0: from the scale")
    parser.add_argument("--skip-cli-deploy", action="store_true", help="no deploy-all by the CLI")
    parser.add_argument(
        "--cli-seconds", type=float, default=0.0, help="stop kiln deploy commands after (s)"
    )
    parser.add_argument(
        "--phases",
        type=lambda text: [p for p in text.split(",") if p],
        default=[],
        help="run only these phases (comma-separated; default all), e.g. "
        "rolling_alone,deploy_all_api,idle,api,rolling_with_others",
    )
    parser.add_argument("--py-spy", default="", help="py-spy binary: profile the server")
    parser.add_argument("--profile-dir", default="/tmp/kiln-scale-profiles")
    parser.add_argument("--log-tail", action="store_true", help="the server log's tail in the JSON")
    args = parser.parse_args()
    args.rolling_deploys += args.rolling_deploys % 2  # each round trip ends on v1 again
    args.kills = min(args.kills, args.apps - 1)
    if not args.phase_timeout:
        args.phase_timeout = max(300.0, args.apps * args.instances * 3.0)

    result: Json = {
        "benchmark": "scale",
        "apps": args.apps,
        "instances": args.instances,
        "idle_seconds": args.idle_seconds,
        "probe_interval": args.probe_interval,
        "quiet_after": args.quiet_after,
        "runtime": args.runtime or "runc",
        "load_before": round(psutil.getloadavg()[0], 1),
    }

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # run the finally blocks: containers, dockerd, NGINX

    signal.signal(signal.SIGTERM, on_term)
    workdir = Path(tempfile.mkdtemp(prefix="kiln-bench-scale-"))
    try:
        for network in [n for n in args.networks.split(",") if n]:
            out: Json = {}
            result[network] = out
            try:
                measure_network(network, args, workdir, out)
            except Exception as exc:
                out["error"] = f"{type(exc).__name__}: {exc}"
                traceback.print_exc(file=sys.stderr)
    except KeyboardInterrupt:
        result["interrupted"] = True
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        result["load_after"] = round(psutil.getloadavg()[0], 1)
        print(json.dumps(result))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
