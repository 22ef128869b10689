"""The supervising process: ``python -m kiln.supervisor`` (what ``kiln up`` starts, detached).

    lock run/supervisor.pid ─▶ adopt the running server (run/kiln.pid is locked) or start one
      ▲                                          │
      │                                          ▼
      │                watch: its exit (a pidfd: noticed at once) and, every 2 s, its heartbeat
      │                                          │
      └── wait the backoff (0.5 s, 1 s, 2 s … 30 s; back to 0.5 s after a healthy minute)
              ◀── it exited, or was silent KILN_WATCHDOG_SECONDS and got SIGKILL
    SIGTERM / SIGINT / SIGHUP ─▶ SIGTERM the server, wait for it (SIGKILL after 40 s) ─▶ exit 0

Every decision is logged with its reason to KILN_HOME/logs/supervisor.log; the server's own
output goes to KILN_HOME/logs/server.log. The supervisor never imports the server (a contract in
pyproject.toml): it stays small, and nothing that breaks the server can break it.

Ends on its own only when the server stops on request (exit 0), or when the first start of the
server fails in a way a restart cannot fix (a clash, a bad setting: exit 7 / 2, as the server).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from kiln.config import Settings
from kiln.errors import KilnError
from kiln.supervisor.exits import PERMANENT, ServerExit, SupervisorExit
from kiln.supervisor.liveness import read_beat
from kiln.supervisor.pidfile import AlreadyHeld, PidFile, holder

log = logging.getLogger("kiln.supervisor")

SERVER_COMMAND = (sys.executable, "-m", "kiln.api.server")
CHECK_SECONDS = 2.0
STARTUP_GRACE_SECONDS = 30.0  # from start to the first beat: imports, the pid file
STOP_SECONDS = 40.0  # the server's graceful stop (streams 3 s, the engine) and then some
_NO_PIDFD_POLL = 0.1


class Backoff:
    """Delays before restarts: ``first``, doubling up to ``cap``; a server that was healthy
    for ``reset_after`` seconds starts the series again."""

    def __init__(self, *, first: float = 0.5, cap: float = 30.0, reset_after: float = 60.0) -> None:
        self.first = first
        self.cap = cap
        self.reset_after = reset_after
        self._next = first

    def delay(self, healthy_for: float) -> float:
        if healthy_for >= self.reset_after:
            self._next = self.first
        delay = self._next
        self._next = min(self.cap, self._next * 2)
        return delay


class ServerProcess:
    """A server under watch: our child, or one adopted from a supervisor that is gone."""

    def __init__(self, pid: int, popen: subprocess.Popen[bytes] | None = None) -> None:
        self.pid = pid
        self.popen = popen
        self.started = time.monotonic()
        try:
            # A pidfd names this very process (never a later one with the same pid) and
            # becomes readable the moment it exits, reaped or not.
            self.pidfd: int | None = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self.pidfd = None
        try:
            # Without a pidfd: psutil remembers the process's start time, so a later process
            # with the same pid is never taken for it (nor signalled).
            self.process: psutil.Process | None = psutil.Process(pid)
        except psutil.NoSuchProcess:
            self.process = None

    @property
    def adopted(self) -> bool:
        return self.popen is None

    def exited(self) -> bool:
        if self.popen is not None and self.popen.poll() is not None:
            return True
        if self.pidfd is not None:
            return bool(select.select([self.pidfd], [], [], 0)[0])
        return self.process is None or _exited(self.process)

    def send(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess):
            if self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, sig)
            elif self.process is not None:
                self.process.send_signal(sig)

    def reap(self) -> int | None:
        """The exit code (negative: killed by that signal); None for an adopted server."""
        if self.popen is None:
            return None
        return self.popen.wait()

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


@dataclass(frozen=True)
class Outcome:
    """How watching a server ended."""

    stop_requested: bool = False
    silent_for: float | None = None  # set when the server went silent (a hang)
    served: bool = False
    healthy_for: float = 0.0  # from its first "serving" beat to its last beat


def describe_exit(code: int | None) -> str:
    if code is None:
        return "exited"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        *,
        server_command: Sequence[str] = SERVER_COMMAND,
        env: Mapping[str, str] | None = None,
        check_seconds: float = CHECK_SECONDS,
        startup_grace: float = STARTUP_GRACE_SECONDS,
        stop_seconds: float = STOP_SECONDS,
        backoff: Backoff | None = None,
    ) -> None:
        self.settings = settings
        self.server_command = list(server_command)
        self.env = dict(os.environ if env is None else env)
        self.hang_seconds = settings.watchdog_seconds
        self.check_seconds = check_seconds
        self.startup_grace = startup_grace
        self.stop_seconds = stop_seconds
        self.backoff = backoff or Backoff()
        self.pid_file = PidFile(settings.supervisor_pid_path)
        self._stopping = False
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        os.set_blocking(self._wake_read, False)

    # --- control ------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop the server and end; safe from a signal handler and from another thread."""
        self._stopping = True
        with contextlib.suppress(OSError):
            os.write(self._wake_write, b"x")

    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, lambda *_: self.request_stop())

    def run(self) -> int:
        self.settings.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.settings.run_dir, 0o700)
        self.settings.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            self.pid_file.acquire()
        except AlreadyHeld as exc:
            log.info("another supervisor (pid %s) already watches this home", exc.pid)
            return SupervisorExit.ALREADY_SUPERVISED
        log.info("supervisor started (pid %d) for KILN_HOME=%s", os.getpid(), self.settings.home)
        try:
            return self._supervise()
        finally:
            self.pid_file.release()
            for fd in (self._wake_read, self._wake_write):
                with contextlib.suppress(OSError):
                    os.close(fd)
            log.info("supervisor stopped")

    # --- the loop -----------------------------------------------------------------------

    def _supervise(self) -> int:
        ever_served = False
        while not self._stopping:
            server = self._adopt() or self._spawn()
            try:
                outcome = self._watch(server)
                if outcome.stop_requested:
                    self._stop(server)
                    return SupervisorExit.OK
                ever_served = ever_served or outcome.served
                ran = time.monotonic() - server.started
                if outcome.silent_for is not None:
                    log.warning(
                        "the server (pid %d) was silent for %.1fs: its event loop hangs; "
                        "killing it (SIGKILL)",
                        server.pid,
                        outcome.silent_for,
                    )
                    server.send(signal.SIGKILL)
                    self._wait_exit(server, 10.0)
                    why = f"hung and was killed after {ran:.1f}s"
                    code = server.reap()
                else:
                    code = server.reap()
                    why = f"{describe_exit(code)} after {ran:.1f}s"
                    if code is not None and code > 0:
                        why += self._last_server_line()
            finally:
                server.close()
            if outcome.silent_for is None and code == ServerExit.OK:
                log.info("the server (pid %d) stopped on request; supervision ends", server.pid)
                return SupervisorExit.OK
            if not ever_served and code in PERMANENT:
                log.error(
                    "the server (pid %d) cannot start (%s); not retrying:\n%s",
                    server.pid,
                    why,
                    self._new_server_output(),
                )
                return PERMANENT[ServerExit(code)]
            delay = self.backoff.delay(outcome.healthy_for)
            log.warning("the server (pid %d) %s; restarting it in %.1fs", server.pid, why, delay)
            self._sleep(delay)
        return SupervisorExit.OK

    def _adopt(self) -> ServerProcess | None:
        pid = holder(self.settings.server_pid_path)
        if not pid:
            return None
        server = ServerProcess(pid)
        if holder(self.settings.server_pid_path) != pid or server.exited():
            server.close()  # it ended between our two looks
            return None
        log.info("adopted the running server (pid %d)", pid)
        return server

    def _spawn(self) -> ServerProcess:
        path = self.settings.server_log_path
        self._log_offset = _size(path)
        with open(path, "ab") as output, open(os.devnull, "rb") as devnull:
            os.fchmod(output.fileno(), 0o600)
            popen = subprocess.Popen(
                self.server_command,
                stdin=devnull,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        log.info("started the server (pid %d)", popen.pid)
        return ServerProcess(popen.pid, popen)

    def _watch(self, server: ServerProcess) -> Outcome:
        """Until the server exits, goes silent, or we are asked to stop."""
        last_raw: bytes | None = None
        last_change = server.started
        beaten = False
        serving_since: float | None = None
        next_check = time.monotonic() + self.check_seconds

        def outcome(*, stop_requested: bool = False, silent_for: float | None = None) -> Outcome:
            healthy = max(0.0, last_change - serving_since) if serving_since is not None else 0.0
            return Outcome(
                stop_requested=stop_requested,
                silent_for=silent_for,
                served=serving_since is not None,
                healthy_for=healthy,
            )

        while True:
            self._wait_for_event(server, max(0.0, next_check - time.monotonic()))
            if self._stopping:
                return outcome(stop_requested=True)
            if server.exited():
                return outcome()
            now = time.monotonic()
            if now < next_check:
                continue
            next_check = now + self.check_seconds
            beat = read_beat(self.settings.heartbeat_path)
            if beat is not None and beat.pid == server.pid and beat.raw != last_raw:
                last_raw, last_change, beaten = beat.raw, now, True
                if beat.serving and serving_since is None:
                    serving_since = now
                    log.info("the server (pid %d) serves", server.pid)
            silent_for = now - last_change
            if silent_for >= (self.hang_seconds if beaten else self.startup_grace):
                return outcome(silent_for=silent_for)

    def _stop(self, server: ServerProcess) -> None:
        log.info("stopping the server (pid %d); NGINX and the apps keep serving", server.pid)
        server.send(signal.SIGTERM)
        if not self._wait_exit(server, self.stop_seconds):
            log.warning(
                "the server (pid %d) did not stop within %.0fs; SIGKILL",
                server.pid,
                self.stop_seconds,
            )
            server.send(signal.SIGKILL)
            self._wait_exit(server, 10.0)
        code = server.reap()
        log.info("the server (pid %d) %s", server.pid, describe_exit(code))

    # --- waiting ------------------------------------------------------------------------

    def _wait_for_event(self, server: ServerProcess, timeout: float) -> None:
        """Sleep until the server exits, a stop is requested, or ``timeout`` passes."""
        fds = [self._wake_read] + ([server.pidfd] if server.pidfd is not None else [])
        if server.pidfd is None:
            timeout = min(timeout, _NO_PIDFD_POLL)
        with contextlib.suppress(InterruptedError):
            select.select(fds, [], [], timeout)
        with contextlib.suppress(BlockingIOError, OSError):
            os.read(self._wake_read, 64)

    def _wait_exit(self, server: ServerProcess, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not server.exited():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            fds = [server.pidfd] if server.pidfd is not None else []
            select.select(fds, [], [], min(left, _NO_PIDFD_POLL) if not fds else left)
        return True

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            with contextlib.suppress(InterruptedError):
                select.select([self._wake_read], [], [], left)

    # --- what to say --------------------------------------------------------------------

    _log_offset = 0

    def _new_server_output(self) -> str:
        """What the server wrote since it was started last: why it refused to start."""
        try:
            with open(self.settings.server_log_path, "rb") as output:
                output.seek(self._log_offset)
                text = output.read(16_384).decode(errors="replace").strip()
        except OSError:
            return "(no server log)"
        return text or "(the server wrote nothing)"

    def _last_server_line(self) -> str:
        line = _last_line(self.settings.server_log_path)
        return f" (its log's last line: {line})" if line else ""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _last_line(path: Path) -> str:
    try:
        with open(path, "rb") as output:
            output.seek(max(0, _size(path) - 2048))
            lines = output.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1].strip()[:300] if lines else ""


def _exited(process: psutil.Process) -> bool:
    # Zombies count as exited: an exited server whose parent is gone may never be reaped here.
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def configure_logging(settings: Settings, *, to_stderr: bool) -> None:
    settings.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    handlers: list[logging.Handler] = [logging.FileHandler(settings.supervisor_log_path)]
    if to_stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s.%(msecs)03d %(levelname)-7s supervisor[%(process)d]: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        handlers=handlers,
    )
    with contextlib.suppress(OSError):
        os.chmod(settings.supervisor_log_path, 0o600)


def main() -> None:
    # Logs, pid files and the server it starts (which inherits this) are for the owner only.
    os.umask(0o077)
    try:
        settings = Settings.from_env()
    except KilnError as exc:
        print(f"kiln supervisor: {exc.message}", file=sys.stderr)
        sys.exit(SupervisorExit.BAD_CONFIG)
    configure_logging(settings, to_stderr=sys.stderr.isatty())
    supervisor = Supervisor(settings)
    supervisor.install_signal_handlers()
    try:
        code = supervisor.run()
    except Exception:
        log.exception("the supervisor failed")
        code = SupervisorExit.FAILED
    sys.exit(code)
