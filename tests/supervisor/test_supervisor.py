"""The supervising process keeps a server running: restarts on exit and on a hang, with backoff,
gives up only when restarting cannot help, stops it on request. Here the server is a stand-in
(``fake_server.py``) that behaves like the real one towards the supervisor: pid file, heartbeat,
exit codes. The real server under the real supervisor is in tests/e2e/test_supervision.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kiln.config import Settings
from kiln.supervisor.exits import SupervisorExit
from kiln.supervisor.parent import Backoff, Supervisor
from kiln.supervisor.pidfile import PidFile, holder

REPO = Path(__file__).resolve().parents[2]
FAKE_SERVER = [sys.executable, "-m", "tests.supervisor.fake_server"]


def wait_until(condition: Callable[[], Any], *, timeout: float = 20, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what or condition}")


class Run:
    """A supervisor running in a thread of the test, over the fake server."""

    def __init__(self, home: Path, plan: str) -> None:
        # watchdog_seconds below what KILN_WATCHDOG_SECONDS accepts, to keep the test short.
        self.settings = Settings(home=home, watchdog_seconds=1.0)
        self.env = {
            **os.environ,
            "KILN_HOME": str(home),
            "FAKE_PLAN": plan,
            "PYTHONPATH": str(REPO),
        }
        self.supervisor = Supervisor(
            self.settings,
            server_command=FAKE_SERVER,
            env=self.env,
            check_seconds=0.1,
            startup_grace=10.0,
            backoff=Backoff(first=0.2, cap=0.4),
        )
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.code = self.supervisor.run()

    def __enter__(self) -> Run:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> int | None:
        self.supervisor.request_stop()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the supervisor did not stop"
        return self.code

    def starts(self) -> list[int]:
        path = self.settings.home / "starts"
        return [int(p) for p in path.read_text().split()] if path.exists() else []

    def serving_pid(self) -> int | None:
        return holder(self.settings.server_pid_path)


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "home"


def test_backoff_doubles_up_to_its_cap_and_starts_over_after_a_healthy_minute() -> None:
    backoff = Backoff()
    assert [backoff.delay(healthy_for=0) for _ in range(8)] == [
        0.5, 1, 2, 4, 8, 16, 30, 30
    ]  # fmt: skip
    assert backoff.delay(healthy_for=59) == 30
    assert backoff.delay(healthy_for=60) == 0.5
    assert backoff.delay(healthy_for=3) == 1


def test_server_that_exits_is_restarted_after_a_growing_delay_with_the_reason_logged(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="kiln.supervisor")
    with Run(home, "exit:3,exit:4,serve") as run:
        wait_until(lambda: len(run.starts()) == 3 and run.serving_pid() == run.starts()[2])
        first, second, _ = run.starts()
    assert f"the server (pid {first}) exited with code 3" in caplog.text
    assert "restarting it in 0.2s" in caplog.text
    assert f"the server (pid {second}) exited with code 4" in caplog.text
    assert "restarting it in 0.4s" in caplog.text
    assert run.code == SupervisorExit.OK
    assert holder(run.settings.server_pid_path) is None  # stopped with the supervisor


def test_server_killed_with_sigkill_is_restarted(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="kiln.supervisor")
    with Run(home, "serve") as run:
        victim = wait_until(run.serving_pid)
        os.kill(victim, signal.SIGKILL)
        replacement = wait_until(lambda: (pid := run.serving_pid()) != victim and pid)
        assert run.starts() == [victim, replacement]
    assert f"the server (pid {victim}) was killed by SIGKILL" in caplog.text


def test_server_whose_heartbeat_stops_is_killed_and_restarted(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="kiln.supervisor")
    with Run(home, "hang,serve") as run:
        wait_until(lambda: len(run.starts()) == 2, what="a second start")
        hung = run.starts()[0]
        wait_until(lambda: run.serving_pid() == run.starts()[1])
    assert f"the server (pid {hung}) was silent for" in caplog.text
    assert "its event loop hangs; killing it (SIGKILL)" in caplog.text
    assert not Path(f"/proc/{hung}").exists() or _zombie(hung)


def test_server_that_cannot_start_is_not_retried_and_the_supervisor_says_why(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Run(home, "refuse:7") as run:
        run.thread.join(timeout=20)
        assert run.code == SupervisorExit.CONFLICT
        assert len(run.starts()) == 1
    assert "cannot start (exited with code 7" in caplog.text
    assert holder(run.settings.supervisor_pid_path) is None


def test_server_stopped_on_request_ends_supervision(home: Path) -> None:
    with Run(home, "serve") as run:
        server = wait_until(run.serving_pid)
        os.kill(server, signal.SIGTERM)  # what POST /v1/shutdown ends in: exit 0
        run.thread.join(timeout=20)
        assert run.code == SupervisorExit.OK
        assert run.starts() == [server]


def test_stop_request_stops_the_server_and_frees_both_pid_files(home: Path) -> None:
    run = Run(home, "serve").__enter__()
    server = wait_until(run.serving_pid)
    assert holder(run.settings.supervisor_pid_path) == os.getpid()  # the test is the supervisor
    assert run.stop() == SupervisorExit.OK
    assert holder(run.settings.server_pid_path) is None
    assert holder(run.settings.supervisor_pid_path) is None
    assert not Path(f"/proc/{server}").exists() or _zombie(server)


def test_a_running_server_is_adopted_and_replaced_when_it_dies(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="kiln.supervisor")
    run = Run(home, "serve")
    orphan = subprocess.Popen(FAKE_SERVER, env=run.env, cwd=REPO)  # from a supervisor gone
    try:
        wait_until(lambda: holder(run.settings.server_pid_path) == orphan.pid)
        with run:
            wait_until(lambda: f"adopted the running server (pid {orphan.pid})" in caplog.text)
            assert run.starts() == [orphan.pid]  # not a second server beside it
            orphan.kill()
            replacement = wait_until(lambda: (p := run.serving_pid()) != orphan.pid and p)
            assert run.starts() == [orphan.pid, replacement]
    finally:
        orphan.kill()
        orphan.wait(timeout=10)


def test_second_supervisor_of_a_home_steps_aside(home: Path) -> None:
    run = Run(home, "serve")
    run.settings.run_dir.mkdir(parents=True)
    first = PidFile(run.settings.supervisor_pid_path)
    first.acquire()
    try:
        assert run.supervisor.run() == SupervisorExit.ALREADY_SUPERVISED
        assert run.starts() == []
    finally:
        first.release()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True
