"""kiln keeps itself running: `kiln up` puts the server under a supervisor that restarts it when
it is killed or hangs, and refuses clearly (starting nothing) when something else holds what
kiln needs. Real server, real supervisor, real NGINX, the session's private dockerd."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import hello_spec
from tests.e2e.harness import KilnHarness, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def supervised(dockerd, hello_images, tmp_path_factory) -> Iterator[KilnHarness]:  # type: ignore[no-untyped-def]
    harness = KilnHarness(tmp_path_factory.mktemp("kiln-home"), dockerd.docker_host)
    try:
        harness.up()
        yield harness
    finally:
        harness.teardown()


@pytest.fixture
def refused_home(dockerd, tmp_path_factory) -> Iterator[Callable[..., KilnHarness]]:  # type: ignore[no-untyped-def]
    """Another home on the same dockerd, for `kiln up`s that must start nothing. Its cleanup
    stops only its own processes (never the containers of the module's kiln)."""
    made: list[KilnHarness] = []

    def make(**env: str) -> KilnHarness:
        harness = KilnHarness(tmp_path_factory.mktemp("kiln-home"), dockerd.docker_host, env=env)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.stop_supervised()
        harness.docker.close()


def _quietly(check: Callable[[], Any]) -> Callable[[], Any]:
    """``check`` with "kiln is restarting" (no answer yet) counted as not yet."""

    def run() -> Any:
        try:
            return check()
        except httpx.HTTPError:
            return None

    return run


def assert_nothing_started(kiln: KilnHarness) -> None:
    assert kiln.supervisor_pid() is None
    assert kiln.server_pid() is None
    assert not (kiln.settings.nginx_dir / "nginx.pid").exists()
    assert not kiln.settings.token_path.exists()
    assert not kiln.settings.db_path.exists()


def test_second_up_says_already_running_and_changes_nothing(supervised: KilnHarness) -> None:
    before = (supervised.server_pid(), supervised.supervisor_pid())
    assert None not in before
    again = supervised.cli("up")
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stdout
    assert (supervised.server_pid(), supervised.supervisor_pid()) == before


def test_killed_server_comes_back_and_replaces_an_instance_killed_meanwhile(
    supervised: KilnHarness,
) -> None:
    app = "lazarus"
    assert (
        supervised.deploy(hello_spec(app, "kiln-hello:v1", instances=2), "--wait").returncode == 0
    )
    victim = supervised.wait_ready(app, 2, release=1)["instances"][0]
    server = supervised.server_pid()
    assert server is not None

    os.kill(server, signal.SIGKILL)
    supervised.docker.containers.get(victim["container_id"]).kill(signal="SIGKILL")

    def healed() -> bool:
        if supervised.server_pid() in (None, server):
            return False
        now = supervised.status(app)
        ready = {i["id"] for i in now["instances"] if i["ready"] and i["in_router"]}
        return len(ready) == 2 and victim["id"] not in ready

    wait_until(_quietly(healed), timeout=60, interval=0.1, what="kiln back and the app healed")
    assert "v1" in supervised.get(f"{app}.test").text
    assert f"the server (pid {server}) was killed by SIGKILL" in supervised.supervisor_log()


def test_hung_server_is_killed_and_restarted(supervised: KilnHarness) -> None:
    server = supervised.server_pid()
    assert server is not None
    pidfd = os.pidfd_open(server)
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGSTOP)  # its event loop stops dead
        wait_until(
            _quietly(
                lambda: supervised.server_pid() not in (None, server) and supervised.healthy()
            ),
            timeout=60,
            interval=0.2,
            what="a new server after the hung one",
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGCONT)  # only if the test failed early
        os.close(pidfd)
    log = supervised.supervisor_log()
    assert f"the server (pid {server}) was silent for" in log
    assert f"the server (pid {server}) hung and was killed" in log


def test_state_and_logs_are_private_to_the_owner(supervised: KilnHarness) -> None:
    settings = supervised.settings
    db = settings.db_path
    paths = [db, db.with_name(db.name + "-wal"), settings.token_path]
    paths += [settings.server_log_path, settings.supervisor_log_path]
    paths += sorted((settings.nginx_dir / "logs").glob("*.log"))
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
    sock = settings.api_socket_path
    assert stat.S_ISSOCK(sock.lstat().st_mode) and stat.S_IMODE(sock.lstat().st_mode) == 0o600
    for directory in (settings.home, settings.run_dir, settings.log_dir):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory


def test_squatter_on_nginx_port_makes_up_fail_clearly_and_start_nothing(
    refused_home: Callable[..., KilnHarness],
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        kiln = refused_home(KILN_HTTP_PORT=str(port))
        result = kiln.cli("up")
    assert result.returncode == 7, result.stdout + result.stderr
    assert "kiln did not start (nothing was started)" in result.stderr
    assert f"NGINX's port 127.0.0.1:{port} is in use by pid {os.getpid()}" in result.stderr
    assert "set KILN_HTTP_PORT to a free port" in result.stderr
    assert_nothing_started(kiln)


def test_api_socket_of_a_live_kiln_of_another_home_makes_up_fail_clearly(
    supervised: KilnHarness, refused_home: Callable[..., KilnHarness]
) -> None:
    socket_path = str(supervised.settings.api_socket_path)
    kiln = refused_home(KILN_API_SOCKET=socket_path)
    result = kiln.cli("up")
    assert result.returncode == 7, result.stdout + result.stderr
    assert f"the API socket {socket_path} is in use by another kiln server" in result.stderr
    assert_nothing_started(kiln)
    assert supervised.healthy()  # the other kiln's socket is untouched


def test_down_stops_supervisor_and_server_and_the_apps_keep_serving(
    supervised: KilnHarness,
) -> None:
    app = "steady"
    assert (
        supervised.deploy(hello_spec(app, "kiln-hello:v1", instances=1), "--wait").returncode == 0
    )
    supervised.wait_ready(app, 1, release=1)
    server, supervisor = supervised.server_pid(), supervised.supervisor_pid()

    down = supervised.cli("down")
    assert down.returncode == 0, down.stderr
    assert f"server pid {server}, supervisor pid {supervisor}" in down.stdout
    assert supervised.server_pid() is None and supervised.supervisor_pid() is None
    assert not supervised.healthy()
    assert all("v1" in supervised.get(f"{app}.test").text for _ in range(5))

    supervised.up()
    supervised.wait_ready(app, 1, release=1)


def test_server_tells_systemd_it_is_ready_and_alive(supervised: KilnHarness) -> None:
    # systemd is not PID 1 here: the test listens where systemd would ($NOTIFY_SOCKET) and
    # runs the server the way the unit does (no supervisor of kiln's own).
    assert supervised.cli("down").returncode == 0
    path = supervised.home / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(path))
        notify.settimeout(30)
        supervised.start(extra_env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "10000000"})
        messages: list[bytes] = []
        while len(messages) < 50 and (
            b"READY=1" not in messages or messages.count(b"WATCHDOG=1") < 2
        ):
            messages.append(notify.recv(64))
        supervised.stop()
        while len(messages) < 100 and b"STOPPING=1" not in messages:
            messages.append(notify.recv(64))
    assert b"READY=1" in messages
    assert messages.count(b"WATCHDOG=1") >= 2
    assert b"STOPPING=1" in messages
    supervised.up()
