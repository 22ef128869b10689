"""What ``kiln up`` / ``kiln down`` (and the tests) need to see and steer the processes of a home.

Every process is found through its locked pid file and signalled through a pidfd opened while
the lock proves it alive: never by name, never a pid that could have been reused.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from kiln.config import Settings
from kiln.supervisor.liveness import read_beat
from kiln.supervisor.pidfile import holder

SUPERVISOR_COMMAND = (sys.executable, "-m", "kiln.supervisor")
_POLL = 0.05


@dataclass(frozen=True)
class Processes:
    """This home's kiln processes as the pid files say (None: not running)."""

    supervisor: int | None
    server: int | None
    serving: bool  # the server's last heartbeat says its API accepts requests

    @property
    def running(self) -> bool:
        return self.server is not None or self.supervisor is not None


def processes(settings: Settings) -> Processes:
    supervisor = holder(settings.supervisor_pid_path)
    server = holder(settings.server_pid_path)
    beat = read_beat(settings.heartbeat_path)
    serving = bool(server and beat is not None and beat.pid == server and beat.serving)
    return Processes(supervisor=supervisor, server=server, serving=serving)


def spawn_supervisor(settings: Settings) -> subprocess.Popen[bytes]:
    """Start the supervisor detached (its own session: it outlives the terminal and `kiln up`);
    its stdout/stderr (only a crash would write there) go to supervisor.log."""
    settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    settings.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with (
        open(settings.supervisor_log_path, "ab") as output,
        open(os.devnull, "rb") as devnull,
    ):
        os.fchmod(output.fileno(), 0o600)
        return subprocess.Popen(
            SUPERVISOR_COMMAND,
            stdin=devnull,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # A daemon does not pin the directory `kiln up` ran in (a mount, a deleted dir).
            cwd=settings.home,
            env={**os.environ, **_absolute_paths(settings)},
        )


def _absolute_paths(settings: Settings) -> dict[str, str]:
    paths = {"KILN_HOME": str(settings.home.absolute())}
    if settings.api_socket is not None:
        paths["KILN_API_SOCKET"] = str(settings.api_socket.absolute())
    return paths


def signal_holder(path: Path, sig: signal.Signals) -> int | None:
    """Send ``sig`` to the live holder of pid file ``path``; its pid, or None if none."""
    pid = holder(path)
    if not pid:
        return None
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    except (AttributeError, OSError):  # a kernel without pidfds (before Linux 5.3)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        return pid
    try:
        if holder(path) != pid:
            return None  # it ended between our looks; the pid may belong to someone else now
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, sig)
        return pid
    finally:
        os.close(pidfd)


def wait_released(path: Path, timeout: float) -> bool:
    """True once no live process holds ``path`` (exited, or a zombie: its lock is gone)."""
    deadline = time.monotonic() + timeout
    while holder(path) is not None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL)
    return True
