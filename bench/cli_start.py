"""CLI start-up benchmark: how long a person or a script waits for the quick commands.

Prints one JSON line: for `kiln status --json`, `kiln --help` and `kiln version` against a real
running kiln (a private dockerd and kiln server, as bench.trust starts them; no apps), the
median and max wall time over --runs fresh processes, and the median CPU time (user + system,
and user alone) of those processes — on a shared machine the CPU time moves less with the load
than the wall time. Also the number of modules `import kiln.cli.main` loads. Target (issue
#10): status --json < 0.3 s wall.

--fake-server answers with the kiln API over tests' FakeService on a unix socket, served by
this process (no dockerd, no NGINX; the same requests and answers for an empty kiln): quick,
and what the CLI pays is the same. --compile byte-compiles the CLI tree's sources first, as an
install does (scripts/bootstrap.sh; `pip install` without -e); without it, where
PYTHONDONTWRITEBYTECODE is set and nothing compiled them, every run compiles kiln's modules.

    .venv/bin/python -m bench.cli_start                      # this tree
    .venv/bin/python -m bench.cli_start --fake-server --compile --runs 10
    .venv/bin/python -m bench.cli_start --cli-tree /path/to/other/checkout   # compare a tree:
                                                              # the CLI runs from it, the server from this one
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

COMMANDS = {
    "status_json": ["status", "--json"],
    "help": ["--help"],
    "version": ["version"],
}


def run_once(args: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """Wall, CPU and user CPU seconds of one ``kiln ARGS`` in a fresh interpreter (as the
    `kiln` script).

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
    user = after.ru_utime - before.ru_utime
    return wall, user + (after.ru_stime - before.ru_stime), user


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
        run_once(args, env)  # warm the page cache; not counted
        walls, cpus, users = zip(*(run_once(args, env) for _ in range(runs)), strict=True)
        report[name] = {
            "wall_s_median": round(statistics.median(walls), 3),
            "wall_s_max": round(max(walls), 3),
            "cpu_s_median": round(statistics.median(cpus), 3),
            "user_s_median": round(statistics.median(users), 3),
        }
    return report


@contextlib.contextmanager
def real_kiln() -> Iterator[dict[str, str]]:
    from bench.trust import bench_kiln

    with bench_kiln({}) as kiln:
        yield kiln.env


@contextlib.contextmanager
def fake_kiln() -> Iterator[dict[str, str]]:
    """The kiln API over FakeService on a unix socket (short path: at most 107 bytes)."""
    from kiln.api import create_app
    from tests.api.fake_service import FakeService
    from tests.api.live_server import running_server

    token = "cli-start-bench-token"
    with tempfile.TemporaryDirectory(prefix="kiln-cs-") as name:
        home = Path(name)
        socket_path = home / "run" / "api.sock"
        app = create_app(FakeService(), token=token, installation_id="0" * 32)
        with running_server(app, unix_path=socket_path):
            yield {
                **os.environ,
                "KILN_HOME": str(home),
                "KILN_API_SOCKET": str(socket_path),
                "KILN_TOKEN": token,
            }


def compile_tree(tree: Path) -> None:
    """What scripts/bootstrap.sh does: compileall writes the .pyc files (whatever
    PYTHONDONTWRITEBYTECODE says, which only stops writing them on import)."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-x", "/node_modules/", str(tree / "kiln")],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15, help="fresh processes per command")
    parser.add_argument(
        "--cli-tree",
        type=Path,
        help="run the CLI from this checkout (PYTHONPATH) to compare it with this tree",
    )
    parser.add_argument(
        "--fake-server",
        action="store_true",
        help="answer with FakeService over a unix socket instead of a real kiln and dockerd",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="byte-compile the CLI tree's sources first, as scripts/bootstrap.sh does",
    )
    options = parser.parse_args()
    cli_tree = (options.cli_tree or Path(__file__).resolve().parents[1]).resolve()
    if options.compile:
        compile_tree(cli_tree)
    with (fake_kiln if options.fake_server else real_kiln)() as server_env:
        env = {**server_env, "NO_COLOR": "1", "PYTHONPATH": str(cli_tree)}
        report = {
            "cli_tree": str(cli_tree),
            "server": "fake" if options.fake_server else "real",
            "compiled": options.compile,
            "runs": options.runs,
            "load_average_1m": round(os.getloadavg()[0], 1),
            **measure(env, options.runs),
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
