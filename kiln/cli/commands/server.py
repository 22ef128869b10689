"""``kiln up`` and ``kiln down``: start and stop the kiln server (never NGINX or the apps).

kiln up    ─▶ already running? (its pid file is locked while it lives) → exit 0
           ─▶ python -m kiln.api.server, detached
           ─▶ wait for the server's heartbeat to say "serving", or for it to exit (7: a clash)
kiln down  ─▶ SIGTERM the server ─▶ wait until its pid file is free. By pid, never by name.
"""

from __future__ import annotations

import os
import re
import signal
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
from kiln.supervisor.control import Processes, processes, signal_holder, wait_released
from kiln.supervisor.exits import ServerExit

SERVER_MODULE = "kiln.api.server"
START_SECONDS = 60.0
STOP_SECONDS = 60.0
LOG_LINES_ON_FAILURE = 20
_LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} [A-Z]+ +[\w.\[\]]+: ")


def up(
    foreground: Annotated[
        bool,
        typer.Option("--foreground", help="Run the server in this terminal (Ctrl-C stops it)."),
    ] = False,
) -> None:
    """Start the kiln server in the background (it adopts running apps and keeps them healthy).

    Its API listens on the unix socket KILN_API_SOCKET (default KILN_HOME/run/api.sock; TCP
    only with KILN_API_TCP=1). Log: KILN_HOME/logs/server.log. Exits 7 (nothing started) when
    NGINX's port or the API's socket or port is taken by someone else.

    Example:  kiln up
    """
    settings = context.settings()
    out = context.out()
    before = processes(settings)
    if before.server is not None:
        out.print(f"kiln is already running ({_pids(before)}; API on {_api(settings)})")
        return
    if context.client(timeout=2).is_running():
        # A server the pid file does not know (started some other way) answers already.
        out.print(f"kiln is already running (API on {_api(settings)})")
        return
    command = [sys.executable, "-m", SERVER_MODULE]
    if foreground:
        # Replace this process: signals (Ctrl-C, SIGTERM) then reach the server directly.
        os.execv(sys.executable, command)
    log_path = settings.server_log_path
    settings.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    log_offset = _size(log_path)
    with open(log_path, "ab") as log, open(os.devnull, "rb") as devnull:
        os.fchmod(log.fileno(), 0o600)
        process = subprocess.Popen(
            command, stdin=devnull, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    now = before
    deadline = time.monotonic() + START_SECONDS
    with context.err().status("starting kiln …"):
        while process.poll() is None and time.monotonic() < deadline:
            now = processes(settings)
            if now.serving and now.server == process.pid:
                break
            time.sleep(0.1)
    code = process.poll()
    if code is None and now.serving:
        out.print(
            f"kiln is running ({_pids(now)}; API on {_api(settings)}; logs in {settings.log_dir})"
        )
        return
    _report_failed_start(settings, code, process.pid, log_offset)


def _report_failed_start(settings: Settings, code: int | None, pid: int, offset: int) -> None:
    err = context.err()
    if code is None:
        err.print(
            f"kiln did not start within {START_SECONDS:.0f}s (still starting: pid {pid}). "
            f"Last lines of {settings.server_log_path}:"
        )
        err.print(_tail(settings.server_log_path), markup=False, highlight=False)
        raise typer.Exit(ExitCode.UNREACHABLE)
    if code in (ServerExit.CONFLICT, ServerExit.BAD_CONFIG):
        err.print("kiln did not start (nothing was started):", markup=False)
        err.print(_since(settings.server_log_path, offset), markup=False, highlight=False)
        raise typer.Exit(ExitCode.CONFLICT if code == ServerExit.CONFLICT else ExitCode.BAD_INPUT)
    err.print(
        f"kiln did not start: the server exited with code {code}. Last lines of "
        f"{settings.server_log_path}:",
        markup=False,
    )
    err.print(_tail(settings.server_log_path), markup=False, highlight=False)
    raise typer.Exit(ExitCode.UNREACHABLE)


def down() -> None:
    """Stop the kiln server. NGINX and your apps keep serving; `kiln up` takes over again.

    Example:  kiln down
    """
    settings = context.settings()
    before = processes(settings)
    if before.server is None:
        _down_through_api(settings)
        return
    if signal_holder(settings.server_pid_path, signal.SIGTERM) is not None:
        _wait_stopped(settings.server_pid_path, "the server", before.server)
    context.out().print(f"kiln stopped ({_pids(before)}). {_KEEP_SERVING}")


_KEEP_SERVING = "NGINX and the apps keep serving; `kiln up` resumes control."


def _wait_stopped(path: Path, what: str, pid: int | None) -> None:
    if not wait_released(path, STOP_SECONDS):
        context.err().print(
            f"{what} (pid {pid}) was asked to stop but is still running after {STOP_SECONDS:.0f}s"
        )
        raise typer.Exit(ExitCode.UNEXPECTED)


def _down_through_api(settings: Settings) -> None:
    """No pid file is locked: a server started some other way may still answer the API."""
    kiln = context.client(timeout=5)
    out = context.out()
    if not kiln.is_running():
        out.print(f"kiln is not running (API on {_api(settings)}); nothing to stop")
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
    out.print(f"kiln stopped. {_KEEP_SERVING}")


def _pids(now: Processes) -> str:
    parts = [f"server pid {now.server}"] if now.server else []
    if now.supervisor:
        parts.append(f"supervisor pid {now.supervisor}")
    return ", ".join(parts) or "no process"


def _api(settings: Settings) -> str:
    where = str(settings.api_socket_path)
    return f"{where} and {settings.api_url}" if settings.api_tcp else where


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


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _since(path: Path, offset: int) -> str:
    """What the server wrote after ``offset``, without the log prefixes: why it refused."""
    try:
        with open(path, "rb") as log:
            log.seek(offset)
            text = log.read(16_384).decode(errors="replace")
    except OSError:
        return "(no server log)"
    lines = [_LOG_PREFIX.sub("", line) for line in text.strip().splitlines()]
    return "\n".join(lines[-LOG_LINES_ON_FAILURE:]) or "(the server wrote nothing)"


def _tail(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-LOG_LINES_ON_FAILURE:]) or "(empty log)"
