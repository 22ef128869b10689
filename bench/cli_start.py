"""CLI start-up benchmark: how long a person or a script waits for the quick commands.

Prints one JSON line: for `kiln status --json`, `kiln --help` and `kiln version` against a real
running kiln (a private dockerd and kiln server, as bench.trust starts them; no apps), the
median and max wall time over --runs fresh processes, and the median CPU time (user + system)
of those processes — on a shared machine the CPU time moves less with the load than the wall
time. Also the number of modules `import kiln.cli.main` loads. Target (issue #10): status
--json < 0.3 s wall.

    .venv/bin/python -m bench.cli_start                      # this tree
    .venv/bin/python -m bench.cli_start --cli-tree /path/to/other/checkout   # compare a tree:
                                                              # the CLI runs from it, the server from this one
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.trust import bench_kiln

COMMANDS = {
    "status_json": ["status", "--json"],
    "help": ["--help"],
    "version": ["version"],
}


def run_once(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one ``kiln ARGS`` in a fresh interpreter (as the `kiln` script).

    Run from KILN_HOME: ``python -m`` puts the working directory first on sys.path, and the
    tree to measure is the one PYTHONPATH names."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "kiln.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=env["KILN_HOME"],
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"kiln {' '.join(args)} failed ({result.returncode}): {result.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def modules_at_import(env: dict[str, str]) -> int:
    code = "import sys, kiln.cli.main; print(len(sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=env["KILN_HOME"],
    )
    return int(out.stdout)


def measure(env: dict[str, str], runs: int) -> dict[str, Any]:
    report: dict[str, Any] = {"modules_at_import": modules_at_import(env)}
    for name, args in COMMANDS.items():
        run_once(args, env)  # warm the page cache and .pyc files; not counted
        walls, cpus = zip(*(run_once(args, env) for _ in range(runs)), strict=True)
        report[name] = {
            "wall_s_median": round(statistics.median(walls), 3),
            "wall_s_max": round(max(walls), 3),
            "cpu_s_median": round(statistics.median(cpus), 3),
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15, help="fresh processes per command")
    parser.add_argument(
        "--cli-tree",
        type=Path,
        help="run the CLI from this checkout (PYTHONPATH) to compare it with this tree",
    )
    options = parser.parse_args()
    with bench_kiln({}) as kiln:
        cli_tree = (options.cli_tree or Path(__file__).resolve().parents[1]).resolve()
        env = {**kiln.env, "NO_COLOR": "1", "PYTHONPATH": str(cli_tree)}
        report = {
            "cli_tree": str(cli_tree),
            "runs": options.runs,
            "load_average_1m": round(os.getloadavg()[0], 1),
            **measure(env, options.runs),
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
