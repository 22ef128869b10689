"""The server process's own pieces: the token file, the private API socket, and clear refusals
(before anything starts) when something else holds what kiln needs."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiln.api import load_or_create_token
from kiln.api.server import Clash, claim, run
from kiln.config import Settings
from kiln.supervisor.exits import ServerExit
from kiln.supervisor.pidfile import holder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", http_port=free_port(), api_port=free_port())


@pytest.fixture
def squatter() -> Iterator[int]:
    """A program (this test) listening on a loopback TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def assert_nothing_started(settings: Settings) -> None:
    assert holder(settings.server_pid_path) is None
    assert not settings.server_pid_path.exists()
    assert not settings.token_path.exists()
    assert not settings.db_path.exists()


def test_token_is_created_private_and_then_reused(tmp_path: Path) -> None:
    path = tmp_path / "home" / "token"
    token = load_or_create_token(path)
    assert len(token) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_or_create_token(path) == token
    assert [p.name for p in path.parent.iterdir()] == ["token"]  # no temp file left


def test_api_socket_is_private_and_its_server_holds_the_home(settings: Settings) -> None:
    held = claim(settings)
    try:
        path = settings.api_socket_path
        assert path == settings.run_dir / "api.sock"
        assert stat.S_ISSOCK(path.lstat().st_mode)
        assert stat.S_IMODE(path.lstat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert holder(settings.server_pid_path) == os.getpid()
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(path))  # listening from the start
        assert held.tcp_socket is None  # TCP only when asked for
    finally:
        held.release()
    assert not settings.api_socket_path.exists()
    assert holder(settings.server_pid_path) is None


def test_socket_file_left_by_a_dead_server_is_replaced(settings: Settings) -> None:
    settings.run_dir.mkdir(parents=True)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(settings.api_socket_path))
    stale.close()  # as after kill -9: the file stays, nobody listens
    held = claim(settings)
    try:
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(settings.api_socket_path))
    finally:
        held.release()


async def test_socket_of_a_live_server_of_another_home_is_a_clash(
    settings: Settings, tmp_path: Path
) -> None:
    other_home = Settings(home=tmp_path / "other", api_socket=settings.api_socket_path)
    other = claim(other_home)
    try:
        assert await run(settings) == ServerExit.CONFLICT
        assert_nothing_started(settings)
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(settings.api_socket_path))  # the other server's, untouched
    finally:
        other.release()


async def test_second_server_of_the_same_home_is_refused(settings: Settings) -> None:
    first = claim(settings)
    try:
        with pytest.raises(Clash, match=rf"already running .*\(server pid {os.getpid()}\)"):
            claim(settings)
        assert await run(settings) == ServerExit.CONFLICT
        assert holder(settings.server_pid_path) == os.getpid()  # the first one's, kept
    finally:
        first.release()


async def test_taken_tcp_port_is_a_clash_when_tcp_is_asked_for(
    tmp_path: Path, squatter: int
) -> None:
    settings = Settings(
        home=tmp_path / "home", api_tcp=True, api_port=squatter, http_port=free_port()
    )
    with pytest.raises(Clash, match=f"TCP port 127.0.0.1:{squatter} is in use"):
        claim(settings)
    assert await run(settings) == ServerExit.CONFLICT
    assert_nothing_started(settings)
    assert not settings.api_socket_path.exists()


def test_nginx_port_held_by_another_program_is_a_clash_naming_it(
    tmp_path: Path, squatter: int
) -> None:
    settings = Settings(home=tmp_path / "home", http_port=squatter)
    with pytest.raises(Clash) as caught:
        claim(settings)
    assert caught.value.problems == [
        f"NGINX's port 127.0.0.1:{squatter} is in use by pid {os.getpid()} "
        f"({Path('/proc/self/comm').read_text().strip()}); stop it, or set KILN_HTTP_PORT "
        f"to a free port"
    ]
    assert_nothing_started(settings)
    assert not settings.api_socket_path.exists()


def test_every_clash_is_reported_at_once(tmp_path: Path, squatter: int) -> None:
    settings = Settings(home=tmp_path / "home", api_tcp=True, api_port=squatter, http_port=squatter)
    with pytest.raises(Clash) as caught:
        claim(settings)
    assert len(caught.value.problems) == 2
    assert "TCP port" in caught.value.problems[0]
    assert "NGINX's port" in caught.value.problems[1]


def test_a_file_where_the_socket_goes_is_a_clash(settings: Settings) -> None:
    settings.run_dir.mkdir(parents=True)
    settings.api_socket_path.write_text("not mine to delete")
    with pytest.raises(Clash, match="exists and is not a socket"):
        claim(settings)
    assert settings.api_socket_path.read_text() == "not mine to delete"


async def test_socket_path_too_long_for_unix_is_a_bad_setting(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path / "home", api_socket=tmp_path / ("x" * 120), http_port=free_port()
    )
    assert await run(settings) == ServerExit.BAD_CONFIG
    assert_nothing_started(settings)
