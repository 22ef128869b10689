"""The server process's own pieces: the token file and a clear failure on a busy port."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

from kiln.api import load_or_create_token
from kiln.api.server import EXIT_PORT_IN_USE, run
from kiln.config import Settings


def test_token_is_created_private_and_then_reused(tmp_path: Path) -> None:
    path = tmp_path / "home" / "token"
    token = load_or_create_token(path)
    assert len(token) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_or_create_token(path) == token
    assert [p.name for p in path.parent.iterdir()] == ["token"]  # no temp file left


async def test_server_exits_5_without_starting_anything_when_the_port_is_in_use(
    tmp_path: Path,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = Settings(home=tmp_path / "home", api_port=taken.getsockname()[1])
        assert await run(settings) == EXIT_PORT_IN_USE
    assert not settings.server_pid_path.exists()
    assert not settings.token_path.exists()
