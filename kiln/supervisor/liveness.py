"""How the server shows it is alive: a heartbeat file for kiln's supervisor, sd_notify for systemd.

The server beats from a task on its event loop, so a beat proves the loop still turns: a server
whose loop hangs (a blocking call, a deadlock, SIGSTOP) goes silent and is restarted.

    heartbeat file   "<pid> <state> <count>\\n", rewritten every second; state is ``starting``
                     until the API serves, then ``serving``. The supervisor watches the content
                     change (its own monotonic clock, so wall-clock jumps cannot fake a hang).
    sd_notify        READY=1 once serving, WATCHDOG=1 every beat, STOPPING=1 on the way out,
                     as datagrams to $NOTIFY_SOCKET (the protocol of sd_notify(3)).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

STARTING = "starting"
SERVING = "serving"


@dataclass(frozen=True)
class Beat:
    pid: int
    state: str
    count: int
    raw: bytes  # what the file held: any change means the writer is alive

    @property
    def serving(self) -> bool:
        return self.state == SERVING


class Heartbeat:
    """The writer: one per server process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.state = STARTING
        self._count = 0
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def beat(self, state: str | None = None) -> None:
        if state is not None:
            self.state = state
        self._count += 1
        data = f"{os.getpid()} {self.state} {self._count}\n".encode()
        # Readers take any change as a sign of life, so a torn read costs nothing.
        os.pwrite(self._fd, data, 0)
        os.ftruncate(self._fd, len(data))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


def read_beat(path: Path) -> Beat | None:
    """The last beat in ``path``, or None when there is none (or it is half written)."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    words = raw.decode(errors="replace").split()
    if len(words) != 3 or not words[0].isdigit() or not words[2].isdigit():
        return None
    return Beat(pid=int(words[0]), state=words[1], count=int(words[2]), raw=raw)


class SystemdNotifier:
    """sd_notify(3) for a service of ``Type=notify``; does nothing outside systemd.

    Takes $NOTIFY_SOCKET (and the watchdog variables) out of the environment, as
    ``sd_notify(unset_environment=1)`` does, so that processes the server starts (NGINX) do not
    inherit them.
    """

    def __init__(self, environ: MutableMapping[str, str] | None = None) -> None:
        env: MutableMapping[str, str] = os.environ if environ is None else environ
        self.address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_usec = _watchdog_usec(env)
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(name, None)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def ready(self) -> None:
        self.notify("READY=1")

    def watchdog(self) -> None:
        if self.watchdog_usec:
            self.notify("WATCHDOG=1")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def notify(self, message: str) -> bool:
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.address)
                sock.sendall(message.encode())
        except OSError:
            # systemd restarted or the socket is gone: the watchdog will tell if it matters.
            return False
        return True


def _socket_address(value: str) -> str | None:
    if not value or value[0] not in "/@":
        return None  # empty, or a vsock address (not for a local server)
    # '@' starts a name in the abstract namespace, whose first byte is NUL.
    return "\0" + value[1:] if value.startswith("@") else value


def _watchdog_usec(env: Mapping[str, str]) -> int:
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return 0  # the watchdog is meant for another process of the service
    usec = env.get("WATCHDOG_USEC", "")
    return int(usec) if usec.isdigit() else 0
