"""Every API route by every role, generated from the app's routes: a route without a rule fails
here (and ``create_app`` refuses it), and each role gets exactly what its rule says."""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI

from kiln.api import create_app
from kiln.api.access import (
    api_routes,
    check_every_route_declares_a_permission,
    requires,
    rule_of,
)
from kiln.model import AppKey, Event
from kiln.model.access import Permission, Principal, Role

from .conftest import AUTH, INSTALLATION_ID, TOKEN, asgi_client
from .fake_service import FakeService


class FiniteService(FakeService):
    """Streams end at once, so an in-process client can read an allowed stream's answer."""

    async def follow_events(
        self, *, key: AppKey | None, after_id: int, **_filters: Any
    ) -> AsyncIterator[Event]:
        for event in []:
            yield event


# (token name, role, environments): every role, unscoped and limited to staging.
PRINCIPALS = [
    Principal(name="an-admin", role=Role.ADMIN),
    Principal(name="a-deployer", role=Role.DEPLOYER),
    Principal(name="a-viewer", role=Role.VIEWER),
    Principal(name="staging-deployer", role=Role.DEPLOYER, environments=frozenset({"staging"})),
    Principal(name="staging-viewer", role=Role.VIEWER, environments=frozenset({"staging"})),
]
ENVIRONMENTS = ["staging", "production"]


def _routes(app: FastAPI) -> list[tuple[str, str, Any]]:
    return [
        (method, route.path, route)
        for route in api_routes(app)
        for method in sorted(route.methods or ())
    ]


def _concrete(path: str, env: str) -> str:
    values = {"env": env, "app": "web", "name": "nobody"}
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "x"), path)


async def _tokens(client: httpx.AsyncClient) -> dict[str, str]:
    tokens = {}
    for p in PRINCIPALS:
        body = {"name": p.name, "role": p.role.value, "environments": sorted(p.environments)}
        answer = await client.post("/v1/tokens", json=body)
        assert answer.status_code == 201, answer.text
        tokens[p.name] = answer.json()["token"]
    return tokens


def test_every_route_declares_exactly_one_rule() -> None:
    app = create_app(FakeService(), token=TOKEN)
    rules = {(m, path): rule_of(route) for m, path, route in _routes(app)}
    assert rules[("GET", "/healthz")] is None and rules[("POST", "/v1/identify")] is None
    public = {key for key, rule in rules.items() if rule is None}
    assert public == {("GET", "/healthz"), ("POST", "/v1/identify")}


def test_an_app_with_a_route_without_a_rule_is_refused() -> None:
    app = FastAPI()
    router = APIRouter()

    @router.get("/v1/forgotten")
    async def forgotten() -> dict[str, str]:
        return {}

    async def twice() -> dict[str, str]:
        return {}

    app.include_router(router)
    with pytest.raises(RuntimeError, match="GET /v1/forgotten declares no permission"):
        check_every_route_declares_a_permission(app)
    again = FastAPI()
    again.include_router(router)
    again.router.routes.clear()
    again.add_api_route(
        "/v1/twice",
        twice,
        dependencies=[requires(Permission.READ), requires(Permission.ADMIN)],
    )
    with pytest.raises(RuntimeError, match="GET /v1/twice declares 2 rules"):
        check_every_route_declares_a_permission(again)


async def test_every_route_with_every_role_gets_what_its_rule_says() -> None:
    app = create_app(FiniteService(), token=TOKEN, installation_id=INSTALLATION_ID)
    async with asgi_client(app, AUTH) as admin:
        tokens = await _tokens(admin)
    cases = [
        (method, path, route, env, principal)
        for (method, path, route), env, principal in itertools.product(
            _routes(app), ENVIRONMENTS, PRINCIPALS
        )
        if rule_of(route) is not None and method != "HEAD"
    ]
    wrong: list[str] = []
    async with asgi_client(app) as anonymous:
        for method, path, route, env, principal in cases:
            permission = rule_of(route)
            assert permission is not None
            url = _concrete(path, env)
            env_in_path = env if "{env}" in path else None
            allowed = principal.may(permission, env_in_path)
            headers = {"Authorization": f"Bearer {tokens[principal.name]}"}
            kwargs: dict[str, Any] = {"headers": headers}
            if method in ("POST", "PUT", "PATCH"):
                kwargs["json"] = {}
            answer = await anonymous.request(method, url, **kwargs)
            got_through = answer.status_code not in (401, 403)
            if got_through != allowed or (not allowed and answer.status_code != 403):
                wrong.append(
                    f"{method} {url} as {principal.name}: {answer.status_code} "
                    f"(rule {permission.value}, expected {'through' if allowed else '403'})"
                )
            if principal.name == PRINCIPALS[0].name:
                # Without a token, and with a wrong one: 401 on every route with a rule.
                for bad in ({}, {"Authorization": "Bearer not-a-token"}):
                    refused = await anonymous.request(method, url, headers=bad)
                    if refused.status_code != 401:
                        wrong.append(
                            f"{method} {url} with {bad or 'no token'}: {refused.status_code}"
                        )
    assert not wrong, "\n".join(wrong)
    assert len(cases) >= 5 * 2 * 20  # every principal, both environments, every route
