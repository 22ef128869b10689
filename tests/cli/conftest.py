"""Fixtures for the CLI tests: a real kiln API (over a FakeService) on a free loopback port,
and a runner whose environment points the CLI at it."""

from __future__ import annotations

import socket
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


def cli_env(home: Path, port: int) -> dict[str, str]:
    return {
        "KILN_HOME": str(home),
        "KILN_API_HOST": "127.0.0.1",
        "KILN_API_PORT": str(port),
        "KILN_TOKEN": TOKEN,
        "KILN_ENV": "",
        "KILN_DEBUG": "",
        "COLUMNS": "200",
    }


@pytest.fixture
def kiln(tmp_path: Path) -> Iterator[Kiln]:
    service = FakeService()
    with running_server(create_app(service, token=TOKEN)) as url:
        port = int(url.rsplit(":", 1)[1])
        yield Kiln(service=service, env=cli_env(tmp_path / "home", port), home=tmp_path / "home")


@pytest.fixture
def nothing_listening(tmp_path: Path) -> Iterator[dict[str, str]]:
    """An environment whose API port is bound but not listening: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield cli_env(tmp_path / "home", sock.getsockname()[1])


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "kiln.yaml"
    path.write_text("app: web\nimage: example/web:1\nport: 8080\ninstances: 2\n")
    return path
