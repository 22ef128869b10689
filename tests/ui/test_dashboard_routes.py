"""The dashboard over a FakeService, in process: sign-in, pages, live data, CSRF-safe actions."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI

from kiln.api import create_app
from kiln.api.access import api_routes, rule_of
from kiln.config import token_hash, token_id
from kiln.drivers.base import InstanceStats
from kiln.model import AppKey, ReleaseTraffic
from kiln.model.access import Permission, Role, TokenRecord
from kiln.store.access import FakeAccessStore
from tests.api.fake_service import FakeService

TOKEN = "test-token-for-the-dashboard"
WEB = AppKey("dev", "web")
CANARY_SPEC = """\
app: web
image: example/web:{version}
port: 8080
instances: 2
deploy:
  strategy: canary
  steps: [{{weight: 20}}, {{weight: 50}}]
"""


@pytest.fixture
def service() -> FakeService:
    return FakeService()


VIEWER_TOKEN = "a-viewer-token-for-the-dashboard"
STAGING_DEPLOYER_TOKEN = "a-deployer-token-for-staging-only"


def token(
    name: str, secret: str, role: Role, environments: frozenset[str] = frozenset()
) -> TokenRecord:
    return TokenRecord(
        name=name,
        role=role,
        environments=environments,
        token_id=token_id(secret),
        token_hash=token_hash(secret),
        created_at=datetime.now(UTC),
        created_by="test",
    )


@pytest.fixture
def access() -> FakeAccessStore:
    store = FakeAccessStore()
    store.add_token(token("ann-viewer", VIEWER_TOKEN, Role.VIEWER))
    store.add_token(
        token("bob-staging", STAGING_DEPLOYER_TOKEN, Role.DEPLOYER, frozenset({"staging"}))
    )
    return store


@pytest.fixture
def app(service: FakeService, access: FakeAccessStore) -> FastAPI:
    return create_app(service, token=TOKEN, access=access)


@pytest.fixture
async def browser(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client that keeps cookies, as a browser does (no Authorization header)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        yield client


async def sign_in(browser: httpx.AsyncClient, token: str = TOKEN) -> httpx.Response:
    return await browser.post("/ui/login", data={"token": token})


def csrf_of(html: str) -> str:
    match = re.search(r'name="kiln-csrf" content="([0-9a-f]+)"', html)
    assert match, "the page carries no CSRF token"
    return match.group(1)


async def test_a_page_without_a_session_sends_the_browser_to_sign_in(browser):
    answer = await browser.get("/ui/")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/login"
    assert (await browser.get("/ui/data/overview")).status_code == 401


async def test_a_wrong_token_is_refused_and_sets_no_cookie(browser):
    answer = await sign_in(browser, "not-the-token")
    assert answer.status_code == 401
    assert "not a token this kiln knows" in answer.text
    assert "set-cookie" not in answer.headers


async def test_signing_in_sets_an_httponly_strict_cookie_and_shows_the_apps(browser, service):
    await service.deploy(CANARY_SPEC.format(version=1), message="first", who="ann")
    answer = await sign_in(browser)
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert "Path=/ui" in cookie
    assert TOKEN not in (await browser.get("/ui/")).text  # the page never shows the token
    overview = await browser.get("/ui/")
    assert overview.status_code == 200
    assert 'href="/ui/apps/dev/web"' in overview.text


async def test_the_app_page_shows_releases_rollout_steps_and_events(browser, service):
    await service.deploy(CANARY_SPEC.format(version=1), message="first", who="ann")
    await service.deploy(CANARY_SPEC.format(version=2), message="try the new banner", who="bob")
    await sign_in(browser)
    page = await browser.get("/ui/apps/dev/web")
    assert page.status_code == 200
    assert "try the new banner" in page.text
    assert 'id="steps"' in page.text
    assert "20%" in page.text and "50%" in page.text
    data = (await browser.get("/ui/data/apps/dev/web")).json()
    assert set(data["html"]) == {"summary", "rollout", "releases", "instances", "events"}
    assert data["last_event_id"] >= 1


async def test_a_quiet_app_says_so_on_its_page(browser, service):
    await service.deploy(CANARY_SPEC.format(version=1), message="first", who="ann")
    await sign_in(browser)
    assert 'id="app-quiet"' not in (await browser.get("/ui/apps/dev/web")).text
    service.quiet.add(AppKey("dev", "web"))
    page = await browser.get("/ui/apps/dev/web")
    assert "quiet: no requests lately" in page.text


async def test_an_unknown_app_is_a_page_that_says_so(browser):
    await sign_in(browser)
    page = await browser.get("/ui/apps/dev/nope")
    assert page.status_code == 404
    assert "no app dev/nope" in page.text


async def test_series_give_each_release_its_own_rate(browser, service):
    await service.deploy(CANARY_SPEC.format(version=1), message="first", who="ann")
    await sign_in(browser)
    service.counters[WEB] = {1: ReleaseTraffic(requests=0, errors=0)}
    first = (await browser.get("/ui/data/apps/dev/web/series")).json()
    assert first["t"] == []
    # The history samples at most once a second; a test cannot wait, so it asks the same
    # history with a later clock through the pure part (tests/ui/test_series.py); here the
    # route answers its shape.
    assert first["releases"] == {"1": {"rate": [], "error_rate": [], "p95_ms": [], "requests": 0}}


async def test_an_action_with_the_session_csrf_token_goes_through_the_service(browser, service):
    await service.deploy(CANARY_SPEC.format(version=1), message="first", who="ann")
    await sign_in(browser)
    csrf = csrf_of((await browser.get("/ui/apps/dev/web")).text)
    answer = await browser.post(
        "/ui/actions/dev/web/scale", json={"instances": 4}, headers={"X-Kiln-CSRF": csrf}
    )
    assert answer.status_code == 200, answer.text
    assert (await service.status(WEB)).scale == 4
    assert service.calls[-1][1] == "local-token (dashboard)"


async def test_a_forged_action_without_the_csrf_token_is_refused_and_changes_nothing(
    browser, service
):
    await service.deploy(CANARY_SPEC.format(version=1), message="first", who="ann")
    await sign_in(browser)
    for headers in ({}, {"X-Kiln-CSRF": "0" * 64}):
        answer = await browser.post(
            "/ui/actions/dev/web/scale", json={"instances": 9}, headers=headers
        )
        assert answer.status_code == 403
        assert "CSRF" in answer.json()["error"]["message"]
    assert (await service.status(WEB)).scale == 2


async def test_the_ui_refuses_an_action_exactly_as_the_api_does(browser, service, app):
    rolling = "app: web\nimage: example/web:1\nport: 8080\n"
    await service.deploy(rolling, message="first", who="ann")
    await sign_in(browser)
    csrf = csrf_of((await browser.get("/ui/apps/dev/web")).text)
    ui = await browser.post("/ui/actions/dev/web/promote", headers={"X-Kiln-CSRF": csrf})
    api = await browser.post(
        "/v1/apps/dev/web/rollout/promote", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert ui.status_code == api.status_code == 409
    assert ui.json() == api.json()


async def test_an_old_sessions_csrf_token_does_not_fit_a_new_session(browser, service):
    await service.deploy(CANARY_SPEC.format(version=1), message="first", who="ann")
    await sign_in(browser)
    old = csrf_of((await browser.get("/ui/apps/dev/web")).text)
    await sign_in(browser)
    answer = await browser.post(
        "/ui/actions/dev/web/scale", json={"instances": 3}, headers={"X-Kiln-CSRF": old}
    )
    assert answer.status_code == 403


async def test_static_files_are_served_from_disk_and_nothing_else_is(browser):
    assert (await browser.get("/ui/static/dashboard.js")).status_code == 200
    assert (await browser.get("/ui/static/uPlot.iife.min.js")).status_code == 200
    assert (await browser.get("/ui/static/..%2f..%2fsession.py")).status_code == 404


async def test_instances_show_their_memory_from_the_metrics_sampler(browser, service):
    await service.deploy(CANARY_SPEC.format(version=1), message="first", who="ann")
    status = await service.status(WEB)
    assert status.instances
    service.stats = {
        i.container_id: InstanceStats(cpu_seconds=1.0, memory_bytes=24 << 20)
        for i in status.instances
    }
    await sign_in(browser)
    page = (await browser.get("/ui/apps/dev/web")).text
    assert "24.0 MiB" in page


async def test_signing_out_needs_the_csrf_token_and_then_forgets_the_session(browser):
    await sign_in(browser)
    csrf = csrf_of((await browser.get("/ui/")).text)
    refused = await browser.post("/ui/logout", data={"csrf": "nope"})
    assert refused.status_code == 403
    assert (await browser.get("/ui/")).status_code == 200
    answer = await browser.post("/ui/logout", data={"csrf": csrf})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/login"
    assert (await browser.get("/ui/")).status_code == 303


async def test_a_viewer_sees_the_pages_but_every_action_is_refused_as_the_api_refuses_it(
    browser, service
):
    await service.deploy(CANARY_SPEC.format(version=1), message="first", who="ann")
    await sign_in(browser, VIEWER_TOKEN)
    page = await browser.get("/ui/apps/dev/web")
    assert page.status_code == 200
    assert 'id="look-only"' in page.text and "disabled" in page.text
    csrf = csrf_of(page.text)
    ui = await browser.post(
        "/ui/actions/dev/web/scale", json={"instances": 5}, headers={"X-Kiln-CSRF": csrf}
    )
    api = await browser.post(
        "/v1/apps/dev/web/scale",
        json={"instances": 5},
        headers={"Authorization": f"Bearer {VIEWER_TOKEN}"},
    )
    assert ui.status_code == api.status_code == 403
    assert ui.json() == api.json()
    assert (await service.status(WEB)).scale == 2


async def test_a_token_limited_to_an_environment_sees_only_its_apps(browser, service):
    await service.deploy(CANARY_SPEC.format(version=1), message="first", who="ann")
    await sign_in(browser, STAGING_DEPLOYER_TOKEN)
    overview = await browser.get("/ui/")
    assert 'href="/ui/apps/dev/web"' not in overview.text
    refused = await browser.get("/ui/apps/dev/web")
    assert refused.status_code == 403
    assert "may not read in dev" in refused.text


async def test_a_revoked_token_ends_its_dashboard_sessions_at_once(browser, service, access):
    await sign_in(browser, VIEWER_TOKEN)
    assert (await browser.get("/ui/")).status_code == 200
    access.revoke_token("ann-viewer", by="test", now=datetime.now(UTC))
    assert (await browser.get("/ui/")).status_code == 303
    assert (await browser.get("/ui/data/overview")).status_code == 401


def test_every_dashboard_route_declares_its_permission(app):
    ui = next(route.app for route in app.routes if getattr(route, "path", "") == "/ui")
    rules = {
        (route.path, method): rule_of(route) for route in api_routes(ui) for method in route.methods
    }
    assert rules[("/actions/{env}/{app}/{action}", "POST")] is Permission.DEPLOY
    assert rules[("/apps/{env}/{app}", "GET")] is Permission.READ
    assert rules[("/login", "POST")] is None  # public: the sign-in form
