"""Who holds a TCP port or a unix socket: the facts behind a clear "cannot start" message."""

from __future__ import annotations

import errno
import os
import socket
import stat
from pathlib import Path

import psutil


def tcp_port_is_free(host: str, port: int) -> bool:
    """True when ``host:port`` could be bound for listening right now."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind, proto) as probe:
        # As NGINX and uvicorn do: connections in TIME_WAIT do not make a port busy.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def tcp_listeners(port: int) -> set[int]:
    """Pids of the processes with a socket listening on TCP ``port`` (best effort: only the
    processes whose file descriptors we may read)."""
    try:
        sockets = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:  # not on Linux, where it skips what it may not read
        return set()
    return {
        found.pid
        for found in sockets
        if found.status == psutil.CONN_LISTEN
        and found.laddr
        and found.laddr.port == port
        and found.pid is not None
    }


def describe_pids(pids: set[int]) -> str:
    """``pid 12 (nginx), pid 13 (python3)``; empty when ``pids`` is."""
    return ", ".join(f"pid {pid} ({_comm(pid)})" for pid in sorted(pids))


def unix_socket_state(path: Path) -> str:
    """``missing``, ``live`` (something accepts connections), ``stale`` (a socket file nobody
    listens on) or ``not-a-socket``."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return "missing"
    if not stat.S_ISSOCK(mode):
        return "not-a-socket"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2.0)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return "stale"
        except TimeoutError:
            return "live"  # a listener whose backlog is full is still a listener
    return "live"


def _comm(pid: int) -> str:
    try:
        return str(psutil.Process(pid).name())
    except psutil.Error:
        return "?"
