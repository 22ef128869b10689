"""``kiln up`` and ``kiln down``: start and stop the kiln server and its supervisor (never NGINX
or the apps).

    kiln up    ─▶ already running? (the pid files are locked while their process lives) → exit 0
               ─▶ systemd unit installed? → systemctl start
               ─▶ python -m kiln.supervisor, detached ─▶ it starts (or adopts) the server
               ─▶ wait for the server's heartbeat to say "serving", or the supervisor to give up
    kiln down  ─▶ SIGTERM the supervisor (it stops the server and ends) ─▶ SIGTERM a server still
                  there ─▶ wait until both pid files are free. By pid (a pidfd), never by name.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kiln.cli import context
from kiln.cli.exit_codes import ExitCode
from kiln.config import Settings
from kiln.supervisor import systemd
from kiln.supervisor.control import (
    SUPERVISOR_COMMAND,
    Processes,
    processes,
    signal_holder,
    spawn_supervisor,
    wait_released,
)
from kiln.supervisor.exits import SupervisorExit

if TYPE_CHECKING:
    from kiln.client import KilnClient

START_SECONDS = 60.0
STOP_SECONDS = 60.0
LOG_LINES_ON_FAILURE = 20
_LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} [A-Z]+ +[\w.\[\]]+: ")


def up(
    foreground: Annotated[
        bool,
        typer.Option(
            "--foreground",
            help="Supervise the server from this terminal (Ctrl-C stops both).",
        ),
    ] = False,
    install_service: Annotated[
        bool,
        typer.Option(
            "--install-service",
            help="Run kiln as a systemd service instead (needs systemd as PID 1).",
        ),
    ] = False,
) -> None:
    """Start the kiln server under a supervisor that restarts it when it exits or hangs.

    The server adopts running apps and keeps them healthy. Its API listens on the unix socket
    KILN_API_SOCKET (default KILN_HOME/run/api.sock; TCP only with KILN_API_TCP=1). Logs:
    KILN_HOME/logs/server.log and supervisor.log. Exits 7 (nothing started) when NGINX's port or
    the API's socket or port is taken by someone else.

    Example:  kiln up
    """
    settings = context.settings()
    out = context.out()
    if install_service:
        _install_service(settings)
        return
    if (place := systemd.installed(settings)) is not None:
        _start_service(settings, place)
        return
    before = processes(settings)
    if before.supervisor is not None:
        out.print(f"kiln is already running ({_pids(before)}; API on {_api(settings)})")
        return
    if foreground:
        # Replace this process: Ctrl-C and SIGTERM then reach the supervisor directly.
        os.execv(sys.executable, list(SUPERVISOR_COMMAND))
    log_offset = _size(settings.server_log_path)
    supervisor = spawn_supervisor(settings)
    now = before
    deadline = time.monotonic() + START_SECONDS
    with context.err().status("starting kiln …"):
        while supervisor.poll() is None and time.monotonic() < deadline:
            now = processes(settings)
            if now.serving and now.supervisor == supervisor.pid:
                break
            time.sleep(0.1)
    code = supervisor.poll()
    if code is None and now.serving:
        if before.server is not None:
            out.print(f"kiln is already running ({_pids(now)}); it was not supervised and now is")
        else:
            out.print(
                f"kiln is running ({_pids(now)}; API on {_api(settings)}; "
                f"logs in {settings.log_dir})"
            )
        return
    if code == SupervisorExit.ALREADY_SUPERVISED:
        out.print(f"kiln is already running ({_pids(processes(settings))})")
        return
    _report_failed_start(settings, code, supervisor.pid, log_offset)


def _report_failed_start(settings: Settings, code: int | None, pid: int, offset: int) -> None:
    err = context.err()
    if code is None:
        err.print(
            f"kiln did not start within {START_SECONDS:.0f}s (still trying: supervisor pid "
            f"{pid}; `kiln down` stops it). Last lines of {settings.server_log_path}:"
        )
        err.print(_tail(settings.server_log_path), markup=False, highlight=False)
        raise typer.Exit(ExitCode.UNREACHABLE)
    if code in (SupervisorExit.CONFLICT, SupervisorExit.BAD_CONFIG):
        err.print("kiln did not start (nothing was started):", markup=False)
        err.print(_since(settings.server_log_path, offset), markup=False, highlight=False)
        raise typer.Exit(
            ExitCode.CONFLICT if code == SupervisorExit.CONFLICT else ExitCode.BAD_INPUT
        )
    err.print(
        f"kiln did not start: the supervisor exited with code {code}. Last lines of "
        f"{settings.supervisor_log_path}:",
        markup=False,
    )
    err.print(_tail(settings.supervisor_log_path), markup=False, highlight=False)
    raise typer.Exit(ExitCode.UNREACHABLE)


def down() -> None:
    """Stop the kiln server and its supervisor. NGINX and your apps keep serving; `kiln up`
    takes over again.

    Example:  kiln down
    """
    settings = context.settings()
    out = context.out()
    place = systemd.installed(settings)
    if place is not None and systemd.is_active(place):
        result = systemd.systemctl(place, "stop", place.path.name)
        if result.returncode != 0:
            context.err().print(f"systemctl stop failed: {result.stderr.strip()}", markup=False)
            raise typer.Exit(ExitCode.UNEXPECTED)
        out.print(f"kiln stopped (systemd unit {place.path.name}). {_KEEP_SERVING}")
        return
    before = processes(settings)
    if not before.running:
        _down_through_api(settings)
        return
    if before.supervisor is not None:
        # First, so that nothing restarts the server; it stops the server on its way out.
        signal_holder(settings.supervisor_pid_path, signal.SIGTERM)
        _wait_stopped(settings.supervisor_pid_path, "the supervisor", before.supervisor)
    if signal_holder(settings.server_pid_path, signal.SIGTERM) is not None:
        _wait_stopped(settings.server_pid_path, "the server", before.server)
    out.print(f"kiln stopped ({_pids(before)}). {_KEEP_SERVING}")


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


def _install_service(settings: Settings) -> None:
    err = context.err()
    if not systemd.systemd_is_init():
        err.print(
            f"--install-service needs systemd as PID 1, and this machine's PID 1 is "
            f"{_pid1_name()!r}. Plain `kiln up` runs kiln under its own supervisor.",
            markup=False,
        )
        raise typer.Exit(ExitCode.BAD_INPUT)
    now = processes(settings)
    if now.running and systemd.installed(settings) is None:
        err.print(
            f"kiln is running under its own supervisor ({_pids(now)}); run `kiln down` "
            f"first, then `kiln up --install-service`",
            markup=False,
        )
        raise typer.Exit(ExitCode.CONFLICT)
    try:
        place = systemd.install(settings)
    except (OSError, RuntimeError) as exc:
        err.print(f"could not install the systemd unit: {exc}", markup=False)
        raise typer.Exit(ExitCode.UNEXPECTED) from None
    _wait_service(settings, place)


def _start_service(settings: Settings, place: systemd.UnitPlace) -> None:
    if systemd.is_active(place):
        now = processes(settings)
        context.out().print(
            f"kiln is already running (systemd unit {place.path.name}, server pid {now.server})"
        )
        return
    result = systemd.systemctl(place, "start", place.path.name)
    if result.returncode != 0:
        context.err().print(f"systemctl start failed: {result.stderr.strip()}", markup=False)
        raise typer.Exit(ExitCode.UNREACHABLE)
    _wait_service(settings, place)


def _wait_service(settings: Settings, place: systemd.UnitPlace) -> None:
    deadline = time.monotonic() + START_SECONDS
    while not processes(settings).serving:
        if time.monotonic() > deadline:
            context.err().print(
                f"the systemd unit {place.path.name} did not serve within {START_SECONDS:.0f}s;"
                f" see `journalctl -u {place.path.name}` and {settings.server_log_path}"
            )
            raise typer.Exit(ExitCode.UNREACHABLE)
        time.sleep(0.1)
    context.out().print(
        f"kiln is running as systemd unit {place.path.name} (server pid "
        f"{processes(settings).server}; API on {_api(settings)})"
    )


def _pids(now: Processes) -> str:
    parts = [f"server pid {now.server}"] if now.server else []
    if now.supervisor:
        parts.append(f"supervisor pid {now.supervisor}")
    return ", ".join(parts) or "no process"


def _api(settings: Settings) -> str:
    where = str(settings.api_socket_path)
    return f"{where} and {settings.api_url}" if settings.api_tcp else where


def _pid1_name() -> str:
    try:
        return Path("/proc/1/comm").read_text().strip()
    except OSError:
        return "unknown"


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
