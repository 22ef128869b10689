"""Every route but /healthz needs the bearer token; the OpenAPI document lists every route."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from .conftest import AUTH, asgi_client


async def test_healthz_answers_without_a_token(app: FastAPI) -> None:
    async with asgi_client(app) as anonymous:
        response = await anonymous.get("/healthz")
    assert response.status_code == 200
    assert response.json()["ok"] is True
    assert response.json()["version"]


async def test_request_without_token_is_refused_with_a_json_error(app: FastAPI) -> None:
    async with asgi_client(app) as anonymous:
        response = await anonymous.get("/v1/apps")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    error = response.json()["error"]
    assert error["type"] == "unauthorized"
    assert "token" in error["message"]


async def test_request_with_a_wrong_token_is_refused(app: FastAPI) -> None:
    async with asgi_client(app, {"Authorization": "Bearer not-the-token"}) as stranger:
        for method, path in [("GET", "/v1/apps"), ("POST", "/v1/shutdown"), ("GET", "/v1/schema")]:
            response = await stranger.request(method, path)
            assert response.status_code == 401, path
            assert response.json()["error"]["type"] == "unauthorized"


async def test_openapi_document_needs_the_token_too(app: FastAPI) -> None:
    async with asgi_client(app) as anonymous:
        assert (await anonymous.get("/openapi.json")).status_code == 401


async def test_openapi_document_lists_every_endpoint_with_a_summary(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()
    operations = {
        (method.upper(), path): op
        for path, item in document["paths"].items()
        for method, op in item.items()
    }
    expected = {
        ("GET", "/healthz"),
        ("POST", "/v1/identify"),
        ("GET", "/v1/apps"),
        ("GET", "/v1/apps/{env}/{app}"),
        ("POST", "/v1/deploy"),
        ("POST", "/v1/apps/{env}/{app}/rollback"),
        ("POST", "/v1/apps/{env}/{app}/scale"),
        ("POST", "/v1/apps/{env}/{app}/stop"),
        ("DELETE", "/v1/apps/{env}/{app}"),
        ("GET", "/v1/apps/{env}/{app}/releases"),
        ("GET", "/v1/apps/{env}/{app}/rollout"),
        ("POST", "/v1/apps/{env}/{app}/rollout/promote"),
        ("POST", "/v1/apps/{env}/{app}/rollout/pause"),
        ("POST", "/v1/apps/{env}/{app}/rollout/resume"),
        ("POST", "/v1/apps/{env}/{app}/rollout/abort"),
        ("POST", "/v1/apps/{env}/{app}/rollout/retry"),
        ("POST", "/v1/promotions"),
        ("POST", "/v1/approvals"),
        ("GET", "/v1/apps/{env}/{app}/diff"),
        ("GET", "/v1/diff"),
        ("GET", "/v1/events"),
        ("GET", "/v1/events/stream"),
        ("GET", "/v1/event-kinds"),
        ("GET", "/metrics"),
        ("GET", "/v1/apps/{env}/{app}/logs"),
        ("GET", "/v1/drift"),
        ("GET", "/v1/apps/{env}/{app}/drift"),
        ("GET", "/v1/apps/{env}/{app}/secrets"),
        ("PUT", "/v1/apps/{env}/{app}/secrets/{name}"),
        ("DELETE", "/v1/apps/{env}/{app}/secrets/{name}"),
        ("POST", "/v1/secrets/rotate-key"),
        ("GET", "/v1/volumes"),
        ("GET", "/v1/apps/{env}/{app}/volumes"),
        ("GET", "/v1/apps/{env}/{app}/volumes/{name}"),
        ("DELETE", "/v1/apps/{env}/{app}/volumes/{name}"),
        ("POST", "/v1/apps/{env}/{app}/volumes/{name}/snapshots"),
        ("POST", "/v1/apps/{env}/{app}/volumes/{name}/restore"),
        ("GET", "/v1/schema"),
        ("POST", "/v1/shutdown"),
        ("POST", "/v1/tokens"),
        ("GET", "/v1/tokens"),
        ("DELETE", "/v1/tokens/{name}"),
        ("GET", "/v1/audit"),
        ("POST", "/v1/images/build"),
        ("GET", "/v1/images"),
        ("POST", "/v1/images/prune"),
    }
    assert set(operations) == expected
    assert all(op.get("summary") for op in operations.values())
    assert "AppStatusOut" in document["components"]["schemas"]
    assert "ErrorOut" in document["components"]["schemas"]


async def test_auth_header_is_accepted_case_insensitively_for_the_scheme(app: FastAPI) -> None:
    token = AUTH["Authorization"].split()[1]
    async with asgi_client(app, {"Authorization": f"bearer {token}"}) as lower:
        assert (await lower.get("/v1/apps")).status_code == 200
