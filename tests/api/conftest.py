"""Fixtures for the API tests: the app over a FakeService, in-process and on a real port."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from kiln.api import create_app

from .fake_service import FakeService
from .live_server import running_server

TOKEN = "test-token-for-the-api"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
INSTALLATION_ID = "fedcba9876543210fedcba9876543210"

WEB_SPEC = """\
app: web
environment: dev
image: example/web:1
port: 8080
instances: 2
"""


@pytest.fixture
def service() -> FakeService:
    return FakeService()


@pytest.fixture
def app(service: FakeService) -> FastAPI:
    return create_app(service, token=TOKEN, installation_id=INSTALLATION_ID)


def asgi_client(app: FastAPI, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    """In-process client (no socket). It reads whole bodies, so no endless streams here."""
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://kiln.test", headers=headers)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(app, AUTH) as api:
        yield api


@pytest.fixture
def live_url(app: FastAPI) -> Iterator[str]:
    with running_server(app) as url:
        yield url


@pytest.fixture
def unix_kiln(app: FastAPI) -> Iterator[Path]:
    """The app served on a unix socket (in a short private directory); yields the socket."""
    with tempfile.TemporaryDirectory(prefix="kiln-") as name:
        path = Path(name) / "run" / "api.sock"
        with running_server(app, unix_path=path):
            yield path
