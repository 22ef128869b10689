"""``kiln up`` and ``kiln down``: start and stop the kiln server (never NGINX or the apps)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from kiln.cli import context
from kiln.cli.exit_codes import ExitCode
from kiln.client import KilnClient
from kiln.config import Settings

SERVER_MODULE = "kiln.api.server"
START_SECONDS = 20.0
STOP_SECONDS = 30.0
LOG_LINES_ON_FAILURE = 20


def up(
    foreground: Annotated[
        bool,
        typer.Option("--foreground", help="Run the server in this terminal (Ctrl-C stops it)."),
    ] = False,
) -> None:
    """Start the kiln server in the background (it adopts running apps and keeps them healthy).

    The server listens on KILN_API_HOST:KILN_API_PORT (default 127.0.0.1:7070) and logs to
    KILN_HOME/logs/server.log.

    Example:  kiln up
    """
    settings = context.settings()
    kiln = context.client(timeout=2)
    out, err = context.out(), context.err()
    if kiln.is_running():
        out.print(f"kiln is already running at {settings.api_url}")
        return
    command = [sys.executable, "-m", SERVER_MODULE]
    if foreground:
        # Replace this process: signals (Ctrl-C, SIGTERM) then reach the server directly.
        os.execv(sys.executable, command)
    log_path = settings.log_dir / "server.log"
    settings.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(log_path, "ab") as log, open(os.devnull, "rb") as devnull:
        process = subprocess.Popen(
            command, stdin=devnull, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + START_SECONDS
    with err.status(f"starting kiln at {settings.api_url} …"):
        while not kiln.is_running():
            if process.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    if kiln.is_running():
        out.print(f"kiln is running at {settings.api_url} (pid {process.pid}; log {log_path})")
        return
    why = (
        f"exited with code {process.returncode}"
        if process.poll() is not None
        else f"did not answer within {START_SECONDS:.0f}s (still starting, pid {process.pid})"
    )
    err.print(f"kiln did not start: the server {why}. Last lines of {log_path}:")
    err.print(_tail(log_path, LOG_LINES_ON_FAILURE), markup=False, highlight=False)
    raise typer.Exit(ExitCode.UNREACHABLE)


def down() -> None:
    """Stop the kiln server. NGINX and your apps keep serving; `kiln up` takes over again.

    Example:  kiln down
    """
    settings = context.settings()
    kiln = context.client(timeout=5)
    out = context.out()
    if not kiln.is_running():
        out.print(f"kiln is not running at {settings.api_url}; nothing to stop")
        return
    pid = _read_pid(settings)
    kiln.shutdown()
    deadline = time.monotonic() + STOP_SECONDS
    while _still_running(kiln, pid):
        if time.monotonic() > deadline:
            context.err().print(
                f"kiln was asked to stop but is still running after {STOP_SECONDS:.0f}s"
                + (f" (pid {pid})" if pid else "")
            )
            raise typer.Exit(ExitCode.UNEXPECTED)
        time.sleep(0.1)
    out.print("kiln stopped. NGINX and the apps keep serving; `kiln up` resumes control.")


def _read_pid(settings: Settings) -> int | None:
    try:
        return int(settings.server_pid_path.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


def _still_running(kiln: KilnClient, pid: int | None) -> bool:
    if pid is None:
        return kiln.is_running()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return kiln.is_running()
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    # An exited server whose parent never reaps it (the detached server's parent is init, and
    # some inits never reap) still answers kill(pid, 0): it is done all the same.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"
