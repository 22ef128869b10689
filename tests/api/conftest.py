"""Fixtures for the API tests: the app over a FakeService, in-process and on a real port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from kiln.api import create_app

from .fake_service import FakeService
from .live_server import running_server

TOKEN = "test-token-for-the-api"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

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
    return create_app(service, token=TOKEN)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    # One portal (one event loop) for the whole test: the fake's streams poll in that loop.
    with TestClient(app, headers=AUTH) as test_client:
        yield test_client


@pytest.fixture
def live_url(app: FastAPI) -> Iterator[str]:
    with running_server(app) as url:
        yield url
