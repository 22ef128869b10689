"""Pid files that tell a live process from a dead one (kill -9 and zombies included), the
heartbeat, and sd_notify to a real datagram socket as systemd would listen on it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiln.supervisor.liveness import SERVING, STARTING, Heartbeat, SystemdNotifier, read_beat
from kiln.supervisor.pidfile import AlreadyHeld, PidFile, holder

HOLD = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from kiln.supervisor.pidfile import PidFile\n"
    "PidFile(Path(sys.argv[1])).acquire()\n"
    "print('held', flush=True)\n"
    "time.sleep(60)\n"
)


@pytest.fixture
def holding(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """Another process holding ``tmp_path/x.pid``."""
    path = tmp_path / "x.pid"
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "held\n"
        yield path, child
    finally:
        child.kill()
        child.wait(timeout=10)
        if child.stdout is not None:
            child.stdout.close()


def test_holder_names_the_live_owner_and_a_second_owner_is_refused(
    holding: tuple[Path, subprocess.Popen[str]],
) -> None:
    path, child = holding
    assert holder(path) == child.pid
    with pytest.raises(AlreadyHeld) as caught:
        PidFile(path).acquire()
    assert caught.value.pid == child.pid


def test_owner_killed_with_sigkill_holds_nothing_even_as_an_unreaped_zombie(
    holding: tuple[Path, subprocess.Popen[str]],
) -> None:
    path, child = holding
    os.kill(child.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while holder(path) is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert Path(f"/proc/{child.pid}").exists()  # not reaped yet: a zombie
    assert holder(path) is None
    mine = PidFile(path)
    mine.acquire()  # the stale file (with the dead pid inside) is taken over
    assert holder(path) == os.getpid()
    mine.release()
    assert not path.exists()
    assert holder(path) is None


def test_pid_file_is_private(tmp_path: Path) -> None:
    mine = PidFile(tmp_path / "x.pid")
    mine.acquire()
    try:
        assert (tmp_path / "x.pid").stat().st_mode & 0o777 == 0o600
        assert (tmp_path / "x.pid").read_text() == f"{os.getpid()}\n"
    finally:
        mine.release()


def test_heartbeat_says_who_beats_in_which_state_and_changes_every_beat(tmp_path: Path) -> None:
    path = tmp_path / "heartbeat"
    assert read_beat(path) is None
    heartbeat = Heartbeat(path)
    heartbeat.beat()
    first = read_beat(path)
    assert first is not None and (first.pid, first.state) == (os.getpid(), STARTING)
    heartbeat.beat(SERVING)
    heartbeat.beat()
    last = read_beat(path)
    assert last is not None and last.serving and last.raw != first.raw
    assert path.stat().st_mode & 0o777 == 0o600
    heartbeat.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify"))
        sock.settimeout(5)
        yield sock


def test_sd_notify_sends_ready_watchdog_and_stopping_to_systemd(
    notify_socket: socket.socket,
) -> None:
    env = {
        "NOTIFY_SOCKET": notify_socket.getsockname(),
        "WATCHDOG_USEC": "10000000",
        "WATCHDOG_PID": str(os.getpid()),
        "OTHER": "kept",
    }
    notifier = SystemdNotifier(env)
    assert env == {"OTHER": "kept"}  # NGINX, started later, must not inherit them
    notifier.ready()
    notifier.watchdog()
    notifier.stopping()
    assert [notify_socket.recv(64) for _ in range(3)] == [b"READY=1", b"WATCHDOG=1", b"STOPPING=1"]


def test_sd_notify_reaches_a_socket_in_the_abstract_namespace() -> None:
    name = f"kiln-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        SystemdNotifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(64) == b"READY=1"


def test_sd_notify_without_systemd_or_its_watchdog_sends_nothing(
    notify_socket: socket.socket,
) -> None:
    assert not SystemdNotifier({}).enabled
    assert not SystemdNotifier({}).notify("READY=1")
    notifier = SystemdNotifier(
        {"NOTIFY_SOCKET": notify_socket.getsockname(), "WATCHDOG_USEC": "10000000",
         "WATCHDOG_PID": "1"}
    )  # fmt: skip
    notifier.watchdog()  # the watchdog is another process's
    notifier.ready()
    assert notify_socket.recv(64) == b"READY=1"
