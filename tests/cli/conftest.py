"""Fixtures for the CLI tests: a real kiln API (over a FakeService) on a unix socket, as kiln
serves it by default (or on a loopback port, opted in), and a runner whose environment points
the CLI at it."""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from kiln.api import create_app
from kiln.cli.main import app as kiln_app

from ..api.fake_service import FakeService
from ..api.live_server import running_server

TOKEN = "test-token-for-the-cli"


@dataclass
class Kiln:
    """The CLI wired to a running test server; ``run("status", "--json")`` invokes ``kiln``."""

    service: FakeService
    env: dict[str, str]
    home: Path

    def run(self, *args: str, stdin: str | None = None) -> Result:
        return CliRunner().invoke(kiln_app, list(args), env=self.env, input=stdin)


INSTALLATION_ID = "0123456789abcdef0123456789abcdef"


def cli_env(
    home: Path, *, socket_path: Path | None = None, port: int | None = None
) -> dict[str, str]:
    """The CLI's environment: the unix socket at ``socket_path``, or TCP on ``port``."""
    env = {
        "KILN_HOME": str(home),
        "KILN_API_SOCKET": str(socket_path or ""),
        "KILN_API_TCP": "",
        "KILN_API_URL": "",
        "KILN_API_HOST": "127.0.0.1",
        "KILN_API_PORT": "7070",
        "KILN_TOKEN": TOKEN,
        "KILN_ENV": "",
        "KILN_DEBUG": "",
        "COLUMNS": "200",
    }
    if port is not None:
        env.update({"KILN_API_TCP": "1", "KILN_API_PORT": str(port)})
    return env


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: a unix socket path must fit in 107 bytes, and pytest's
    tmp_path with a long test name does not always."""
    with tempfile.TemporaryDirectory(prefix="kiln-") as name:
        yield Path(name)


@pytest.fixture
def kiln(tmp_path: Path, short_dir: Path) -> Iterator[Kiln]:
    service = FakeService()
    socket_path = short_dir / "run" / "api.sock"
    app = create_app(service, token=TOKEN, installation_id=INSTALLATION_ID)
    with running_server(app, unix_path=socket_path):
        home = tmp_path / "home"
        yield Kiln(service=service, env=cli_env(home, socket_path=socket_path), home=home)


@pytest.fixture
def kiln_on_tcp(tmp_path: Path) -> Iterator[Kiln]:
    """The same, over TCP: KILN_API_TCP=1 with KILN_API_PORT."""
    service = FakeService()
    app = create_app(service, token=TOKEN, installation_id=INSTALLATION_ID)
    with running_server(app) as url:
        port = int(url.rsplit(":", 1)[1])
        home = tmp_path / "home"
        yield Kiln(service=service, env=cli_env(home, port=port), home=home)


@pytest.fixture
def nothing_listening(tmp_path: Path) -> Iterator[dict[str, str]]:
    """An environment (TCP opted in) whose API port is bound but not listening: connections
    are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield cli_env(tmp_path / "home", port=sock.getsockname()[1])


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "kiln.yaml"
    path.write_text("app: web\nimage: example/web:1\nport: 8080\ninstances: 2\n")
    return path
